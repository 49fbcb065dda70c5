"""What every stage of a run gets: the user's config file and overrides (passed on to each stage's own entry
point unchanged), the validated config, the run folder's layout, and the number of training ranks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from personagpt.paths import RunLayout

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


def quantize_method(cfg, cpu=None) -> str:
    """``pipeline.quantize_method``; ``auto``: by the machine (``personagpt.hardware.auto_quantize_method``: GPTQ on
    GPUs, int8 W8A8 on CPUs). ``cpu``: a ``CpuCapability`` (tests inject flags). An explicit gptq on a CPU without
    AVX-512 is refused when it is served (serve/plan.py)."""
    if cfg.pipeline.quantize_method != "auto":
        return cfg.pipeline.quantize_method
    from personagpt.hardware import auto_quantize_method

    try:
        import torch

        device = "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        device = "cpu"
    return auto_quantize_method(device, cpu)


def env_for_children() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Ctx:
    config: Path
    overrides: list[str]
    cfg: object
    layout: RunLayout
    ranks: int
    on_start: Callable[[int], None] | None = None  # the runner records each process group a stage starts

    def started(self, pgid: int) -> None:
        if self.on_start is not None:
            self.on_start(pgid)

    def args(self) -> list[str]:
        """``--config FILE key=value ...``: how every stage entry receives the user's config."""
        return ["--config", str(self.config), *self.overrides]

    @property
    def quantized(self) -> Path:
        """The quantized model artifact this run makes (quantized-METHOD, METHOD from pipeline.quantize_method)."""
        return self.layout.quantized(quantize_method(self.cfg))
