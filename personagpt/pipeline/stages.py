"""The stages of a run, in order, each with the command a user or a Kubernetes Job would type.

Sections: every config key the stage's own command reads (an artifact's content hash does not capture e.g. the
model architecture, which the dataset does not depend on but the teacher does).
"""

from __future__ import annotations

from personagpt.network import free_port
from personagpt.paths import ROOT
from personagpt.pipeline.context import PY, Ctx, quantize_method
from personagpt.pipeline.eval_stage import EvalStage
from personagpt.pipeline.loadtest_stage import LoadtestStage
from personagpt.pipeline.promote_stage import PromoteStage
from personagpt.pipeline.stage import CommandStage, Stage
from personagpt.promotion import quantize_command


def _deepspeed(ctx: Ctx, script: str) -> list[str]:
    return [PY, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ctx.ranks), "--master_port", str(free_port()),
            str(ROOT / script)]


def _data(ctx: Ctx) -> list[str]:
    return [PY, "-m", "personagpt.cli", "data", "prepare", *ctx.args(), "--out", str(ctx.layout.data)]


def _train(ctx: Ctx) -> list[str]:
    lay = ctx.layout
    return [*_deepspeed(ctx, "train/run.py"), *ctx.args(), f"train.dataset={lay.data}",
            f"train.work_dir={lay.work('train')}", f"train.output_dir={lay.teacher}"]


def _distill(ctx: Ctx) -> list[str]:
    lay = ctx.layout
    return [*_deepspeed(ctx, "distill/run.py"), *ctx.args(), f"distill.teacher={lay.teacher}",
            f"distill.dataset={lay.data}", f"distill.work_dir={lay.work('distill')}",
            f"distill.output_dir={lay.student}"]


def _quantize(ctx: Ctx) -> list[str]:
    return quantize_command(ctx.args(), quantize_method(ctx.cfg), ctx.layout.student, ctx.layout.data, ctx.quantized)


DATA = CommandStage("data", lambda ctx: ctx.layout.data, ("data", "model", "seed"), (), _data)
TRAIN = CommandStage("train", lambda ctx: ctx.layout.teacher, ("train", "model", "data", "seed"), ("data",), _train,
                     model="teacher", checkpoints=True)
DISTILL = CommandStage("distill", lambda ctx: ctx.layout.student, ("distill", "data", "seed"), ("train", "data"),
                       _distill, model="student", checkpoints=True)
QUANTIZE = CommandStage("quantize", lambda ctx: ctx.quantized, ("quantize", "data", "seed", "pipeline.quantize_method"),
                        ("distill", "data"), _quantize, model="quantized")
PROMOTE = PromoteStage()
# what pipeline.serve may name
MODEL_STAGES: dict[str, Stage] = {s.name: s for s in (TRAIN, DISTILL, QUANTIZE, PROMOTE)}
STAGES: list[Stage] = [DATA, TRAIN, DISTILL, QUANTIZE, PROMOTE, EvalStage(), LoadtestStage(MODEL_STAGES)]
