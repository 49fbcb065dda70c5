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

IGNORE = ["lm_head"]  # the (usually tied) output projection stays in float, as in vLLM's W8A8 recipes


def quantize_int8(model_dir: Path, tokenizer, calib: list[list[int]], q, out: Path,
                  device: torch.device) -> dict[str, Any]:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    from quantize.inputs import load_float_model

    dtype = torch.float32 if q.dtype == "auto" else DTYPES[q.dtype]
    model = load_float_model(model_dir, dtype, device)
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
