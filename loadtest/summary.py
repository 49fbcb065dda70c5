"""``summary.json`` of a load test: overall and per-load-level metrics, the SLO verdict, and Locust's own numbers.

Overall: every request of the run (throughput over first start to last end). Per level (a step, a sweep level,
or the whole fixed/Poisson run): requests that ended inside the level after its warm-up. The SLO gate:
fixed/step/poisson: the overall numbers must meet every threshold; sweep: at least one level must (the sweep is
meant to push past saturation), and the highest such level is reported.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from loadtest import metrics
from loadtest.locust_names import CHAT_PATH, ITL_NAME, LLM_TYPE, TTFT_NAME


def locust_stats(csv_path: Path) -> dict[str, Any]:
    """The rows of Locust's ``*_stats.csv`` for our request names (Locust's own, rounded, aggregation)."""
    if not csv_path.is_file():
        return {}
    wanted = {("POST", CHAT_PATH): "e2e", (LLM_TYPE, TTFT_NAME): "ttft", (LLM_TYPE, ITL_NAME): "itl"}
    out = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            key = wanted.get((row.get("Type"), row.get("Name")))
            if key is None:
                continue

            def num(col, row=row):
                try:
                    return float(row[col])
                except (KeyError, TypeError, ValueError):
                    return None

            out[key] = {"requests": int(num("Request Count") or 0), "failures": int(num("Failure Count") or 0),
                        "mean_ms": num("Average Response Time"), "p50_ms": num("50%"), "p95_ms": num("95%"),
                        "p99_ms": num("99%"), "avg_size": num("Average Content Size"),
                        "requests_per_s": num("Requests/s")}
    return out


def stage_windows(plan: dict[str, Any], stages: list[dict]) -> list[tuple[dict, float, float]]:
    warmup = plan["sweep"]["warmup_s"] if plan["profile"] == "sweep" else 0.0
    out = []
    for s in stages:
        end = s["end"]
        if plan["profile"] == "sweep":  # the level's measured window, not the report lag after it
            end = min(end, s["start"] + plan["sweep"]["level_duration_s"])
        if end - s["start"] > warmup:
            out.append((s, s["start"] + warmup, end))
    return out


def build_summary(plan: dict[str, Any], records: list[dict], stages_info: dict[str, Any],
                  locust_csv: Path) -> dict[str, Any]:
    slo = plan["slo"]
    overall = metrics.summarize(records, slo)
    levels = []
    for s, t0, t1 in stage_windows(plan, stages_info["stages"]):
        m = metrics.summarize(metrics.window(records, t0, t1), slo, t0, t1)
        levels.append({"users": s["users"], "window_s": [round(t0 - stages_info["started_at"], 3),
                                                         round(t1 - stages_info["started_at"], 3)],
                       **m, "slo_violations": metrics.slo_violations(m, slo)})
    if plan["profile"] == "poisson":
        for lv in levels:
            lv["offered_rate"] = plan["poisson"]["rate"]
    verdict: dict[str, Any] = {"thresholds": slo}
    if plan["profile"] == "sweep":
        ok = [lv["users"] for lv in levels if not lv["slo_violations"]]
        verdict["max_users_meeting_slo"] = max(ok) if ok else None
        verdict["violations"] = [] if ok else ["no sweep level met the SLO: " + "; ".join(
            f"{lv['users']} users: {', '.join(lv['slo_violations'])}" for lv in levels)]
        sweep = stages_info.get("sweep") or {}
        best = max(levels, key=lambda lv: lv["output_tokens_per_s"], default=None)
        verdict["saturation"] = {"stop_reason": sweep.get("stop_reason"),
                                 "stopped_after_users": levels[-1]["users"] if levels else None,
                                 "max_throughput_users": best["users"] if best else None,
                                 "max_output_tokens_per_s": best["output_tokens_per_s"] if best else None}
    else:
        verdict["violations"] = metrics.slo_violations(overall, slo)
    verdict["passed"] = not verdict["violations"]
    return {
        "profile": plan["profile"],
        "host": plan["host"],
        "model": plan["model"],
        "load": _load_description(plan),
        "prompts": plan["prompt_stats"],
        "request": {"max_tokens": plan["max_tokens"], "ignore_eos": plan["ignore_eos"],
                    "temperature": plan["temperature"], "stream": True},
        **overall,
        "levels": levels,
        "slo": verdict,
        "locust": locust_stats(locust_csv),
        "started_at": stages_info["started_at"],
        "ended_at": stages_info["ended_at"],
        "workers": stages_info.get("workers"),
    }


def _load_description(plan: dict[str, Any]) -> dict[str, Any]:
    p = plan["profile"]
    if p == "fixed":
        return {"users": plan["users"], "duration_s": plan["duration_s"]}
    if p == "poisson":
        return {"rate": plan["poisson"]["rate"], "max_concurrency": plan["poisson"]["max_concurrency"],
                "duration_s": plan["duration_s"]}
    return {**plan[p], "run_s": plan["run_s"]}
