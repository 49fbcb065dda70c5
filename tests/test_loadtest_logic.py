"""Load-test logic without a server: SSE parsing and the metric definitions, percentiles/goodput/SLO verdicts,
the load profiles (step ramp, Poisson arrivals, saturation sweep), prompt selection from the real dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from loadtest import metrics
from loadtest.shapes import PoissonSchedule, SweepController, step_stages, step_users_at
from loadtest.stream import StreamParser

SLO = {"ttft_p95_ms": 100.0, "itl_p95_ms": 10.0, "e2e_p95_ms": 1000.0, "max_error_rate": 0.0, "min_goodput": None,
       "min_output_tokens_per_s": None}


def sse(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n"


def chunk(content=None, finish=None, role=False):
    delta = {"role": "assistant", "content": ""} if role else ({} if content is None else {"content": content})
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_parser_measures_like_vllm_bench():
    """TTFT at the first chunk with text (not the role chunk), E2E at [DONE], output tokens from usage (the text
    below has 3 words but the server says 7 tokens), ITL = (E2E - TTFT) / (tokens - 1)."""
    p = StreamParser(start=10.0)
    assert not p.feed(sse(chunk(role=True)), 10.05)
    assert not p.feed(b"\n", 10.06)
    assert not p.feed(b": keep-alive\n", 10.07)
    assert not p.feed(sse(chunk("Hel")), 10.10)
    assert not p.feed(sse(chunk("lo there")), 10.20)
    assert not p.feed(sse(chunk(" friend", finish="length")), 10.40)
    assert not p.feed(sse({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7}}), 10.41)
    assert p.feed(sse(b"[DONE]"), 10.42)
    p.close(10.43)
    m = p.metrics()
    assert m["error"] is None
    assert m["ttft"] == pytest.approx(0.10) and m["e2e"] == pytest.approx(0.42)
    assert m["out"] == 7 and m["in"] == 12 and m["chunks"] == 3 and m["finish_reason"] == "length"
    assert m["itl"] == pytest.approx((0.42 - 0.10) / 6)


def test_stream_parser_counts_with_the_tokenizer_only_without_usage():
    p = StreamParser(start=0.0)
    p.feed(sse(chunk("a b c")), 0.1)
    p.feed(sse(b"[DONE]"), 0.2)
    p.close(0.2)
    assert p.metrics()["error"] is not None  # no usage, no tokenizer: an error, never a whitespace count
    m = p.metrics(count_tokens=lambda text: 11)
    assert m["error"] is None and m["out"] == 11


def test_stream_parser_tokens_without_text():
    """A model that only emits special tokens (skipped by the server) under ignore_eos: vLLM streams one empty
    chunk per token and reports them in usage. That is output (TTFT at the first such chunk), not a failure; the
    same stream without usage tokens is one."""
    lines = [(sse(chunk(role=True)), 0.30), (sse(chunk("")), 0.31), (sse(chunk("")), 0.40),
             (sse(chunk("", finish="length")), 0.50)]
    p = StreamParser(start=0.0)
    for line, t in lines + [(sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}), 0.51),
                            (sse(b"[DONE]"), 0.52)]:
        p.feed(line, t)
    p.close(0.53)
    m = p.metrics()
    assert m["error"] is None and m["out"] == 3 and m["ttft"] == pytest.approx(0.31)
    assert m["itl"] == pytest.approx((0.52 - 0.31) / 2)
    p = StreamParser(start=0.0)
    for line, t in lines + [(sse(b"[DONE]"), 0.52)]:
        p.feed(line, t)
    p.close(0.53)
    assert "without generating any text" in p.metrics(lambda t: 0)["error"]


@pytest.mark.parametrize("lines, error", [
    ([sse({"error": {"message": "engine dead", "code": 500}})], "engine dead"),
    ([sse(chunk("x"))], "without [DONE]"),
    ([sse(chunk(role=True)), sse(b"[DONE]")], "without generating any text"),
    ([b"data: {not json\n"], "invalid JSON"),
])
def test_stream_parser_errors(lines, error):
    p = StreamParser(start=0.0)
    for i, line in enumerate(lines):
        if p.feed(line, 0.1 * (i + 1)):
            break
    p.close(1.0)
    assert error in p.metrics(lambda t: 1)["error"]


def records(n, ttft, e2e, itl, out=16, t0=0.0, gap=0.1, error_every=None):
    recs = []
    for i in range(n):
        err = "HTTP 500: boom" if error_every and i % error_every == 0 else None
        recs.append({"t0": t0 + i * gap, "t1": t0 + i * gap + e2e[i % len(e2e)], "ttft": ttft[i % len(ttft)],
                     "e2e": e2e[i % len(e2e)], "itl": itl[i % len(itl)], "out": out, "in": 30, "error": err})
    return recs


def test_summary_percentiles_throughput_goodput():
    rng = np.random.default_rng(0)
    ttft = list(rng.uniform(0.01, 0.2, 200))
    recs = records(200, ttft, [0.5], [0.005, 0.02], out=16)
    s = metrics.summarize(recs, SLO)
    assert s["requests"] == s["completed"] == 200 and s["failed"] == 0
    assert s["ttft_ms"]["p95"] == pytest.approx(np.percentile(np.array(ttft) * 1000, 95), abs=1e-3)
    assert s["ttft_ms"]["p50"] < s["ttft_ms"]["p95"] < s["ttft_ms"]["p99"] <= s["ttft_ms"]["max"]
    duration = (199 * 0.1 + 0.5)
    assert s["duration_s"] == pytest.approx(duration, abs=1e-3)
    assert s["output_tokens"] == 3200 and s["output_tokens_per_s"] == pytest.approx(3200 / duration, rel=1e-3)
    # goodput: TTFT <= 100 ms and ITL <= 10 ms (every other request has 20 ms ITL)
    expected = sum(1 for i, t in enumerate(ttft) if t <= 0.1 and i % 2 == 0)
    assert s["goodput"]["requests"] == expected and s["goodput"]["share"] == pytest.approx(expected / 200, abs=1e-6)
    v = metrics.slo_violations(s, SLO)
    assert any(x.startswith("ttft p95") for x in v) and any(x.startswith("itl p95") for x in v)
    assert not any(x.startswith("e2e") for x in v)


def test_summary_errors_and_slo_gate():
    recs = records(50, [0.01], [0.1], [0.001], error_every=10)
    s = metrics.summarize(recs, SLO)
    assert s["failed"] == 5 and s["error_rate"] == pytest.approx(0.1)
    assert s["errors"] == {"HTTP 500: boom": 5}
    assert metrics.slo_violations(s, SLO) == [
        "error rate 0.1000 (5 of 50) > slo.max_error_rate 0"]
    assert metrics.slo_violations(s, {**SLO, "max_error_rate": 0.2}) == []
    assert metrics.slo_violations(metrics.summarize([], SLO), SLO) == ["no request completed"]


def test_step_stages():
    stages = step_stages(1, 3, 8, 10.0)
    assert [s["users"] for s in stages] == [1, 4, 7, 8]
    assert step_users_at(stages, 0) == 1 and step_users_at(stages, 19.9) == 4 and step_users_at(stages, 39.9) == 8
    assert step_users_at(stages, 40.0) is None


def test_poisson_schedule_is_poisson():
    """Exponential gaps at the target rate: mean gap 1/rate, coefficient of variation 1, count ~ rate x T."""
    s = PoissonSchedule(rate=5.0, start=100.0, duration=400.0, seed=3)
    times = []
    while (t := s.next()) is not None:
        times.append(t)
    gaps = np.diff([100.0] + times)
    assert abs(len(times) - 2000) < 4 * math.sqrt(2000)
    assert gaps.mean() == pytest.approx(0.2, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.06)
    assert times[-1] <= 500.0
    capped = PoissonSchedule(rate=5.0, start=0.0, duration=400.0, seed=3, limit=7)
    assert sum(1 for _ in iter(capped.next, None)) == 7


def _level_records(start, users, tokens_per_s, ttft=0.05, n=20, dur=10.0):
    """n requests ending inside the level's window, carrying tokens_per_s x window output tokens in total."""
    per = tokens_per_s * (dur - 1.0) / n
    return [{"t0": start + 1.0 + i * (dur - 1.5) / n, "t1": start + 1.5 + i * (dur - 1.5) / n, "ttft": ttft,
             "e2e": 0.5, "itl": 0.005, "out": per, "in": 20, "error": None, "users": users} for i in range(n)]


