"""Validation during training: ``personagpt.evaluate.perplexity`` (the code every stage scores with), sharded over
ranks and summed.

Every rank runs the same number of batches (ZeRO-3 gathers parameters collectively in each forward): shards are
padded with a copy of a sample whose labels are all masked, which adds no loss and no tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from personagpt.evaluate import perplexity
from personagpt.template import IGNORE_INDEX


def shard(encoded: Sequence[dict], rank: int, world_size: int) -> list[dict]:
    per_rank = math.ceil(len(encoded) / world_size)
    mine = list(encoded[rank::world_size])
    if len(mine) < per_rank:
        filler = {"input_ids": encoded[0]["input_ids"], "labels": [IGNORE_INDEX] * len(encoded[0]["input_ids"])}
        mine += [filler] * (per_rank - len(mine))
    return mine


@torch.no_grad()
def distributed_perplexity(model, tokenizer, encoded: Sequence[dict], batch_size: int, rank: int, world_size: int,
                           device) -> dict[str, Any]:
    """Token-weighted loss and perplexity on assistant tokens of ``encoded`` (the same numbers one process would
    get scoring all of them)."""
    mine = shard(encoded, rank, world_size)
    # sort by length inside the shard: less padding, same result (the loss is a token sum)
    mine = sorted(mine, key=lambda e: len(e["input_ids"]))
    r = perplexity(model, tokenizer, [], batch_size=batch_size, device=device, encoded=mine)
    totals = torch.tensor([r["loss"] * r["tokens"], float(r["tokens"])], dtype=torch.float64)
    if world_size > 1:
        torch.distributed.all_reduce(totals)
    loss_sum, tokens = totals.tolist()
    loss = loss_sum / max(tokens, 1.0)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(tokens), "samples": len(encoded)}
