"""Load profiles and distributed Locust against the session's real baseline server (Hugging Face generate, one
request at a time: it saturates at one user, which makes the sweep's stopping point known in advance)."""

from __future__ import annotations

import os
import subprocess
import sys

from fixtures.loadtest import ROOT, RUN, run_loadtest
from personagpt.network import free_port

# These tests are about load shapes, not latency targets (the SLO gate has its own tests): errors must stay at 0.
NO_LATENCY_SLO = ["loadtest.slo.ttft_p95_ms=null", "loadtest.slo.itl_p95_ms=null", "loadtest.slo.e2e_p95_ms=null",
                  "loadtest.slo.max_error_rate=0"]


def ok(run):
    assert run.proc.returncode == 0, run.explain()
    s = run.summary
    assert s["failed"] == 0 and s["completed"] > 0 and s["output_tokens"] == 24 * s["completed"]
    return s


def test_poisson_arrivals(baseline_server, tiny_dataset, tmp_path):
    """Open loop: arrivals at the target rate whatever the latency; each waits for a free in-flight slot."""
    run = run_loadtest(baseline_server.url, tmp_path / "p", "--profile", "poisson", "loadtest.poisson.rate=3",
                       "loadtest.poisson.max_concurrency=4", "loadtest.duration_s=8", *NO_LATENCY_SLO,
                       api_key=baseline_server.api_key, dataset=tiny_dataset)
    s = ok(run)
    assert s["load"] == {"rate": 3.0, "max_concurrency": 4, "duration_s": 8.0}
    assert 6 <= s["requests"] <= 50  # Poisson(24): far outside this only if the rate were wrong
    assert s["queue_delay_ms"]["p50"] is not None and all("queue" in r for r in run.records)
    assert len(s["levels"]) == 1 and s["levels"][0]["offered_rate"] == 3.0


def test_step_ramp(baseline_server, tiny_dataset, tmp_path):
    run = run_loadtest(baseline_server.url, tmp_path / "s", "--profile", "step", "loadtest.step.start_users=1",
                       "loadtest.step.step_users=2", "loadtest.step.max_users=3", "loadtest.step.step_duration_s=4",
                       *NO_LATENCY_SLO, api_key=baseline_server.api_key, dataset=tiny_dataset)
    s = ok(run)
    assert [lv["users"] for lv in s["levels"]] == [1, 3]
    assert all(lv["completed"] > 0 for lv in s["levels"])
    users_seen = {r["users"] for r in run.records}
    assert users_seen <= {1, 2, 3} and 3 in users_seen  # the runner really held 3 users in the second step
    # one request at a time: three users wait for each other, so the first token comes later
    assert s["levels"][1]["ttft_ms"]["p50"] > s["levels"][0]["ttft_ms"]["p50"]


def test_sweep_stops_at_saturation(baseline_server, tiny_dataset, tmp_path):
    """The baseline serves one request at a time: two users cannot double one user's tokens/s."""
    run = run_loadtest(baseline_server.url, tmp_path / "sw", "--profile", "sweep", "loadtest.sweep.levels=[1,2,4,8]",
                       "loadtest.sweep.level_duration_s=5", "loadtest.sweep.warmup_s=1",
                       "loadtest.sweep.min_gain=1.0", "loadtest.sweep.stop_on_slo=false", *NO_LATENCY_SLO,
                       api_key=baseline_server.api_key, dataset=tiny_dataset)
    s = ok(run)
    seen = [(lv["users"], lv["output_tokens_per_s"], lv["completed"]) for lv in s["levels"]]
    assert [lv["users"] for lv in s["levels"]] == [1, 2], seen
    sat = s["slo"]["saturation"]
    assert sat["stopped_after_users"] == 2 and sat["stop_reason"].startswith("saturated")
    assert s["slo"]["max_users_meeting_slo"] == 2 and s["slo"]["passed"]
    assert {"latency_cdf.png", "latency_vs_load.png", "throughput_vs_load.png", "timeline.png"} <= set(s["plots"])


def test_distributed_master_and_workers(baseline_server, tiny_dataset, tmp_path):
    """--master --expect-workers 2 and two --worker processes (the flags the Kubernetes Jobs use); the workers
    get the plan (prompts, settings) from the master and send their records back."""
    port = free_port()
    env = {**os.environ, "PERSONAGPT_API_KEY": baseline_server.api_key}
    workers = [subprocess.Popen([sys.executable, str(RUN), "--worker", "--master-host", "127.0.0.1",
                                 "--master-port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        run = run_loadtest(baseline_server.url, tmp_path / "d", "--master", "--expect-workers", "2",
                           "--expect-workers-max-wait", "60", "--master-bind-host", "127.0.0.1",
                           "--master-bind-port", str(port), "loadtest.users=4", "loadtest.duration_s=6",
                           *NO_LATENCY_SLO, api_key=baseline_server.api_key, dataset=tiny_dataset, timeout=240)
        codes = [w.wait(60) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    s = ok(run)
    assert codes == [0, 0], [w.stderr.read()[-2000:] for w in workers]
    assert len(s["workers"]) == 2
    assert len({r["worker"] for r in run.records}) == 2 and None not in {r["worker"] for r in run.records}
    assert s["locust"]["e2e"]["requests"] == s["completed"] == len(run.records)


