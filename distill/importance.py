"""Which teacher channels a width-pruned student keeps: the most important ones, measured on calibration batches
(Minitron: Muralidharan et al., 2024, "Compact Language Models via Pruning and Knowledge Distillation").

Rules:

- An MLP neuron's importance is the magnitude of its activation, the input of ``down_proj`` (``act(gate)·up``).
- An attention head's importance is the L2 norm of its output, the head's slice of the input of ``o_proj``.
- A KV group (the query heads sharing one key/value head) scores the sum of its query heads. A student that
  narrows the KV heads keeps the top groups whole (their key/value heads with them); within every kept group it
  keeps its top query heads, the same number in each group, so every student head still reads its own teacher
  key/value head. A student's query heads per KV head can therefore not exceed the teacher's.
- A hidden (residual-stream) channel scores the magnitude of the RMSNorm outputs, summed over the norms of the
  kept layers and the final norm; one channel set for the whole model (embedding, every layer, LM head).
- Aggregation: the mean over a sample's real tokens (padding never counts), then the L2 norm over samples
  (Minitron's best pair: batch L2, sequence mean).
- Each layer ranks its own neurons and heads; kept channels stay in the teacher's order.

``width_selection: first`` keeps the leading channels of every dimension instead (:func:`first_channels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from personagpt.errors import ConfigError


@dataclass(frozen=True)
class WidthChoice:
    """Teacher channel indices the student keeps, per axis (per student layer for the per-layer axes)."""

    hidden: list[int]
    mlp: list[list[int]]
    heads: list[list[int]]
    kv_heads: list[list[int]]


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def narrowed(teacher_config, student_config) -> list[str]:
    """The width axes the student prunes."""
    return [k for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")
            if getattr(student_config, k) != getattr(teacher_config, k)]


def check_head_groups(teacher_config, student_config) -> None:
    """Importance pruning keeps whole KV groups: at most the teacher's query heads per KV head."""
    t_group = teacher_config.num_attention_heads // teacher_config.num_key_value_heads
    s_group = student_config.num_attention_heads // student_config.num_key_value_heads
    if s_group > t_group:
        raise ConfigError(
            f"distill.student.num_attention_heads / num_key_value_heads: {student_config.num_attention_heads} / "
            f"{student_config.num_key_value_heads} puts {s_group} query heads on a key/value head, the teacher "
            f"{t_group}; width_selection importance keeps whole teacher KV groups (use width_selection first, or at "
            f"most {t_group} query heads per KV head)")


def first_channels(teacher_config, student_config) -> WidthChoice:
    """The leading channels of every axis (the plain slicing)."""
    n = student_config.num_hidden_layers
    return WidthChoice(hidden=list(range(student_config.hidden_size)),
                       mlp=[list(range(student_config.intermediate_size))] * n,
                       heads=[list(range(student_config.num_attention_heads))] * n,
                       kv_heads=[list(range(student_config.num_key_value_heads))] * n)


