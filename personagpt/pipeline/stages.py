"""The stages of a run: what each one reads, which config sections define it, and the command that runs it —
exactly the command a user or a Kubernetes Job would type."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from personagpt.network import free_port
from personagpt.paths import ROOT, RunLayout

PY = sys.executable


def default_ranks() -> int:
    """Every GPU, or 2 ranks on a CPU-only machine (one OpenMP thread each)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return 2


def quantize_method(cfg) -> str:
    if cfg.pipeline.quantize_method != "auto":
        return cfg.pipeline.quantize_method
    try:
        import torch

        return "gptq" if torch.cuda.is_available() else "int8"
    except ImportError:  # pragma: no cover
        return "int8"


@dataclass
class Ctx:
    """What every command needs: the user's config file and overrides, and where the run lives."""

    config: Path
    overrides: list[str]
    cfg: object
    layout: RunLayout
    ranks: int

    @property
    def quantized(self) -> Path:
        """The quantized model artifact this run makes (quantized-METHOD, METHOD from pipeline.quantize_method)."""
        return self.layout.quantized(quantize_method(self.cfg))

    def model(self, name: str) -> Path:
        """A model artifact of this run by its name in ``pipeline.serve``: teacher, student or quantized."""
        return {"teacher": self.layout.teacher, "student": self.layout.student, "quantized": self.quantized}[name]


@dataclass
class Stage:
    name: str
    output: Callable[[Ctx], Path]    # the folder holding the stage's artifact (or results)
    sections: tuple[str, ...]        # config sections that define the stage (a change reruns it)
    parents: tuple[str, ...]         # upstream stages (a new upstream artifact reruns it)
    command: Callable[[Ctx, bool], list[str]] | None = None  # (ctx, resume) -> argv; None: run in-process


def _deepspeed(ctx: Ctx, script: str) -> list[str]:
    return [PY, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ctx.ranks), "--master_port", str(free_port()),
            str(ROOT / script)]


def _data(ctx: Ctx, resume: bool) -> list[str]:
    return [PY, "-m", "personagpt.cli", "data", "prepare", "--config", str(ctx.config), *ctx.overrides,
            "--out", str(ctx.layout.data)]


def _train(ctx: Ctx, resume: bool) -> list[str]:
    return [*_deepspeed(ctx, "train/run.py"), "--config", str(ctx.config), *ctx.overrides,
            f"train.dataset={ctx.layout.data}", f"train.work_dir={ctx.layout.work('train')}",
            f"train.output_dir={ctx.layout.teacher}", "--resume" if resume else "--fresh"]


def _distill(ctx: Ctx, resume: bool) -> list[str]:
    return [*_deepspeed(ctx, "distill/run.py"), "--config", str(ctx.config), *ctx.overrides,
            f"distill.teacher={ctx.layout.teacher}", f"distill.dataset={ctx.layout.data}",
            f"distill.work_dir={ctx.layout.work('distill')}", f"distill.output_dir={ctx.layout.student}",
            "--resume" if resume else "--fresh"]


def _quantize(ctx: Ctx, resume: bool) -> list[str]:
    return [PY, str(ROOT / "quantize" / "run.py"), "--config", str(ctx.config), *ctx.overrides,
            f"quantize.method={quantize_method(ctx.cfg)}", f"quantize.model={ctx.layout.student}",
            f"quantize.dataset={ctx.layout.data}", f"quantize.output_dir={ctx.quantized}"]


# Sections: every config key the stage's own command reads (an artifact's content hash does not capture e.g. the
# model architecture, which the dataset does not depend on but the teacher does).
STAGES: list[Stage] = [
    Stage("data", lambda ctx: ctx.layout.data, ("data", "model", "seed"), (), _data),
    Stage("train", lambda ctx: ctx.layout.teacher, ("train", "model", "data", "seed"), ("data",), _train),
    Stage("distill", lambda ctx: ctx.layout.student, ("distill", "data", "seed"), ("train", "data"), _distill),
    Stage("quantize", lambda ctx: ctx.quantized, ("quantize", "data", "seed", "pipeline.quantize_method"),
          ("distill", "data"), _quantize),
    # vLLM server + Locust for each model in pipeline.serve (serve/run.py and loadtest/run.py), in-process driver
    Stage("loadtest", lambda ctx: ctx.layout.loadtest_root, ("serve", "loadtest", "seed", "pipeline.serve", "pipeline.sample_questions",
                                   "pipeline.sample_max_tokens"), ("train", "distill", "quantize", "data")),
]


def env_for_children() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env
