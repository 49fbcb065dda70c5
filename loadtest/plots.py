"""PNG plots of a load test (matplotlib, Agg): the latency distributions (TTFT / ITL / E2E CDFs per load level),
latency percentiles and throughput against load (only with more than one level: one level is one point), and
load over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtest import metrics  # noqa: E402

PCTS = ("p50", "p95", "p99")
LABELS = {"ttft": "TTFT (time to first token)", "itl": "ITL (time per output token)", "e2e": "E2E latency"}


def _load_axis(summary: dict[str, Any]) -> tuple[list[float], str]:
    levels = summary["levels"]
    if summary["profile"] == "poisson":
        return [lv["offered_rate"] for lv in levels], "offered load (requests/s, Poisson arrivals)"
    return [lv["users"] for lv in levels], "concurrent users"


def latency_vs_load(summary: dict[str, Any], path: Path) -> Path:
    x, xlabel = _load_axis(summary)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key in zip(axes, ("ttft", "itl", "e2e"), strict=True):
        top = 0.0
        for pct, style in zip(PCTS, ("o-", "s--", "^:"), strict=True):
            y = [lv[f"{key}_ms"][pct] for lv in summary["levels"]]
            ax.plot(x, [float("nan") if v is None else v for v in y], style, label=pct)
            top = max([top, *(v for v in y if v is not None)])
        limit = summary["slo"]["thresholds"].get(f"{key}_p95_ms")
        title = LABELS[key]
        if limit is not None and limit <= 2 * top:
            ax.axhline(limit, color="red", lw=1, alpha=0.6, label="SLO (p95)")
        elif limit is not None:  # far above the data: say so instead of squashing the curves
            title += f"\nSLO p95 <= {limit:g} ms (off scale)"
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if len(set(x)) > 2 and min(x) > 0 and max(x) / min(x) >= 8:
            ax.set_xscale("log", base=2)
    fig.suptitle(f"{summary['model']} at {summary['host']}: latency vs load ({summary['profile']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput_vs_load(summary: dict[str, Any], path: Path) -> Path:
    x, xlabel = _load_axis(summary)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(x, [lv["output_tokens_per_s"] for lv in summary["levels"]], "o-", color="tab:blue",
            label="output tokens/s")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("output tokens/s", color="tab:blue")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(x, [lv["requests_per_s"] for lv in summary["levels"]], "s--", color="tab:orange", label="requests/s")
    ax2.plot(x, [lv["goodput"]["requests_per_s"] for lv in summary["levels"]], "^:", color="tab:green",
             label="goodput (requests/s in SLO)")
    ax2.set_ylabel("requests/s", color="tab:orange")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    sat = summary["slo"].get("saturation")
    if sat and sat.get("max_throughput_users") is not None:
        ax.axvline(sat["max_throughput_users"], color="grey", lw=1, ls="--")
    if len(set(x)) > 2 and min(x) > 0 and max(x) / min(x) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_title(f"throughput vs load ({summary['profile']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline(summary: dict[str, Any], records: list[dict], stages: list[dict], path: Path) -> Path:
    t_start, t_end = summary["started_at"], summary["ended_at"]
    bin_s = max(1.0, (t_end - t_start) / 60)
    rows = metrics.timeline(records, t_start, t_end, bin_s)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.plot(rows["t_s"], rows["output_tokens_per_s"], "-", label="output tokens/s")
    ax1.set_ylabel("output tokens/s")
    ax1.grid(alpha=0.3)
    users_ax = ax1.twinx()
    xs, ys = [], []
    for s in stages:
        xs += [s["start"] - t_start, s["end"] - t_start]
        ys += [s["users"], s["users"]]
    users_ax.plot(xs, ys, color="grey", lw=1, ls="--", label="users")
    users_ax.set_ylabel("users (in-flight cap for Poisson)")
    users_ax.set_ylim(0, max(ys, default=1) * 1.25 + 0.5)
    ax1.legend(loc="upper left", fontsize=8)
    for key, style in (("ttft_p50_ms", "-"), ("ttft_p95_ms", "--")):
        ax2.plot(rows["t_s"], [float("nan") if v is None else v for v in rows[key]], style,
                 label=key.replace("_ms", "").replace("_", " "))
    failed = [i for i, f in enumerate(rows["failed"]) if f]
    if failed:
        ax2.plot([rows["t_s"][i] for i in failed], [0] * len(failed), "rx", label="failures")
    ax2.set_ylabel("TTFT (ms)")
    ax2.set_xlabel(f"time since start (s), {bin_s:.1f} s bins, by request end")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"{summary['profile']} load over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_cdf(summary: dict[str, Any], records: list[dict], path: Path) -> Path:
    """Empirical CDFs of TTFT, ITL and E2E over the successful requests of each load level (its measured window,
    as in the summary), p50/p95 marked, the SLO's p95 limit drawn when it is on the scale."""
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    levels = summary["levels"]
    groups = []
    for lv in levels:
        w, t = lv.get("window_s"), summary.get("started_at", 0.0)
        recs = metrics.window(records, t + w[0], t + w[1]) if w else records
        label = f"{lv['offered_rate']} req/s" if summary["profile"] == "poisson" else f"{lv.get('users')} users"
        groups.append((label if len(levels) > 1 else f"{label}, {len(recs)} requests",
                       [r for r in recs if r.get("error") is None]))
    for ax, key in zip(axes, ("ttft", "itl", "e2e"), strict=True):
        for label, recs in groups:
            v = np.sort([r[key] * 1000.0 for r in recs if r.get(key) is not None])
            if len(v):
                ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label)
        limit = summary["slo"]["thresholds"].get(f"{key}_p95_ms")
        lo, hi = ax.get_xlim()
        if limit is not None and limit <= 2 * hi:
            ax.axvline(limit, color="red", lw=1, alpha=0.6, label="SLO p95 limit")
        for q in (0.5, 0.95):
            ax.axhline(q, color="grey", lw=0.6, ls=":")
        ax.set_ylim(0, 1.02)
        ax.set_title(LABELS[key])
        ax.set_xlabel("ms")
        ax.set_ylabel("share of requests ≤ x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary['model']} at {summary['host']}: latency distributions ({summary['profile']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(summary: dict[str, Any], records: list[dict], stages: list[dict], out: Path) -> list[str]:
    out = Path(out)
    files = [latency_cdf(summary, records, out / "latency_cdf.png")]
    if len(summary["levels"]) > 1:
        files += [latency_vs_load(summary, out / "latency_vs_load.png"),
                  throughput_vs_load(summary, out / "throughput_vs_load.png")]
    files.append(timeline(summary, records, stages, out / "timeline.png"))
    return [p.name for p in files]
