"""Pick the device and dtype automatically: CUDA + bf16 where the GPU supports it, CPU + fp32 otherwise."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device() -> torch.device:
    if torch.cuda.is_available():
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def dtype(name: str = "auto", dev: torch.device | None = None) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, float32 elsewhere (CPU training is fp32)."""
    if name != "auto":
        return DTYPES[name]
    dev = dev or device()
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
