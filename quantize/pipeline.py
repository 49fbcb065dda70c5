"""One quantization run: check inputs, measure the input model, quantize, measure the output the same way, write
the output artifact (staged: nothing is left behind on error) and print the comparison table."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from personagpt.artifacts import MANIFEST, new_manifest, staging_dir, write_manifest
from personagpt.data.prepare import read_split
from personagpt.device import device as pick_device
from personagpt.errors import DataError
from personagpt.template import encode_sample
from personagpt.tokenizer import load_tokenizer
from quantize.compare import log, plot, relative, table, torch_metrics
from quantize.inputs import Inputs, calibration_ids, resolve_inputs

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".pt", ".png")
REPORT_PNG = "quantize_report.png"


def copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer, chat template, generation config (and config.json, which gptq/int8 overwrite): everything of the
    input folder but its weights and manifest, so the output serves exactly like the input."""
    for p in src.iterdir():
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(WEIGHT_SUFFIXES) \
                and not p.name.endswith(".index.json"):
            shutil.copy2(p, dst / p.name)


def describe(block: dict) -> str:
    m = block["method"]
    if m == "gptq":
        g = "per-channel" if block["group_size"] == -1 else f"g{block['group_size']}"
        return f"gptq {block['bits']}-bit {g}{' act-order' if block['desc_act'] else ''}"
    if m == "int8":
        return "int8 W8A8 (compressed-tensors)"
    if not block.get("bits"):
        return "onnx fp32"
    if block.get("scheme") == "dynamic":
        return "onnx int8 (ORT dynamic, per-tensor activations)"
    acts = " + int8 activations" if block.get("accuracy_level") == 4 else ""
    parts = [p for p, on in (("head", block.get("lm_head")), ("embedding", block.get("embedding"))) if on]
    whole = f", {' + '.join(parts)}" if parts else ", linears only"
    head_bits = block.get("head_bits") or block["bits"]
    mixed = f", head int{head_bits}" if head_bits != block["bits"] and (block.get("lm_head") or
                                                                       block.get("embedding")) else ""
    asym = " asym" if block.get("symmetric") is False else ""
    return f"onnx int{block['bits']}{asym} g{block['block_size']}{acts}{whole}{mixed} (ORT MatMulNBits)"


def load_eval(inp: Inputs, q, tokenizer) -> tuple[list[dict], list[dict]]:
    val = read_split(inp.dataset_dir, "val")
    if not val:
        raise DataError(f"quantize.dataset: {inp.dataset_dir / 'val.jsonl'} is empty: nothing to measure perplexity on")
    samples = val[: q.eval_samples] if q.eval_samples else val
    encoded = [encode_sample(tokenizer, s["messages"], inp.label_turns, inp.max_length) for s in samples]
    return samples, encoded


