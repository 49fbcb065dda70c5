"""The CI load test against the real vLLM server of the session (tiny model): a 20-second headless Locust run, and
the SLO gate. Marked slow: the session's vLLM server takes 1-2 minutes to start on 2 cores."""

from __future__ import annotations

import csv

import pytest

from fixtures.loadtest import run_loadtest

pytestmark = pytest.mark.slow
MAX_TOKENS = 24


def test_headless_run_against_vllm(vllm_fixed_run):
    run, before, after = vllm_fixed_run
    assert run.proc.returncode == 0, run.explain()
    s, recs = run.summary, run.records
    assert s["failed"] == 0 and s["errors"] == {} and s["slo"]["passed"] is True
    assert s["completed"] == len(recs) >= 20
    # every answer is max_tokens long (ignore_eos): the count is the server's usage, not words in the text
    assert s["output_tokens"] == MAX_TOKENS * s["completed"] > 0
    assert all(r["out"] == MAX_TOKENS and r["finish"] == "length" and r["in"] > 0 for r in recs)
    assert s["ttft_ms"]["p50"] < s["e2e_ms"]["p50"] and s["ttft_ms"]["p95"] < s["e2e_ms"]["p95"]
    for r in recs:
        assert 0 < r["ttft"] < r["e2e"] and r["itl"] > 0 and r["t1"] > r["t0"]
        assert r["itl"] == pytest.approx((r["e2e"] - r["ttft"]) / (MAX_TOKENS - 1), rel=1e-9)
    assert 15 <= s["duration_s"] <= 32
    assert s["output_tokens_per_s"] == pytest.approx(s["output_tokens"] / s["duration_s"], rel=1e-3)
    assert s["requests_per_s"] == pytest.approx(s["completed"] / s["duration_s"], rel=1e-3)
    assert s["goodput"]["share"] == 1.0
    # vLLM's own counters moved by what we measured (+ the 2-token check request, + answers cut at the stop)
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    prompted = after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    assert s["output_tokens"] + 2 <= generated <= s["output_tokens"] + 2 + 4 * MAX_TOKENS
    assert prompted >= s["input_tokens"] == sum(r["in"] for r in recs)


def test_metrics_in_locusts_own_reports(vllm_fixed_run):
    """The custom request names reach Locust's stats: its CSV (same counts as our records) and HTML report."""
    run, _, _ = vllm_fixed_run
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(open(run.out / "locust_stats.csv"))}
    n = run.summary["completed"]
    assert int(rows[("POST", "/v1/chat/completions")]["Request Count"]) == n
    assert float(rows[("POST", "/v1/chat/completions")]["Average Content Size"]) == MAX_TOKENS
    assert int(rows[("LLM", "TTFT")]["Request Count"]) == n and int(rows[("LLM", "ITL")]["Request Count"]) == n
    ttft_median = float(rows[("LLM", "TTFT")]["Median Response Time"])
    assert ttft_median == pytest.approx(run.summary["ttft_ms"]["p50"], rel=0.15, abs=3)  # Locust rounds
    html = (run.out / "report.html").read_text()
    assert "TTFT" in html and "ITL" in html and "/v1/chat/completions" in html
    for png in run.summary["plots"]:
        assert (run.out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    manifest = json.loads((run.out / "manifest.json").read_text())
    assert manifest["kind"] == "loadtest" and manifest["parents"]["dataset"]["kind"] == "dataset"
    assert manifest["metrics"]["requests"] == n


def test_slo_gate_fails_for_impossible_thresholds(vllm_server, tiny_dataset, tmp_path):
    out = tmp_path / "gate"
    run = run_loadtest(vllm_server.url, out, "loadtest.users=2", "loadtest.duration_s=5",
                       "loadtest.slo.ttft_p95_ms=0.001", "loadtest.slo.itl_p95_ms=0.001",
                       "loadtest.slo.min_goodput=1", api_key=vllm_server.api_key, dataset=tiny_dataset)
    assert run.proc.returncode == 1, run.explain()
    s = run.summary  # the results are written all the same
    assert s["failed"] == 0 and s["completed"] > 0 and s["slo"]["passed"] is False
    v = " | ".join(s["slo"]["violations"])
    assert "ttft p95" in v and "itl p95" in v and "goodput 0.0000 < slo.min_goodput 1" in v
    assert "e2e" not in v  # e2e_p95_ms kept its reachable default
    assert "SLO violated: ttft p95" in run.proc.stderr