def _layers_module(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(layers[0], "mlp") or not hasattr(layers[0].mlp, "down_proj") \
            or not hasattr(layers[0], "self_attn") or not hasattr(layers[0].self_attn, "o_proj"):
        raise ConfigError(f"distill.student.width_selection: importance needs a Llama-style model (model.layers[i]."
                          f"mlp.down_proj, self_attn.o_proj); {type(model).__name__} has another layout: use first")
    return inner


class _Accumulator:
    """Per-channel sum over samples of (mean |activation| over the sample's real tokens)²."""

    def __init__(self):
        self.sq: torch.Tensor | None = None

    def add(self, act: torch.Tensor, mask: torch.Tensor) -> None:
        act = act.float()  # bf16 activations (GPUs): sum in fp32
        m = mask.to(act.dtype).unsqueeze(-1)  # [B, S, 1]
        per_sample = (act.abs() * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, C]
        sq = per_sample.double().pow(2).sum(0)
        self.sq = sq if self.sq is None else self.sq + sq

    def l2(self) -> torch.Tensor:
        return self.sq.sqrt()


@torch.no_grad()
def channel_importance(model, batches, layers: list[int]) -> dict[str, Any]:
    """Importance of every hidden channel, and of the MLP neurons and attention heads of ``layers`` (teacher
    indices). ``batches``: iterable of ``(input_ids, attention_mask)``."""
    inner = _layers_module(model)
    n_heads, hd = model.config.num_attention_heads, head_dim(model.config)
    state = {"mask": None}
    hidden, mlp = _Accumulator(), {l_: _Accumulator() for l_ in layers}
    heads = {l_: _Accumulator() for l_ in layers}
    hooks = []

    def on_norm(_module, _inputs, output):
        hidden.add(output, state["mask"])

    def on_down(acc):
        return lambda _m, inputs: acc.add(inputs[0], state["mask"])

    def on_o(acc):
        def f(_m, inputs):
            x = inputs[0]
            acc.add(x.view(*x.shape[:-1], n_heads, hd).norm(dim=-1), state["mask"])
        return f

    try:
        for l_ in layers:
            layer = inner.layers[l_]
            hooks.append(layer.mlp.down_proj.register_forward_pre_hook(on_down(mlp[l_])))
            hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(on_o(heads[l_])))
            for name in ("input_layernorm", "post_attention_layernorm"):
                if hasattr(layer, name):
                    hooks.append(getattr(layer, name).register_forward_hook(on_norm))
        if hasattr(inner, "norm"):
            hooks.append(inner.norm.register_forward_hook(on_norm))
        model.eval()
        n = 0
        for input_ids, attention_mask in batches:
            state["mask"] = attention_mask.bool()
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            n += int(attention_mask.sum())
        if n == 0:
            raise ValueError("no tokens to measure the channels on")
    finally:
        for h in hooks:
            h.remove()
    return {"hidden": hidden.l2(), "mlp": {l_: a.l2() for l_, a in mlp.items()},
            "heads": {l_: a.l2() for l_, a in heads.items()}}


def _top(scores: torch.Tensor, k: int) -> list[int]:
    """The ``k`` highest-scoring indices in increasing order (ties: the lower index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def choose_heads(scores: torch.Tensor, t_kv: int, s_heads: int, s_kv: int) -> tuple[list[int], list[int]]:
    """(query heads, KV heads) kept: the top ``s_kv`` KV groups by summed query-head importance, and in each the
    top ``s_heads // s_kv`` query heads."""
    t_group = len(scores) // t_kv
    s_group = s_heads // s_kv
    groups = _top(torch.stack([scores[g * t_group:(g + 1) * t_group].sum() for g in range(t_kv)]), s_kv)
    heads = []
    for g in groups:
        heads += [g * t_group + i for i in _top(scores[g * t_group:(g + 1) * t_group], s_group)]
    return heads, groups


def _share(scores: torch.Tensor, kept: list[int]) -> float:
    return float(scores[kept].sum() / scores.sum().clamp_min(1e-30))


def importance_channels(model, batches, layers: list[int], student_config) -> tuple[WidthChoice, dict[str, Any]]:
    """The most important channels of every axis the student narrows (all channels of the others), and the
    share of the importance each kept (the mean over layers for the per-layer axes)."""
    t = model.config
    check_head_groups(t, student_config)
    imp = channel_importance(model, batches, layers)
    s = student_config
    hidden = _top(imp["hidden"], s.hidden_size)
    mlp, heads, kv = [], [], []
    for l_ in layers:
        mlp.append(_top(imp["mlp"][l_], s.intermediate_size))
        h, g = choose_heads(imp["heads"][l_], t.num_key_value_heads, s.num_attention_heads, s.num_key_value_heads)
        heads.append(h)
        kv.append(g)
    kept = {"hidden": round(_share(imp["hidden"], hidden), 4),
            "mlp": round(sum(_share(imp["mlp"][l_], m) for l_, m in zip(layers, mlp, strict=True)) / len(layers), 4),
            "heads": round(sum(_share(imp["heads"][l_], h) for l_, h in zip(layers, heads, strict=True))
                           / len(layers), 4)}
    info = {"method": "importance", "axes": narrowed(t, s), "importance_kept": kept, "kv_heads": kv,
            "heads": heads}
    return WidthChoice(hidden, mlp, heads, kv), info