def run(cfg, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantize per ``cfg.quantize``. ``baseline``: the input's metrics when already measured with the same
    settings (the benchmark reuses them across methods). Returns the output manifest."""
    q = cfg.quantize
    inp = resolve_inputs(cfg)
    dev = pick_device()
    # Every torch measurement in one dtype: float32 on CPU; float16 on GPUs, the dtype GPTQ kernels run in (so the
    # input and all three outputs compare under the same arithmetic).
    eval_dtype = torch.float16 if dev.type == "cuda" else torch.float32
    tok = load_tokenizer(inp.model_dir)
    calib = calibration_ids(read_split(inp.dataset_dir, "train"), tok, q.n_calibration,
                            q.calibration_max_length or inp.max_length, cfg.seed, inp.dataset_dir)
    samples, encoded = load_eval(inp, q, tok)
    torch.manual_seed(cfg.seed)
    log(f"{inp.method}: {inp.model_dir} -> {inp.out} ({len(calib)} calibration samples, "
        f"{sum(map(len, calib))} tokens; {len(samples)} validation samples; {dev.type})")
    if baseline is None:
        log("measuring the input model (perplexity, decode tokens/s)")
        baseline = torch_metrics(inp.model_dir, encoded, samples, q, dev, eval_dtype)
    extra: dict[str, Any] = {}
    with staging_dir(inp.out) as tmp:
        copy_side_files(inp.model_dir, tmp)
        t0 = time.perf_counter()
        log(f"quantizing ({inp.method})")
        if inp.method == "gptq":
            from quantize.gptq import quantize_gptq

            block = quantize_gptq(inp.model_dir, tok, calib, q, tmp, dev)
        elif inp.method == "int8":
            from quantize.int8 import quantize_int8

            block = quantize_int8(inp.model_dir, tok, calib, q, tmp, dev)
        else:
            from quantize.onnx_method import quantize_onnx

            block, extra = quantize_onnx(inp.model_dir, tok, q, tmp, samples, encoded)
        seconds = time.perf_counter() - t0
        log(f"quantized in {seconds:.1f} s; measuring the output")
        after = measure_output(inp.method, tmp, encoded, samples, q, dev, eval_dtype, tok)
        model_info = dict(inp.model_manifest.get("model") or {})
        num_params = int(model_info.get("num_parameters") or 0) or guess_num_parameters(inp.hf_config)
        rel = relative(baseline, after, num_params)
        if inp.method != "onnx":
            from quantize.sizes import breakdown

            after["weight_breakdown"] = breakdown(tmp)
        rows = [{"label": f"input ({baseline['dtype']})", **baseline, "ppl_increase_pct": None,
                 "weight_bytes_vs_fp16": baseline["weight_bytes"] / (2 * num_params)},
                {"label": describe(block), **after, **rel}]
        plot(rows, tmp / REPORT_PNG, f"{inp.model_dir.name} -> {inp.out.name}")
        model_info.update(weight_bytes=after["weight_bytes"], quantization=block,
                          dtype=block.get("unquantized_dtype", "float32"))
        metrics = {"before": baseline, "after": after, **rel, "quantize_seconds": round(seconds, 1),
                   "calibration": {"samples": len(calib), "tokens": sum(map(len, calib)),
                                   "split": "train", "seed": cfg.seed},
                   "eval": {"split": "val", "samples": len(samples), "label_turns": inp.label_turns,
                            "max_length": inp.max_length}, **extra}
        manifest = new_manifest("model", "quantize", config=cfg.to_dict(),
                                parents={"model": inp.model_dir, "dataset": inp.dataset_dir}, metrics=metrics,
                                model=model_info)
        manifest = write_manifest(tmp, manifest)
    print(table(rows), flush=True)
    print(f"wrote {inp.out}", flush=True)
    return manifest


def measure_output(method: str, folder: Path, encoded, samples, q, dev, eval_dtype, tok) -> dict[str, Any]:
    if method == "onnx":
        from quantize.onnx_export import onnx_weight_bytes
        from quantize.ort_model import OrtCausalLM

        ort_model = OrtCausalLM(folder, q.onnx.provider)
        ppl = ort_model.perplexity(tok.pad_token_id, encoded, q.eval_batch_size)
        dec = ort_model.decode_throughput(tok, samples, q.decode_tokens, q.decode_batch_size, q.decode_prompts)
        import onnxruntime

        return {**ppl, "decode_tokens_per_s": dec["decode_tokens_per_s"], "weight_bytes": onnx_weight_bytes(folder),
                "dtype": "float32", "runtime": f"onnxruntime {onnxruntime.__version__} ({ort_model.provider})"}
    prepare = None
    if method == "int8":
        from quantize.int8 import w8a8_layers

        def prepare(model):
            return {"w8a8_layers": w8a8_layers(model)}
    return torch_metrics(folder, encoded, samples, q, dev, eval_dtype, prepare=prepare)


def guess_num_parameters(hf: dict) -> int:
    h, i, v = int(hf["hidden_size"]), int(hf.get("intermediate_size") or 4 * hf["hidden_size"]), int(hf["vocab_size"])
    heads = int(hf["num_attention_heads"])
    kv = int(hf.get("num_key_value_heads") or heads)
    hd = int(hf.get("head_dim") or h // heads)
    per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * i + 2 * h
    emb = v * h * (1 if hf.get("tie_word_embeddings", True) else 2)
    return int(hf["num_hidden_layers"]) * per_layer + emb + h