def test_sweep_stops_where_throughput_stops_growing():
    recs: list[dict] = []
    c = SweepController([1, 2, 4, 8, 16], 10.0, 1.0, 0.1, True, SLO, lambda: recs)
    throughput = {1: 100.0, 2: 190.0, 4: 350.0, 8: 370.0, 16: 380.0}
    now, seen = 0.0, []
    while True:
        users = c.tick(now)
        if users is None:
            break
        if not seen or seen[-1] != users:
            seen.append(users)
            recs.extend(_level_records(now, users, throughput[users]))
        now += 1.0
        assert now < 200
    assert seen == [1, 2, 4, 8]  # 8 users gave < 1.1 x the best so far: saturated there
    assert c.stop_reason.startswith("saturated")
    assert [r["output_tokens_per_s"] for r in c.results] == pytest.approx([100, 190, 350, 370], rel=0.02)


def test_sweep_stops_at_slo_break():
    recs: list[dict] = []
    c = SweepController([1, 2, 4], 10.0, 1.0, 0.1, True, SLO, lambda: recs)
    now, seen = 0.0, []
    while (users := c.tick(now)) is not None:
        if not seen or seen[-1] != users:
            seen.append(users)
            recs.extend(_level_records(now, users, 100.0 * users, ttft=0.05 if users == 1 else 0.5))
        now += 1.0
    assert seen == [1, 2] and c.stop_reason.startswith("SLO broken: ttft p95")


