"""Prompts for load tests: real held-out conversations of a dataset artifact, as chat messages.

Each test sample's messages up to its last assistant turn are what a user sends to get that reply. Older turns
are dropped (a system prompt is kept) until the prompt, rendered with the served chat template, fits
``max_input_tokens``; prompts shorter than ``min_input_tokens`` are skipped. Deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from personagpt.errors import ConfigError, DataError


def _prompt_tokens(tok, messages: list[dict]) -> int:
    return len(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
               ["input_ids"])


def fit_messages(tok, messages: list[dict], max_input_tokens: int) -> tuple[list[dict], int] | None:
    """Drop the oldest non-system turns until the prompt fits; None when even the last turn does not."""
    from personagpt.template import prompt_messages

    msgs = prompt_messages(messages)
    system = [m for m in msgs[:1] if m["role"] == "system"]
    turns = msgs[len(system):]
    while turns:
        n = _prompt_tokens(tok, system + turns)
        if n <= max_input_tokens:
            return system + turns, n
        turns = turns[1:]
        while turns and turns[0]["role"] != "user":  # a conversation the server sees starts with the user
            turns = turns[1:]
    return None


def build_prompts(dataset: Path, split: str, tokenizer_dir: Path | None, num_prompts: int, min_input_tokens: int,
                  max_input_tokens: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """[{"id", "messages", "input_tokens"}], and statistics of the set."""
    from personagpt.artifacts import read_manifest
    from personagpt.data.prepare import read_split
    from personagpt.tokenizer import load_tokenizer

    dataset = Path(dataset)
    read_manifest(dataset, kind="dataset")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else dataset / "tokenizer"
    if not tok_dir.is_dir():
        raise ConfigError(f"loadtest.tokenizer: {tok_dir}: tokenizer folder does not exist")
    try:
        tok = load_tokenizer(tok_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"loadtest.tokenizer: {tok_dir}: cannot load a tokenizer: {e}") from None
    samples = read_split(dataset, split)
    if not samples:
        raise DataError(f"{dataset}/{split}.jsonl: no samples")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    prompts, skipped = [], 0
    for i in order:
        if len(prompts) >= num_prompts:
            break
        fitted = fit_messages(tok, samples[i]["messages"], max_input_tokens)
        if fitted is None or fitted[1] < min_input_tokens:
            skipped += 1
            continue
        messages, n = fitted
        prompts.append({"id": samples[i]["id"], "messages": messages, "input_tokens": n})
    if not prompts:
        raise DataError(f"{dataset}/{split}.jsonl: no prompt has between loadtest.min_input_tokens="
                        f"{min_input_tokens} and loadtest.max_input_tokens={max_input_tokens} tokens")
    lengths = sorted(p["input_tokens"] for p in prompts)
    stats = {"dataset": str(dataset.resolve()), "split": split, "tokenizer": str(tok_dir.resolve()),
             "prompts": len(prompts), "skipped": skipped, "input_tokens_min": lengths[0],
             "input_tokens_median": lengths[len(lengths) // 2], "input_tokens_max": lengths[-1],
             "input_tokens_mean": round(sum(lengths) / len(lengths), 1),
             "turns_mean": round(sum(len(p["messages"]) for p in prompts) / len(prompts), 2)}
    return prompts, stats
