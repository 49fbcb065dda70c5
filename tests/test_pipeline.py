"""`personagpt run`: the tiny preset end to end (real launcher, vLLM, Locust), skipping, reruns, failures.

One pipeline run per test session (fixtures/pipeline.py) in its own folder; the later tests reuse its artifacts."""

import json

import pytest

from fixtures.artifacts import TINY
from fixtures.pipeline import FAST, run, state
from personagpt.artifacts import read_manifest


@pytest.mark.slow
def test_end_to_end_artifacts_and_report(pipeline_run):
    _, run_dir, proc = pipeline_run
    st = state(run_dir)
    assert [s for s in st] == ["data", "train", "distill", "quantize", "promote", "eval", "loadtest"]
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
    # the quality gate chose what to serve, with the report's own figure, and the load test served exactly that
    promotion = json.loads((run_dir / "promotion" / "done.json").read_text())
    served = promotion["artifact"]
    assert served == ("quantized-int8" if promotion["student_quality_retained"] >= 0.8 else "quantized-teacher-int8")
    assert (run_dir / "promoted").resolve() == (run_dir / served).resolve()
    assert promotion["content_hash"] == read_manifest(run_dir / served)["content_hash"]
    summary = json.loads((run_dir / "loadtest" / served / "fixed" / "summary.json").read_text())
    level = summary["levels"][-1]
    assert level["output_tokens"] > 0 and level["failed"] == 0
    assert 0 < level["ttft_ms"]["p50"] < level["e2e_ms"]["p50"]
    answers = json.loads((run_dir / "loadtest" / served / "fixed" / "answers.json").read_text())
    assert len(answers) == 3  # the report's held-out questions, answered by the served model (EOS honoured)
    assert all(a.strip() for a in answers), answers  # no empty reply
    report = (run_dir / "report.md").read_text()
    who = promotion["promoted"]
    for must in ("| teacher |", "| student |", "| quantized (int8)", "the real persona", "student (HF generate)",
                 f"quantized {who} (vLLM)", "![", "## Stages", "(served) |"):
        assert must in report, must
    # the eval stage's table: one row per model of eval.models, and the real persona's (the ceiling)
    lines = report.splitlines()
    start = lines.index("## Persona fidelity (eval)")
    rows = [ln for ln in lines[start + 2:] if ln.startswith("| ")][1:]  # after the header
    rows = rows[:next(i for i, ln in enumerate(rows) if ln.startswith("| *real persona*")) + 1]
    assert [r.split(" | ")[0] for r in rows] == ["| teacher", "| student", "| quantized", "| *real persona*"], rows
    assert all("[" in r.split(" | ")[2] for r in rows[:3])  # hits@1 with its interval
    ev = json.loads((run_dir / "eval" / "quantized.json").read_text())
    assert ev["path"] == str(run_dir / "quantized-int8") and ev["hits_at_1"]["n"] == 10
    assert (run_dir / "eval" / "models.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plots = [ln for ln in report.splitlines() if ln.startswith("![")]
    assert any("train/loss_curve.png" in ln for ln in plots) and any("loadtest/" in ln for ln in plots)
    assert any("eval/models.png" in ln for ln in plots) and any("latency_cdf.png" in ln for ln in plots)
    assert all(ln.split("](")[1].split("/")[0] in ("train", "distill", "quantized-int8", "eval", "loadtest")
               for ln in plots)
    head = report.split("## Models")[0]
    assert ("Served: the quantized student" if who == "student" else "Quality gate failed") in head
    row = next(line for line in report.splitlines() if "(served) |" in line)
    assert row.count("—") == 0, row  # every column measured for the served model
    assert "report:" in proc.stdout
    # the one command that opens a chat with the model it served (make demo prints it)
    assert f"chat with the served model: personagpt chat --artifact runs/tiny/promoted --config {TINY}" in proc.stdout


@pytest.mark.slow
def test_rerun_skips_completed_stages(pipeline_run):
    cwd, run_dir, _ = pipeline_run
    before = {k: v["output_hash"] for k, v in state(run_dir).items()}
    proc = run(cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("skipped (up to date)") == 7, proc.stdout
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
    assert "[4/7] quantize  done" in proc.stdout
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
    assert "[7/7]" not in proc.stdout  # stopped: the load test did not run
    assert state(run_dir)["quantize"]["status"] == "failed"
    for n, h in hashes.items():
        assert read_manifest(run_dir / n)["content_hash"] == h, n
