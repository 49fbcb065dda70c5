"""The eval stage: ``personagpt eval`` on the models of ``eval.models`` (the user's config and overrides passed
on unchanged), after the quantize stage and before the load test. Its results folder is ``runs/NAME/eval``
(``done.json`` marks it complete); report.md shows its table."""

from __future__ import annotations

from pathlib import Path

from personagpt.pipeline.context import PY, Ctx
from personagpt.pipeline.stage import Stage, run_command


class EvalStage(Stage):
    name = "eval"
    # model.source / model.path: what "base" is; pipeline.quantize_method: which artifact "quantized" is
    sections = ("eval", "model.source", "model.path", "pipeline.quantize_method")
    parents = ("data", "train", "distill", "quantize")

    def output(self, ctx: Ctx) -> Path:
        return ctx.layout.eval

    def run(self, ctx: Ctx, resume: bool, log: Path) -> None:
        run_command([PY, "-m", "personagpt.cli", "eval", *ctx.args(), "--run-dir", str(ctx.layout.root)], log)
