"""Which teacher layers a depth-pruned student keeps.

``even``: spread evenly, first and last kept. ``angular``: drop the contiguous block of layers that changes the
residual stream least, measured on real samples — the angular distance between the hidden state entering the
block and the one leaving it, averaged over tokens (Gromov et al., 2024, "The Unreasonable Ineffectiveness of the
Deeper Layers"). The last layer is always kept (it feeds the final norm and the LM head).
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
