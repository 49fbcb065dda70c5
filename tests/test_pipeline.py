"""`personagpt run`: the tiny preset end to end (real launcher, vLLM, Locust), skipping, reruns, failures.

One pipeline run per test session (module fixture) in its own folder; the later tests reuse its artifacts."""

import json
import os
import subprocess
import sys

import pytest

from fixtures.artifacts import ROOT, TINY
from personagpt.artifacts import read_manifest
from personagpt.paths import RunLayout

# Small but real: every stage runs its real entry point; Locust runs 15 s against vLLM.
FAST = ["train.max_steps=30", "train.lr=3e-3", "train.micro_batch_size=8", "train.global_batch_size=16",
        "train.eval_every=15", "train.save_every=15", "train.eval_samples=64", "distill.max_steps=20",
        "distill.eval_every=10", "distill.save_every=10", "distill.eval_samples=64", "loadtest.duration_s=15",
        "loadtest.users=2", "loadtest.max_tokens=16", "data.max_conversations=120"]


def run(cwd, *args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "personagpt.cli", "run", "--config", str(TINY), *FAST, *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def state(run_dir):
    return json.loads((run_dir / "pipeline.json").read_text())


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("pipeline")
    proc = run(cwd)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return cwd, RunLayout.of("tiny", cwd).root, proc


@pytest.mark.slow
def test_end_to_end_artifacts_and_report(pipeline_run):
    _, run_dir, proc = pipeline_run
    st = state(run_dir)
    assert [s for s in st] == ["data", "train", "distill", "quantize", "loadtest"]
    assert all(v["status"] == "done" for v in st.values())
    teacher, student, quant = (read_manifest(run_dir / n) for n in ("teacher", "student", "quantized-int8"))
    assert teacher["world_size"] == 2 and student["world_size"] == 2  # the DeepSpeed launcher with 2 ranks
    assert student["parents"]["teacher"]["content_hash"] == teacher["content_hash"]
    # the default angular layer selection, measured on rank 0 and shared with rank 1: the block it dropped is the
    # one with the smallest measured distance, and the student holds exactly the other layers
    sel = student["distillation"]["student"]["layer_selection"]
    lo, hi = sel["dropped"]
    assert sel["method"] == "angular" and sel["angular_distance"] == min(sel["angular_distance_by_start"])
    assert student["distillation"]["student"]["keep_layers"] == [i for i in range(4) if not lo <= i <= hi]
    assert 3 in student["distillation"]["student"]["keep_layers"]
    assert quant["parents"]["model"]["content_hash"] == student["content_hash"]
    assert quant["model"]["quantization"]["method"] == "int8"
    summary = json.loads((run_dir / "loadtest" / "quantized-int8" / "fixed" / "summary.json").read_text())
    level = summary["levels"][-1]
    assert level["output_tokens"] > 0 and level["failed"] == 0
    assert 0 < level["ttft_ms"]["p50"] < level["e2e_ms"]["p50"]
    answers = json.loads((run_dir / "loadtest" / "quantized-int8" / "fixed" / "answers.json").read_text())
    assert len(answers) == 3  # the report's held-out questions, answered by the served model
    report = (run_dir / "report.md").read_text()
    for must in ("| teacher |", "| student |", "| quantized (int8) |", "the real persona", "student (HF generate)",
                 "quantized (vLLM)", "![", "## Stages"):
        assert must in report, must
    plots = [ln for ln in report.splitlines() if ln.startswith("![")]
    assert any("train/loss_curve.png" in ln for ln in plots) and any("loadtest/" in ln for ln in plots)
    assert all(ln.split("](")[1].split("/")[0] in ("train", "distill", "quantized-int8", "loadtest") for ln in plots)
    row = next(line for line in report.splitlines() if line.startswith("| quantized"))
    assert row.count("—") == 0, row  # every column measured for the served model
    assert "report:" in proc.stdout
    # the one command that opens a chat with the model it served (make demo prints it)
    assert f"chat with the served model: personagpt chat --artifact runs/tiny/quantized-int8 --config {TINY}" \
        in proc.stdout


@pytest.mark.slow
def test_rerun_skips_completed_stages(pipeline_run):
    cwd, run_dir, _ = pipeline_run
    before = {k: v["output_hash"] for k, v in state(run_dir).items()}
    proc = run(cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("skipped (up to date)") == 5, proc.stdout
    assert {k: v["output_hash"] for k, v in state(run_dir).items()} == before


@pytest.mark.slow
def test_changed_key_reruns_that_stage_and_downstream(pipeline_run):
    cwd, run_dir, _ = pipeline_run
    before = state(run_dir)
    proc = run(cwd, "quantize.n_calibration=48", "--stages", "data,train,distill,quantize", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = state(run_dir)
    for s in ("data", "train", "distill"):
        assert after[s] == before[s], s
    assert after["quantize"]["fingerprint"] != before["quantize"]["fingerprint"]
    assert "[4/5] quantize  done" in proc.stdout
    # downstream: the load test's input changed, so it is stale now
    from personagpt.config import load_config
    from personagpt.paths import RunLayout
    from personagpt.pipeline.context import Ctx
    from personagpt.pipeline.runner import fingerprint
    from personagpt.pipeline.stages import STAGES

    cfg = load_config(TINY, [*FAST, "quantize.n_calibration=48"])
    ctx = Ctx(TINY, FAST, cfg, RunLayout(run_dir), 2)
    assert fingerprint(STAGES[-1], ctx, after) != after["loadtest"]["fingerprint"]


@pytest.mark.slow
def test_failing_stage_stops_and_keeps_earlier_artifacts(pipeline_run):
    cwd, run_dir, _ = pipeline_run
    hashes = {n: read_manifest(run_dir / n)["content_hash"] for n in ("data", "teacher", "student", "quantized-int8")}
    # GPTQ with a group size that does not divide the tiny model's hidden size 64: the quantize stage itself fails
    proc = run(cwd, "pipeline.quantize_method=gptq", "quantize.group_size=48", "--stages", "quantize,loadtest",
               timeout=600)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "quantize" in out and "group_size" in out  # the stage's own error, with its log tail
    assert "[5/5]" not in proc.stdout  # stopped: the load test did not run
    assert state(run_dir)["quantize"]["status"] == "failed"
    for n, h in hashes.items():
        assert read_manifest(run_dir / n)["content_hash"] == h, n
