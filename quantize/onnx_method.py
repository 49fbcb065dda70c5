"""The ``onnx`` method: export with KV cache, check that ONNX Runtime fp32 decodes exactly like torch, then quantize
(blockwise MatMulNBits by default). The artifact holds ``model.onnx`` (quantized, or fp32 with
``quantize.onnx.quantize=false``) next to the input's
config, tokenizer, chat template and generation config."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from personagpt.evaluate import collate
from personagpt.models import eos_token_ids
from personagpt.template import prompt_messages
from quantize.compare import log
from quantize.onnx_export import EXTERNAL_DATA, ONNX_FILE, export_onnx, quantize_onnx_weights
from quantize.ort_model import OrtCausalLM

FP32_DIR = "onnx-fp32"


@torch.no_grad()
def torch_greedy(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers' own greedy generate, one prompt at a time, stopping at the turn's end."""
    outs = []
    for p in prompts:
        ids = torch.tensor([p])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos_token_ids(tokenizer),
                             pad_token_id=tokenizer.pad_token_id)
        outs.append(gen[0, len(p):].tolist())
    return outs


def check_against_torch(model, tokenizer, ort_fp32: OrtCausalLM, samples: Sequence[dict], encoded: Sequence[dict],
                        n_prompts: int, n_tokens: int, batch_size: int) -> dict[str, Any]:
    """Greedy texts of torch and ORT fp32 on the first ``n_prompts`` validation prompts, and the largest logit
    difference on one evaluation batch."""
    prompts = [tokenizer.apply_chat_template(prompt_messages(s["messages"]), tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"] for s in samples[:n_prompts]]
    ref = torch_greedy(model, tokenizer, prompts, n_tokens)
    got = [ort_fp32.generate([p], n_tokens, tokenizer.pad_token_id, eos_token_ids(tokenizer))[0] for p in prompts]
    texts = [{"torch": tokenizer.decode(r, skip_special_tokens=True),
              "onnx": tokenizer.decode(g, skip_special_tokens=True)}
             for r, g in zip(ref, got, strict=True)]
    batch = collate(encoded[:batch_size], tokenizer.pad_token_id)
    with torch.no_grad():
        t_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
    o_logits = ort_fp32.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    valid = batch["attention_mask"].numpy().astype(bool)
    return {
        "prompts": len(prompts),
        "identical": sum(r == g for r, g in zip(ref, got, strict=True)),
        "all_identical": all(r == g for r, g in zip(ref, got, strict=True)),
        "max_abs_logit_diff": float(np.abs(t_logits - o_logits)[valid].max()),
        "texts": texts,
    }


def quantize_onnx(model_dir: Path, tokenizer, q, out: Path, samples: Sequence[dict],
                  encoded: Sequence[dict]) -> tuple[dict, dict]:
    """Write ``out/model.onnx``. Returns (quantization block, extra metrics: the fp32 check and fp32 perplexity)."""
    from quantize.inputs import load_float_model

    model = load_float_model(model_dir, torch.float32, torch.device("cpu"))
    fp32_dir = out / FP32_DIR
    fp32_dir.mkdir()
    log(f"exporting to ONNX (opset {q.onnx.opset}, KV cache inputs/outputs)")
    info = export_onnx(model, fp32_dir / ONNX_FILE, q.onnx.opset)
    ort_fp32 = OrtCausalLM(out, q.onnx.provider, onnx_file=f"{FP32_DIR}/{ONNX_FILE}")
    log(f"checking ONNX Runtime fp32 ({ort_fp32.provider}) against torch: greedy text, logits, perplexity")
    check = check_against_torch(model, tokenizer, ort_fp32, samples, encoded, q.onnx.check_prompts,
                                q.onnx.check_tokens, q.eval_batch_size)
    if not check["all_identical"]:
        log(f"WARNING: ONNX fp32 greedy text differs from torch on {check['prompts'] - check['identical']} of "
            f"{check['prompts']} prompts (max logit difference {check['max_abs_logit_diff']:.2e})")
    fp32_ppl = ort_fp32.perplexity(tokenizer.pad_token_id, encoded, q.eval_batch_size)
    del ort_fp32, model
    block: dict[str, Any] = {"method": "onnx", "format": "onnx", "file": ONNX_FILE, **info}
    if q.onnx.quantize:
        log(f"ONNX Runtime quantization ({q.onnx.scheme})")
        block.update(quantize_onnx_weights(fp32_dir / ONNX_FILE, out / ONNX_FILE, q.onnx,
                                           lm_head=q.lm_head is not False, embedding=q.embedding is not False))
        if q.onnx.keep_fp32:
            block["fp32_file"] = f"{FP32_DIR}/{ONNX_FILE}"
        else:
            shutil.rmtree(fp32_dir)
    else:
        from quantize.onnx_export import version_onnxruntime

        for name in (ONNX_FILE, EXTERNAL_DATA):
            if (fp32_dir / name).exists():
                (fp32_dir / name).rename(out / name)
        fp32_dir.rmdir()
        block.update({"bits": None, "weight_dtype": "float32", "library": f"onnxruntime {version_onnxruntime()}"})
    return block, {"onnx_fp32_vs_torch": check, "onnx_fp32_ppl": fp32_ppl}
