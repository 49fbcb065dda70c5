"""The quality gate: which model a run serves.

A production pipeline does not promote a model that fails validation. The quantized student is promoted when it
keeps at least ``pipeline.min_quality_retained`` of the teacher's quality; otherwise the teacher is quantized with
the same method and served instead. Quality retained is the report's figure, computed here once:
teacher ppl / quantized-student ppl, chained over matched measurements (teacher vs student on the distill stage's
validation samples, times student vs quantized on the quantize stage's). For the quantized teacher it is its
input's ppl / its own, on the quantize stage's samples.

The decision is a results folder, ``runs/NAME/promotion/done.json`` (both figures, the gate, the chosen artifact
and its content hash), and the pointer ``runs/NAME/promoted``: a relative symlink to the chosen artifact folder,
replaced atomically. The pipeline's load test and the Kubernetes serving Deployment serve ``promoted``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from personagpt.artifacts import read_manifest
from personagpt.errors import ArtifactError
from personagpt.paths import ROOT, RunLayout


def quantize_command(config_args: list[str], method: str, model: Path, dataset: Path, out: Path) -> list[str]:
    """``python quantize/run.py`` of ``model`` into ``out``: what the pipeline and the promote Job run."""
    return [sys.executable, str(ROOT / "quantize" / "run.py"), *config_args, f"quantize.method={method}",
            f"quantize.model={model}", f"quantize.dataset={dataset}", f"quantize.output_dir={out}"]


def quantization_ratio(quantized: dict) -> float | None:
    """Input ppl / quantized ppl, both measured by the quantize stage on the same samples."""
    before, after = quantized.get("metrics", {}).get("before", {}), quantized.get("metrics", {}).get("after", {})
    return before["ppl"] / after["ppl"] if before.get("ppl") and after.get("ppl") else None


def student_quality(student: dict | None, quantized: dict | None) -> float | None:
    """The quantized student's quality retained vs the teacher (None when a figure is missing)."""
    distilled = ((student or {}).get("distillation") or {}).get("quality_retained")
    ratio = quantization_ratio(quantized) if quantized else None
    return distilled * ratio if distilled and ratio else None


def _artifact(path: Path, what: str) -> dict:
    try:
        return read_manifest(path, "model")
    except ArtifactError as e:
        raise ArtifactError(f"promotion needs the {what}: {e}") from None


def promote(layout: RunLayout, method: str, threshold: float, quantize_teacher: Callable[[Path], None],
            say: Callable[[str], None] = print, reuse_teacher: bool = False) -> dict:
    """Decide, write ``promotion/done.json`` and point ``promoted`` at the chosen artifact; returns the record.
    ``quantize_teacher(out)`` makes the quantized teacher at ``out`` (only called when the student fails the gate;
    with ``reuse_teacher`` a complete one made from the same teacher is kept)."""
    teacher = _artifact(layout.teacher, "teacher")
    student = _artifact(layout.student, "student")
    quantized = _artifact(layout.quantized(method), f"quantized student ({method})")
    retained = student_quality(student, quantized)
    if retained is None:
        raise ArtifactError(f"{layout.student} / {layout.quantized(method)}: no validation perplexity to gate on "
                            "(distillation.quality_retained and metrics.before/after.ppl)")
    record = {"threshold": threshold, "method": method, "student_quality_retained": retained,
              "student_passed": retained >= threshold}
    if record["student_passed"]:
        chosen = layout.quantized(method)
        say(f"quality gate passed: the quantized student keeps {retained:.1%} of the teacher's quality "
            f"(gate {threshold:.0%}); promoting {chosen.name}")
    else:
        chosen = layout.quantized_teacher(method)
        say(f"quality gate FAILED: the quantized student keeps {retained:.1%} of the teacher's quality "
            f"(gate {threshold:.0%}); quantizing the teacher ({method}) to serve it instead")
        if not (reuse_teacher and _made_from(chosen, teacher)):
            quantize_teacher(chosen)
        qt = _artifact(chosen, "quantized teacher")
        record["teacher_quality_retained"] = quantization_ratio(qt)
    record.update(promoted="student" if record["student_passed"] else "teacher", artifact=chosen.name,
                  content_hash=read_manifest(chosen)["content_hash"])
    _point(layout.promoted, chosen)
    layout.promotion.mkdir(parents=True, exist_ok=True)
    tmp = layout.promotion / f".done.json.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, layout.promotion / "done.json")
    return record


def read_promotion(layout: RunLayout) -> dict | None:
    path = layout.promotion / "done.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _made_from(artifact: Path, parent: dict) -> bool:
    try:
        m = read_manifest(artifact, "model")
    except ArtifactError:
        return False
    return m.get("parents", {}).get("model", {}).get("content_hash") == parent.get("content_hash")


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
