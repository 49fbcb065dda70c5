"""Evaluation every stage shares: perplexity on assistant tokens and decode throughput.

The same code scores teacher, student and quantized models, so their numbers compare.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from personagpt.template import IGNORE_INDEX, encode_sample, prompt_messages


def collate(batch: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids``/``labels`` into tensors with an attention mask."""
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[i, :k] = torch.tensor(b["input_ids"])
        labels[i, :k] = torch.tensor(b["labels"])
        mask[i, :k] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over labelled (assistant) tokens, and their count."""
    shift_labels = labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX
    # only the labelled positions go through the vocabulary-wide softmax (a chat sample's reply is ~11% of its
    # tokens): the same sum, a fraction of the work and memory
    loss = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), shift_labels[keep], reduction="sum")
    return loss, keep.sum()


@torch.no_grad()
def perplexity(model, tokenizer, samples: Sequence[dict], max_length: int | None = None, batch_size: int = 8,
               label_turns: str = "last", device: str | torch.device | None = None,
               encoded: Sequence[dict] | None = None) -> dict[str, Any]:
    """Mean next-token loss and perplexity on assistant tokens of ``samples`` (chat samples with messages)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    enc = list(encoded) if encoded is not None else [
        encode_sample(tokenizer, s["messages"], label_turns, max_length) for s in samples]
    total, count = 0.0, 0
    for i in range(0, len(enc), batch_size):
        batch = collate(enc[i:i + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss, n = token_losses(logits, batch["labels"])
        total += loss.item()
        count += int(n.item())
    if was_training:
        model.train()
    mean = total / max(count, 1)
    return {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": count}


@torch.no_grad()
def decode_throughput(model, tokenizer, samples: Sequence[dict], max_new_tokens: int = 32, batch_size: int = 4,
                      n_prompts: int = 8) -> dict[str, Any]:
    """Greedy decode tokens/s on the prompts of ``samples`` (left-padded batches, EOS ignored so every run
    generates exactly ``max_new_tokens`` per sequence: the figure compares models, not answer lengths)."""
    device = next(model.parameters()).device
    model.eval()
    prompts = [tokenizer.apply_chat_template(prompt_messages(s["messages"]), tokenize=False, add_generation_prompt=True)
               for s in samples[:n_prompts]]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    generated, seconds = 0, 0.0
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            t0 = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            generated += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    finally:
        tokenizer.padding_side = side
    return {"decode_tokens_per_s": generated / max(seconds, 1e-9), "generated_tokens": generated,
            "batch_size": batch_size, "max_new_tokens": max_new_tokens}