def test_prompts_from_held_out_split(tiny_dataset):
    """Real test-split conversations, fitted to the input budget with the dataset's own tokenizer and template."""
    from loadtest.prompts import build_prompts
    from personagpt.data.prepare import read_split
    from personagpt.tokenizer import load_tokenizer

    prompts, stats = build_prompts(tiny_dataset, "test", None, 64, 8, 96, seed=0)
    test_ids = {s["id"] for s in read_split(tiny_dataset, "test")}
    train_ids = {s["id"] for s in read_split(tiny_dataset, "train")}
    tok = load_tokenizer(tiny_dataset / "tokenizer")
    assert len(prompts) == stats["prompts"] == 64
    for p in prompts:
        assert p["id"] in test_ids and p["id"] not in train_ids
        assert p["messages"][0]["role"] == "user" and p["messages"][-1]["role"] == "user"
        n = len(tok.apply_chat_template(p["messages"], tokenize=True, add_generation_prompt=True,
                                        return_dict=True)["input_ids"])
        assert n == p["input_tokens"] and 8 <= n <= 96
    assert stats["input_tokens_max"] <= 96 and len({p["id"] for p in prompts}) == 64
    again, _ = build_prompts(tiny_dataset, "test", None, 64, 8, 96, seed=0)
    assert again == prompts  # deterministic for a seed


def _plot_summary(recs, levels):
    return {"profile": "fixed" if len(levels) == 1 else "sweep", "model": "m", "host": "h", "started_at": 0.0,
            "ended_at": max(r["t1"] for r in recs), "slo": {"thresholds": SLO, "saturation": None},
            "levels": [{"users": u, "window_s": w, **metrics.summarize(metrics.window(recs, *w), SLO, *w)}
                       for u, w in levels]}


def test_one_level_draws_latency_distributions_not_a_one_point_chart(tmp_path):
    from loadtest import plots

    rng = np.random.default_rng(0)
    recs = records(120, list(rng.uniform(0.01, 0.2, 120)), list(rng.uniform(0.3, 0.9, 120)), [0.004, 0.008])
    one = _plot_summary(recs, [(4, [0.0, 30.0])])
    assert plots.write_all(one, recs, [{"start": 0.0, "end": 30.0, "users": 4}], tmp_path) == [
        "latency_cdf.png", "timeline.png"]
    assert (tmp_path / "latency_cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two = _plot_summary(recs, [(1, [0.0, 6.0]), (2, [6.0, 13.0])])
    assert plots.write_all(two, recs, [{"start": 0.0, "end": 6.0, "users": 1}, {"start": 6.0, "end": 13.0,
                                                                                 "users": 2}], tmp_path) == [
        "latency_cdf.png", "latency_vs_load.png", "throughput_vs_load.png", "timeline.png"]
