"""Which teacher layers a depth-pruned student keeps.

``even``: spread evenly, first and last kept. ``angular``: drop the contiguous block of layers that changes the
residual stream least, measured on real samples — the angular distance between the hidden state entering the
block and the one leaving it, averaged over tokens (Gromov et al., 2024, "The Unreasonable Ineffectiveness of the
Deeper Layers"). ``influence``: drop the layers with the lowest block influence, not necessarily contiguous —
BI_l = 1 - cos(input of layer l, output of layer l), averaged over tokens (Men et al., 2024, "ShortGPT: Layers in
Large Language Models are More Redundant Than You Expect"). The last layer is always kept (it feeds the final
norm and the LM head).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def evenly_spaced(n_teacher: int, n_student: int) -> list[int]:
    """``n_student`` teacher layer indices spread evenly, first and last always kept."""
    if n_student == 1:
        return [n_teacher - 1]
    return sorted({round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)})


@torch.no_grad()
def block_angular_distances(model: torch.nn.Module, batches, n_drop: int) -> list[float]:
    """Mean angular distance (in units of π, 0..1) between the input of layer ``l`` and the input of layer
    ``l + n_drop`` for every start ``l`` whose block leaves the last layer in place (``l + n_drop <= L - 1``).

    ``batches``: iterable of ``(input_ids, attention_mask)``; padding tokens do not count.
    """
    n_layers = model.config.num_hidden_layers
    starts = n_layers - n_drop  # l = 0 .. L-1-n_drop
    if n_drop < 1 or starts < 1:
        raise ValueError(f"cannot drop {n_drop} of {n_layers} layers and keep the last one")
    total = torch.zeros(starts, dtype=torch.float64)
    count = 0
    model.eval()
    for input_ids, attention_mask in batches:
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
        hs = out.hidden_states  # hs[i] = input of layer i for i < L (hs[L] is after the final norm)
        mask = attention_mask.bool()
        for start in range(starts):
            a, b = hs[start][mask].double(), hs[start + n_drop][mask].double()
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
            total[start] += (torch.arccos(cos) / math.pi).sum()
        count += int(mask.sum())
    if count == 0:
        raise ValueError("no tokens to measure the layers on")
    return (total / count).tolist()


def angular_keep_layers(model: torch.nn.Module, batches, n_student: int) -> tuple[list[int], dict[str, Any]]:
    """The layers kept when the block with the smallest angular distance is dropped, and the measurements."""
    n_layers = model.config.num_hidden_layers
    n_drop = n_layers - n_student
    if n_drop == 0:
        return list(range(n_layers)), {"method": "angular", "dropped": []}
    dists = block_angular_distances(model, batches, n_drop)
    start = min(range(len(dists)), key=dists.__getitem__)
    keep = list(range(start)) + list(range(start + n_drop, n_layers))
    return keep, {"method": "angular", "dropped": [start, start + n_drop - 1],
                  "angular_distance": round(dists[start], 4),
                  "angular_distance_by_start": [round(d, 4) for d in dists]}


@torch.no_grad()
def block_influences(model: torch.nn.Module, batches) -> list[float]:
    """ShortGPT block influence of every layer but the last: ``1 - cos(h_l, h_{l+1})`` per real token, averaged
    (``h_l`` is the input of layer ``l``; the last layer's output is only seen after the final norm, and the last
    layer is kept anyway). ``batches``: iterable of ``(input_ids, attention_mask)``."""
    n_layers = model.config.num_hidden_layers
    total = torch.zeros(n_layers - 1, dtype=torch.float64)
    count = 0
    model.eval()
    for input_ids, attention_mask in batches:
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
        hs = out.hidden_states
        mask = attention_mask.bool()
        for layer in range(n_layers - 1):
            a, b = hs[layer][mask].double(), hs[layer + 1][mask].double()
            total[layer] += (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).sum()
        count += int(mask.sum())
    if count == 0:
        raise ValueError("no tokens to measure the layers on")
    return (total / count).tolist()


def influence_keep_layers(model: torch.nn.Module, batches, n_student: int) -> tuple[list[int], dict[str, Any]]:
    """The ``n_student`` layers kept when the lowest-influence layers are dropped (the last layer always kept)."""
    n_layers = model.config.num_hidden_layers
    if n_student >= n_layers:
        return list(range(n_layers)), {"method": "influence", "dropped": []}
    if n_student < 1:
        raise ValueError("a student keeps at least one layer")
    bi = block_influences(model, batches)
    ranked = sorted(range(n_layers - 1), key=lambda i: (-bi[i], i))  # most influential first
    keep = sorted(ranked[: n_student - 1] + [n_layers - 1])
    return keep, {"method": "influence", "dropped": [i for i in range(n_layers) if i not in keep],
                  "block_influence": [round(b, 5) for b in bi]}


MEASURED = {"angular": angular_keep_layers, "influence": influence_keep_layers}  # layer_selection -> measurement
