"""The model a run starts from: a tiny Llama from the ``model:`` config, or a local Hugging Face checkpoint
(``model.source: pretrained`` with ``model.path``, or a converted package model: smollm2, gemma3); LoRA adapters
(peft) and activation checkpointing on top."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from personagpt.errors import ConfigError


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "scratch" | "pretrained"
    path: Path | None  # HF folder for pretrained

    def describe(self) -> str:
        return "scratch" if self.path is None else str(self.path)


def resolve_model_source(model_cfg, convert_missing: bool = True) -> ModelSource:
    """Where the starting weights come from; a missing folder is an error naming ``model.path``."""
    if model_cfg.source == "scratch":
        return ModelSource("scratch", None)
    if model_cfg.source in ("smollm2", "gemma3"):
        from personagpt.gguf_models import converted_dir

        path = converted_dir(model_cfg.source, convert_if_missing=False)
        if convert_missing and not (path / "config.json").is_file():
            converted_dir(model_cfg.source)
        return ModelSource("pretrained", path)
    path = Path(model_cfg.path)
    if not path.exists():
        raise ConfigError(f"model.path: {path}: no such folder")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.path: {path}: not a Hugging Face model folder (no config.json)")
    return ModelSource("pretrained", path)


def hf_config(source: ModelSource, model_cfg, tokenizer=None):
    """The transformers config of the model to train (no weights loaded)."""
    if source.kind == "scratch":
        from transformers import LlamaConfig

        vocab = len(tokenizer) if tokenizer is not None else model_cfg.vocab_size
        return LlamaConfig(
            vocab_size=vocab, hidden_size=model_cfg.hidden_size, intermediate_size=model_cfg.intermediate_size,
            num_hidden_layers=model_cfg.num_hidden_layers, num_attention_heads=model_cfg.num_attention_heads,
            num_key_value_heads=model_cfg.num_key_value_heads,
            max_position_embeddings=model_cfg.max_position_embeddings,
            tie_word_embeddings=model_cfg.tie_word_embeddings, rope_theta=model_cfg.rope_theta)
    return pretrained_config(source)


def module_names(source: ModelSource, model_cfg) -> list[str]:
    """Qualified module names of the model, from a weightless (meta-device) instance: cheap, touches no file
    except config.json."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(source, model_cfg))
    return [name for name, _ in model.named_modules() if name]


def validate_lora_targets(lora_cfg, names: list[str], section: str = "train") -> None:
    """peft matches a target by module-name suffix; a target that matches nothing is a config error."""
    leaf = sorted({n.rsplit(".", 1)[-1] for n in names})
    for target in lora_cfg.target_modules:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ConfigError(f"{section}.lora.target_modules: {target!r} matches no module of the model "
                              f"(module names: {', '.join(leaf)})")


def strip_load_only_config(config) -> None:
    """The converted SmolLM2 keeps the GGUF ``quantization_config`` it was loaded with; the trained weights are
    plain float tensors, so a saved artifact must not claim a quantization."""
    if getattr(config, "quantization_config", None) is not None:
        try:
            del config.quantization_config
        except AttributeError:
            config.quantization_config = None


def pretrained_config(source: ModelSource):
    """The checkpoint's config without load-time-only settings (see :func:`strip_load_only_config`)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source.path))
    strip_load_only_config(config)
    return config


def build_model(source: ModelSource, model_cfg, tokenizer, seed: int, dtype: torch.dtype = torch.float32,
                load_weights: bool = True):
    """The starting model on the CPU, in ``dtype`` (every rank builds the same weights). ``load_weights=False``:
    the same architecture with untrained weights (a container for consolidated weights)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    if source.kind == "scratch":
        from personagpt.models import build_scratch_model

        model = cast_weights(build_scratch_model(model_cfg, tokenizer), dtype)
    else:
        config = pretrained_config(source)
        if load_weights:
            model = AutoModelForCausalLM.from_pretrained(str(source.path), config=config, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if len(tokenizer) > model.config.vocab_size:
            raise ConfigError(f"model.path: {source.path}: its vocabulary ({model.config.vocab_size}) is smaller "
                              f"than the dataset tokenizer's ({len(tokenizer)}): prepare the data with this model")
    model.config.use_cache = False
    return model


def cast_weights(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` with its floating-point parameters in ``dtype`` and its buffers untouched: what
    ``from_pretrained(dtype=...)`` gives. The rotary frequencies (``inv_freq``) stay fp32; ``model.to(bfloat16)``
    would round them too, and a few hundred tokens in the positions then rotate by visibly different angles (max
    |logit| difference 1.6 on SmolLM2-135M at 300 tokens, against the same weights loaded in bfloat16)."""
    for p in model.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return model


def apply_lora(model, lora_cfg):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                     target_modules=list(lora_cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer in backward (non-reentrant: works with frozen LoRA bases and ZeRO-3)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def count_parameters(model) -> tuple[int, int]:
    """(all, trainable) parameters; under ZeRO-3 a partitioned parameter reports its full size (ds_numel)."""
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable
