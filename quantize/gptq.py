"""GPTQ through Optimum's ``GPTQQuantizer`` with the GPTQModel backend (auto-gptq is archived and does not import
with transformers 5). The result is a standard ``gptq`` checkpoint: transformers loads it (with optimum and
gptqmodel installed), vLLM serves it on GPUs."""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from personagpt.device import DTYPES

# GPTQModel sizes its CPU worker pool from this; unset on a 2-core machine it asks for more workers than exist.
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, os.cpu_count() or 1)))


def save_dtype(name: str) -> torch.dtype:
    """Unquantized tensors (embeddings, norms, scales) are stored in float16 by default: what GPTQ kernels run in."""
    return torch.float16 if name == "auto" else DTYPES[name]


def logs_to_cache() -> None:
    """GPTQModel writes a per-run log file into ./logs of the working directory (``loop_processor._PROJECT_LOG_DIR``,
    its only setting): point it at the project cache instead, so no run leaves files in a checkout."""
    from gptqmodel.looper import loop_processor

    from personagpt.paths import cache_dir

    loop_processor._PROJECT_LOG_DIR = cache_dir() / "gptqmodel-logs"


def quantize_gptq(model_dir: Path, tokenizer, calib: list[list[int]], q, out: Path,
                  device: torch.device) -> dict[str, Any]:
    """Quantize ``model_dir`` with ``calib`` token ids and save the checkpoint into ``out``. Returns the manifest's
    ``quantization`` block."""
    from optimum.gptq import GPTQQuantizer

    logs_to_cache()

    from quantize.inputs import load_float_model

    work_dtype = torch.float16 if device.type == "cuda" else torch.float32  # CPU kernels want fp32
    model = load_float_model(model_dir, work_dtype, device)
    dataset = [{"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
               for ids in calib]
    quantizer = GPTQQuantizer(bits=q.bits, dataset=dataset, group_size=q.group_size, desc_act=q.desc_act, sym=q.sym,
                              damp_percent=q.damp_percent, model_seqlen=max(len(x) for x in calib),
                              pad_token_id=tokenizer.pad_token_id)
    quantizer.quantize_model(model, tokenizer)
    # The calibration tensors would otherwise be serialized into config.json.
    quantizer.dataset = None
    model.config.quantization_config["dataset"] = None
    # transformers refuses .to(dtype) on a GPTQ model: cast the unquantized parameters (embeddings, norms) one by
    # one. The quantized layers hold int32 packed weights and float16 scales already.
    dtype = save_dtype(q.dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.data = p.data.to(dtype)
    model.config.dtype = dtype
    # GPTQModel works in its internal gptq_v2 layout; save() converts the weights to v1 ("gptq"), the layout vLLM
    # and transformers load, and writes quantize_config.json.
    quantizer.save(model, str(out))
    # save() writes config.json before it switches its own format field to the converted one: make config.json
    # describe the weights that are actually on disk.
    qcfg = json.loads((out / "quantize_config.json").read_text())
    cfg_path = out / "config.json"
    hf = json.loads(cfg_path.read_text())
    hf["quantization_config"] = qcfg
    cfg_path.write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    del model
    return {
        "method": "gptq",
        "format": "gptq",
        "bits": q.bits,
        "group_size": q.group_size,
        "desc_act": q.desc_act,
        "sym": q.sym,
        "damp_percent": q.damp_percent,
        "weight_dtype": f"int{q.bits}",
        "unquantized_dtype": str(dtype).replace("torch.", ""),
        "quantized_modules": "every Linear in the decoder layers (embeddings and lm_head stay unquantized)",
        "checkpoint_format": qcfg.get("format"),
        "library": f"optimum {version('optimum')} + gptqmodel {version('gptqmodel')}",
    }
