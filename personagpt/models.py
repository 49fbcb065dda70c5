"""Model loading and saving: the model artifact is a Hugging Face folder + manifest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from personagpt.errors import ArtifactError


def build_scratch_model(cfg, tokenizer) -> torch.nn.Module:
    """A small Llama from ``model:`` config for a tokenizer (vocab size and special ids from the tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings, rope_theta=cfg.rope_theta,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def eos_token_ids(tokenizer) -> list[int]:
    """Every token that ends an assistant turn: the tokenizer's EOS plus ChatML's end markers when present."""
    ids = []
    for tok in (tokenizer.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if tok is None:
            continue
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    return ids


def weight_bytes(folder: str | Path) -> int:
    """Bytes of weight files on disk (safetensors / bin / onnx data)."""
    exts = (".safetensors", ".bin", ".onnx", ".onnx_data", ".pt")
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and p.name.endswith(exts))


# The sampling defaults every model artifact's generation_config.json carries (what vLLM, chat clients and the
# report's answers use when a request does not say). Chosen with `personagpt eval --decoding ...` on the demo
# teacher: greedy loops ("I am not sure." eight times), this keeps the persona's authorship share and length
# distribution and no reply loops (README "Decoding defaults" has the comparison).
DECODING_DEFAULTS: dict[str, Any] = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}


def save_model_folder(model, tokenizer, out: str | Path, max_new_tokens: int = 128) -> dict[str, Any]:
    """Save model (safetensors), tokenizer with its chat template, and a generation config whose EOS ids end a
    turn and whose sampling defaults are :data:`DECODING_DEFAULTS`. Returns the manifest's ``model`` block."""
    from transformers import GenerationConfig

    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    eos = eos_token_ids(tokenizer)
    gen = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           max_new_tokens=max_new_tokens, **DECODING_DEFAULTS)
    gen.save_pretrained(out)
    return model_block(model, out)


def model_block(model, folder: str | Path, quantization: dict | None = None) -> dict[str, Any]:
    cfg = model.config
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return {
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "weight_bytes": weight_bytes(folder),
        "dtype": dtype,
        "num_hidden_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "quantization": quantization,
    }


def load_model(folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load a model artifact (or any HF folder) for inference: (model in eval mode, tokenizer)."""
    from transformers import AutoModelForCausalLM

    from personagpt.tokenizer import load_tokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ArtifactError(f"{folder}: not a Hugging Face model folder (no config.json)")
    tok = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device)
    model.eval()
    return model, tok
