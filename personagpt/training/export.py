"""Consolidation: the engine's (possibly ZeRO-3-partitioned, possibly LoRA-wrapped) weights -> one Hugging Face
safetensors folder with tokenizer, chat template and a generation config that stops at the end of a turn.

The state dict is gathered in memory from the weights the engine computes with: ZeRO-3 partitions are gathered
with ``deepspeed.zero.GatheredParameters`` (every rank takes part); stages 0-2 keep whole parameters on every
rank. Rank 0 loads them into a fresh model of the same architecture, merges LoRA adapters into the base weights,
and saves. ``probe_logits`` gives the logits of a fixed batch for checking the export against the engine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from personagpt.evaluate import collate


def gather_state_dict(engine, is_main: bool) -> dict[str, torch.Tensor] | None:
    """Full state dict of ``engine.module`` on rank 0 (None elsewhere). Collective under ZeRO-3."""
    import deepspeed

    module = engine.module
    if engine.zero_optimization_partition_weights():
        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            sd = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()} if is_main else None
        return sd
    if not is_main:
        return None
    return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}


def merged_model(build_skeleton: Callable[[], torch.nn.Module], state_dict: dict[str, torch.Tensor],
                 lora: bool):
    """A fresh model (``build_skeleton()``: same architecture, LoRA-wrapped when the run used LoRA) with the
    trained weights; LoRA adapters merged into the base weights."""
    model = build_skeleton()
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")} if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"consolidation: state dict does not fit the model (missing {sorted(set(missing) - tied)}, "
                           f"unexpected {sorted(unexpected)})")
    if lora:
        model = model.merge_and_unload()
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    model.config.use_cache = True
    model.eval()
    return model


def probe_batch(encoded: list[dict], pad_id: int, n: int = 2) -> dict[str, torch.Tensor]:
    """A fixed batch (the first ``n`` validation samples) for comparing logits across engine and export."""
    return collate(encoded[:n], pad_id)


@torch.no_grad()
def probe_logits(model, batch: dict[str, torch.Tensor], device) -> torch.Tensor:
    """Logits of ``batch`` (padding positions zeroed, fp32, on the CPU). Collective under ZeRO-3 when ``model``
    is an engine's module."""
    was_training = model.training
    model.eval()
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    if was_training:
        model.train()
    return (out.float() * batch["attention_mask"].to(device)[..., None]).cpu()
