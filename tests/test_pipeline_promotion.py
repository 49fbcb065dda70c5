"""The quality gate (personagpt/promotion.py): which model a run serves, from the report's own figure."""

from __future__ import annotations

import json

import pytest

from fixtures.pipeline import copy_run, run, state
from personagpt.artifacts import new_manifest, read_manifest, write_manifest
from personagpt.paths import RunLayout
from personagpt.pipeline.report import headline, model_rows
from personagpt.promotion import promote, student_quality


def _model(folder, **extra):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(folder.name.encode())
    m = new_manifest("model", "test", model={"num_parameters": 10, "weight_bytes": 40}, **extra)
    return write_manifest(folder, m)


def _run(tmp_path, distilled: float, before: float, after: float) -> RunLayout:
    lay = RunLayout(tmp_path / "runs" / "x")
    teacher = _model(lay.teacher, metrics={"val_ppl": 10.0})
    student = _model(lay.student, distillation={"quality_retained": distilled}, metrics={"val_ppl": 10 / distilled})
    q = _model(lay.quantized("int8"), metrics={"before": {"ppl": before}, "after": {"ppl": after}})
    assert read_manifest(lay.quantized("int8"))["content_hash"] == q["content_hash"] and teacher and student
    return lay


def _quantize_teacher(made):
    def make(out):
        made.append(out)
        _model(out, metrics={"before": {"ppl": 10.0}, "after": {"ppl": 10.1}})
        m = read_manifest(out)
        m["parents"] = {"model": {"content_hash": read_manifest(out.parent / "teacher")["content_hash"]}}
        write_manifest(out, m)
    return make


def test_the_figure_is_the_reports_chained_quality():
    assert student_quality({"distillation": {"quality_retained": 0.9}},
                           {"metrics": {"before": {"ppl": 20.0}, "after": {"ppl": 25.0}}}) == pytest.approx(0.72)
    assert student_quality({"distillation": {}}, {"metrics": {}}) is None


def test_a_student_that_passes_is_promoted(tmp_path):
    lay = _run(tmp_path, distilled=0.9, before=20.0, after=20.0)
    made = []
    rec = promote(lay, "int8", 0.8, _quantize_teacher(made), say=lambda s: None)
    assert made == [] and rec["promoted"] == "student" and rec["student_quality_retained"] == pytest.approx(0.9)
    assert lay.promoted.is_symlink() and lay.promoted.resolve() == lay.quantized("int8").resolve()
    assert json.loads((lay.promotion / "done.json").read_text()) == rec
    assert "Served: the quantized student" in headline(lay)[0] and "90.0%" in headline(lay)[0]


def test_a_student_below_the_gate_serves_the_quantized_teacher(tmp_path):
    lay = _run(tmp_path, distilled=0.9, before=20.0, after=30.0)  # 0.9 * 20/30 = 0.6
    made = []
    rec = promote(lay, "int8", 0.8, _quantize_teacher(made), say=lambda s: None)
    assert made == [lay.quantized_teacher("int8")]
    assert rec["promoted"] == "teacher" and rec["student_quality_retained"] == pytest.approx(0.6)
    assert rec["teacher_quality_retained"] == pytest.approx(10 / 10.1)
    assert lay.promoted.resolve() == lay.quantized_teacher("int8").resolve()
    line = headline(lay)[0]
    assert "Quality gate failed" in line and "60.0%" in line and "80%" in line and "99.0%" in line
    rows = {r["model"]: r for r in model_rows(lay, lay.quantized("int8"), "int8")}
    assert rows["quantized teacher (?)"]["promoted"] and not rows["quantized (?)"]["promoted"]
    # a resumed promotion keeps a quantized teacher made from the same teacher; a fresh one remakes it
    promote(lay, "int8", 0.8, _quantize_teacher(made), say=lambda s: None, reuse_teacher=True)
    assert len(made) == 1


@pytest.mark.slow
def test_the_pipeline_gate_quantizes_and_serves_the_teacher(pipeline_run, tmp_path):
    """The real promote stage (the real quantize/run.py on the teacher), forced to fail with a gate of 10x the
    teacher's quality (the tiny student can beat its teacher: 107% measured)."""
    cwd, run_dir = copy_run(pipeline_run, tmp_path, keep=("data", "teacher", "student", "quantized-int8"))
    proc = run(cwd, "pipeline.min_quality_retained=10", "--stages", "promote", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lay = RunLayout(run_dir)
    rec = json.loads((lay.promotion / "done.json").read_text())
    assert rec["promoted"] == "teacher" and rec["threshold"] == 10
    qt = read_manifest(lay.quantized_teacher("int8"))
    assert qt["parents"]["model"]["content_hash"] == read_manifest(lay.teacher)["content_hash"]
    assert lay.promoted.resolve() == lay.quantized_teacher("int8")
    assert state(run_dir)["promote"]["status"] == "done"
    assert "Quality gate failed" in (run_dir / "report.md").read_text().split("## Models")[0]
