"""Per-request records -> latency percentiles, throughput, error rate, goodput, SLO verdicts.

A record (one request, written by the Locust users): ``t0``/``t1`` wall-clock start/end (s), ``ttft``, ``e2e``,
``itl`` (s; None when not measured), ``out`` output tokens, ``in`` prompt tokens, ``error`` (None when ok),
``queue`` (s the request waited for a free user after its Poisson arrival; open-loop profile only).
Percentiles are exact (numpy, linear interpolation) over the records, unlike Locust's rounded histogram.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
LATENCIES = ("ttft", "itl", "e2e")


def dist_ms(values: Sequence[float]) -> dict[str, float | None]:
    """mean/min/max and percentiles in milliseconds of values in seconds."""
    keys = ["mean", "min", "max", *(f"p{p}" for p in PERCENTILES)]
    if not len(values):
        return {k: None for k in keys}
    a = np.asarray(values, dtype=float) * 1000.0
    out = {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    return {k: round(v, 3) for k, v in out.items()}


def meets_slo(rec: dict[str, Any], slo: dict[str, Any]) -> bool:
    """A request counts for goodput when it succeeded and each of its latencies is within the SLO limit."""
    if rec.get("error") is not None:
        return False
    for key in LATENCIES:
        limit = slo.get(f"{key}_p95_ms")
        if limit is None:
            continue
        v = rec.get(key)
        if key == "itl" and v is None and rec.get("out", 0) <= 1:
            continue  # a one-token answer has no time per output token
        if v is None or v * 1000.0 > limit:
            return False
    return True


def summarize(records: Iterable[dict[str, Any]], slo: dict[str, Any], t_start: float | None = None,
              t_end: float | None = None) -> dict[str, Any]:
    """Aggregate metrics of ``records``. Throughput is over ``t_end - t_start`` (default: first start to last
    end, as vLLM's benchmark measures its duration)."""
    recs = list(records)
    ok = [r for r in recs if r.get("error") is None]
    failed = len(recs) - len(ok)
    if t_start is None:
        t_start = min((r["t0"] for r in recs), default=0.0)
    if t_end is None:
        t_end = max((r["t1"] for r in recs), default=t_start)
    duration = max(t_end - t_start, 1e-9)
    out_tokens = int(sum(r.get("out") or 0 for r in ok))
    in_tokens = int(sum(r.get("in") or 0 for r in ok))
    good = sum(1 for r in recs if meets_slo(r, slo))
    errors: dict[str, int] = {}
    for r in recs:
        if r.get("error") is not None:
            msg = str(r["error"])[:160]
            errors[msg] = errors.get(msg, 0) + 1
    summary = {
        "requests": len(recs),
        "completed": len(ok),
        "failed": failed,
        "error_rate": round(failed / len(recs), 6) if recs else 0.0,
        "duration_s": round(duration, 3),
        "requests_per_s": round(len(ok) / duration, 4),
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / duration, 3),
        "input_tokens": in_tokens,
        "output_tokens_per_request": round(out_tokens / len(ok), 2) if ok else None,
        "ttft_ms": dist_ms([r["ttft"] for r in ok if r.get("ttft") is not None]),
        "itl_ms": dist_ms([r["itl"] for r in ok if r.get("itl") is not None]),
        "e2e_ms": dist_ms([r["e2e"] for r in ok if r.get("e2e") is not None]),
        "goodput": {"share": round(good / len(recs), 6) if recs else 0.0, "requests": good,
                    "requests_per_s": round(good / duration, 4)},
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:10]),
    }
    queue = [r["queue"] for r in recs if r.get("queue") is not None]
    if queue:
        summary["queue_delay_ms"] = dist_ms(queue)
    return summary


def window(records: Iterable[dict[str, Any]], t0: float, t1: float) -> list[dict[str, Any]]:
    """Requests that ended in [t0, t1): the steady-state sample of one load level."""
    return [r for r in records if t0 <= r["t1"] < t1]


def slo_violations(summary: dict[str, Any], slo: dict[str, Any]) -> list[str]:
    """Human-readable list of the SLO checks ``summary`` fails (empty: all met)."""
    out = []
    if summary["completed"] == 0:
        out.append("no request completed")
    for key in LATENCIES:
        limit = slo.get(f"{key}_p95_ms")
        p95 = summary[f"{key}_ms"]["p95"]
        if limit is not None and p95 is not None and p95 > limit:
            out.append(f"{key} p95 {p95:.1f} ms > slo.{key}_p95_ms {limit:g} ms")
    if summary["error_rate"] > slo.get("max_error_rate", 0.0):
        out.append(f"error rate {summary['error_rate']:.4f} ({summary['failed']} of {summary['requests']}) > "
                   f"slo.max_error_rate {slo['max_error_rate']:g}")
    if slo.get("min_goodput") is not None and summary["goodput"]["share"] < slo["min_goodput"]:
        out.append(f"goodput {summary['goodput']['share']:.4f} < slo.min_goodput {slo['min_goodput']:g}")
    if slo.get("min_output_tokens_per_s") is not None and \
            summary["output_tokens_per_s"] < slo["min_output_tokens_per_s"]:
        out.append(f"output tokens/s {summary['output_tokens_per_s']:.1f} < slo.min_output_tokens_per_s "
                   f"{slo['min_output_tokens_per_s']:g}")
    return out


def timeline(records: Sequence[dict[str, Any]], t_start: float, t_end: float, bin_s: float) -> dict[str, list]:
    """Per time bin: output tokens/s and completed requests/s (by end time), TTFT p50/p95 (ms), failures."""
    n = max(1, int(np.ceil((t_end - t_start) / bin_s)))
    edges = [t_start + i * bin_s for i in range(n + 1)]
    rows: dict[str, list] = {"t_s": [], "output_tokens_per_s": [], "requests_per_s": [], "ttft_p50_ms": [],
                             "ttft_p95_ms": [], "failed": []}
    for a, b in zip(edges, edges[1:], strict=False):
        w = window(records, a, b)
        ok = [r for r in w if r.get("error") is None]
        ttft = [r["ttft"] for r in ok if r.get("ttft") is not None]
        rows["t_s"].append(round(a - t_start + bin_s / 2, 3))
        rows["output_tokens_per_s"].append(sum(r.get("out") or 0 for r in ok) / bin_s)
        rows["requests_per_s"].append(len(ok) / bin_s)
        rows["ttft_p50_ms"].append(float(np.percentile(ttft, 50) * 1000) if ttft else None)
        rows["ttft_p95_ms"].append(float(np.percentile(ttft, 95) * 1000) if ttft else None)
        rows["failed"].append(len(w) - len(ok))
    return rows
