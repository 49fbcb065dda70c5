"""Ranking, hits@1 of N (PersonaChat / ConvAI2 style, Dinan et al. 2019).

For a held-out context the model scores the persona's real reply and N-1 distractors by mean log-likelihood per
token of the reply (its end-of-turn marker included); a hit is the real reply scoring highest. Ties are broken at
random (seeded), so a model that scores everything alike hits 1/N of the time: chance. Two distractor pools,
drawn from the same split but never from the context's own conversation, give two figures:

- ``others``: replies of other speakers (the user turns of the split): does it prefer this person's way of talking?
- ``same_persona``: the persona's own replies to other contexts: does it fit this context?

A ``Scorer`` is any callable ``(messages, candidates) -> scores``; :class:`HFScorer` scores with a Hugging Face
causal LM, computing the context once (its KV cache repeated for the candidates).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from personagpt.errors import PersonaGPTError
from personagpt.template import prompt_messages, render

POOLS = ("others", "same_persona")
Scorer = Callable[[list[dict], list[str]], Sequence[float]]


@dataclass(frozen=True)
class Item:
    messages: list[dict]                # the context (system, user, assistant... ending with a user turn)
    reply: str                          # the persona's real reply
    distractors: dict[str, list[str]]   # pool -> N-1 replies


def _pools(samples: Sequence[dict]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(conversation id, text) of other speakers' turns and of the persona's final replies, de-duplicated."""
    others, same, seen_o, seen_s = [], [], set(), set()
    for s in samples:
        cid = s.get("conversation_id", s["id"])
        for m in s["messages"][:-1]:
            t = m["content"].strip()
            if m["role"] == "user" and t and t not in seen_o:
                seen_o.add(t)
                others.append((cid, t))
        t = s["messages"][-1]["content"].strip()
        if t and t not in seen_s:
            seen_s.add(t)
            same.append((cid, t))
    return others, same


def build_items(samples: Sequence[dict], n: int, count: int, seed: int, where: str = "split") -> list[Item]:
    """``count`` contexts (at most the split's size, chosen with ``seed``), each with N-1 distractors per pool.
    Too few distinct replies from other conversations for N is an error naming ``eval.candidates``."""
    rng = random.Random(seed)
    pools = dict(zip(POOLS, _pools(samples), strict=True))
    chosen = rng.sample(list(samples), min(count, len(samples)))
    items = []
    for s in chosen:
        cid = s.get("conversation_id", s["id"])
        reply = s["messages"][-1]["content"].strip()
        dis = {}
        for pool, entries in pools.items():
            cands = [t for c, t in entries if c != cid and t != reply]
            if len(cands) < n - 1:
                raise PersonaGPTError(f"eval.candidates: {where} has {len(cands)} {pool} replies outside "
                                      f"conversation {cid}, fewer than the N-1 = {n - 1} distractors hits@1 of {n} "
                                      "needs (lower eval.candidates or use a larger split)")
            dis[pool] = rng.sample(cands, n - 1)
        items.append(Item(prompt_messages(s["messages"]), reply, dis))
    return items


def hits(scorer: Scorer, items: Sequence[Item], seed: int) -> dict[str, list[int]]:
    """Per pool, 1 where the real reply outscored its N-1 distractors (ties broken at random), else 0."""
    rng = random.Random(seed)
    out: dict[str, list[int]] = {p: [] for p in POOLS}
    for it in items:
        cands = [it.reply] + [d for p in POOLS for d in it.distractors[p]]
        scores = list(scorer(it.messages, cands))
        true, k = scores[0], 1
        for p in POOLS:
            ds = scores[k:k + len(it.distractors[p])]
            k += len(ds)
            better = sum(1 for d in ds if d > true)
            ties = sum(1 for d in ds if d == true)
            out[p].append(int(better == 0 and rng.randrange(ties + 1) == 0))
    return out


class HFScorer:
    """Mean log-likelihood per token of each candidate as the assistant's reply to ``messages``."""

    def __init__(self, model, tokenizer, max_reply_tokens: int = 48, batch_size: int = 8):
        self.model, self.tok = model, tokenizer
        self.max_reply_tokens, self.batch_size = max_reply_tokens, batch_size
        self.device = next(model.parameters()).device

    def reply_ids(self, messages: list[dict], prefix: str, reply: str) -> list[int]:
        full = render(self.tok, [*messages, {"role": "assistant", "content": reply}])
        if not full.startswith(prefix):
            raise PersonaGPTError("chat template is not prefix-stable: replies cannot be scored after the context")
        ids = self.tok(full[len(prefix):].rstrip(), add_special_tokens=False)["input_ids"]
        return ids[:self.max_reply_tokens] or [self.tok.pad_token_id]

    @torch.no_grad()
    def __call__(self, messages: list[dict], candidates: list[str]) -> list[float]:
        prefix = render(self.tok, messages, add_generation_prompt=True)
        ctx = torch.tensor([self.tok(prefix, add_special_tokens=False)["input_ids"]], device=self.device)
        out = self.model(input_ids=ctx, use_cache=True)
        first = out.logits[0, -1].float().log_softmax(-1)
        encoded = [self.reply_ids(messages, prefix, c) for c in candidates]
        order = sorted(range(len(encoded)), key=lambda j: len(encoded[j]))  # similar lengths batch with less padding
        scores = [0.0] * len(encoded)
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            chunk = [encoded[j] for j in idx]
            k, m = len(chunk), max(map(len, chunk))
            ids = torch.full((k, m), self.tok.pad_token_id, dtype=torch.long, device=self.device)
            mask = torch.zeros((k, m), dtype=torch.long, device=self.device)
            for j, c in enumerate(chunk):
                ids[j, :len(c)] = torch.tensor(c)
                mask[j, :len(c)] = 1
            cache = copy.deepcopy(out.past_key_values)
            cache.batch_repeat_interleave(k)
            attn = torch.cat([torch.ones((k, ctx.shape[1]), dtype=torch.long, device=self.device), mask], 1)
            logits = self.model(input_ids=ids, attention_mask=attn, past_key_values=cache, use_cache=True).logits
            logp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
            logp = torch.cat([first[ids[:, 0]][:, None], logp], 1) * mask
            for j, v in zip(idx, (logp.sum(1) / mask.sum(1)).tolist(), strict=True):
                scores[j] = v
        return scores
