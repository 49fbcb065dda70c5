"""The promote stage: the quality gate between quantize and serving (personagpt/promotion.py). Its results folder
is ``runs/NAME/promotion``; the model it names, ``runs/NAME/promoted``, is what ``pipeline.serve: [promote]``
serves and load tests. When the quantized student fails the gate, this stage quantizes the teacher with
``quantize/run.py`` (the same command and method as the quantize stage) and promotes that instead."""

from __future__ import annotations

from pathlib import Path

from personagpt.pipeline.context import Ctx, quantize_method
from personagpt.pipeline.stage import Stage, run_command
from personagpt.promotion import promote, quantize_command


class PromoteStage(Stage):
    name = "promote"
    sections = ("pipeline.min_quality_retained", "pipeline.quantize_method", "quantize", "data", "seed")
    parents = ("train", "distill", "quantize", "data")
    model = "promoted"

    def output(self, ctx: Ctx) -> Path:
        return ctx.layout.promotion

    def model_artifact(self, ctx: Ctx) -> Path:
        return ctx.layout.promoted.resolve()

    def run(self, ctx: Ctx, resume: bool, log: Path) -> None:
        method, lay = quantize_method(ctx.cfg), ctx.layout

        def quantize_teacher(out: Path) -> None:
            run_command(quantize_command(ctx.args(), method, lay.teacher, lay.data, out), log,
                        grace=ctx.cfg.pipeline.stop_timeout_s, on_start=ctx.started)

        def say(line: str) -> None:
            with open(log, "a") as f:
                f.write(line + "\n")

        promote(lay, method, ctx.cfg.pipeline.min_quality_retained, quantize_teacher, say=say, reuse_teacher=resume)
