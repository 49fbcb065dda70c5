"""``personagpt data prepare``: conversation logs -> the dataset artifact.

Artifact layout: ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (one chat sample per line:
``{"id", "conversation_id", "session", "messages"}``; with ``data.train_samples: session`` the train split holds
session windows, which also list the session ``turns`` their messages are, and the manifest's ``label_turns``
says ``all`` for it), ``tokenizer/`` (the tokenizer and chat template every
later stage uses) and ``manifest.json`` (source, persona, counts, token statistics, content hash, config).
"""

from __future__ import annotations

import collections
import json
import statistics
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from personagpt.artifacts import new_manifest, staging_dir, write_manifest
from personagpt.config import Config
from personagpt.data.privacy import pseudonymize, scrub
from personagpt.data.readers import read_source
from personagpt.data.samples import (
    Candidate,
    Exchange,
    SessionCandidate,
    candidates,
    choose_persona,
    sample_key,
    session_candidates,
    sessions_as_conversations,
    split_of,
)
from personagpt.errors import DataError
from personagpt.template import IGNORE_INDEX, encode_sample, render

SPLITS = ("train", "val", "test")


def load_tokenizer_for(cfg: Config, train_texts):
    """The model's own tokenizer (pretrained / smollm2 / gemma3) or a BPE trained on the train split (scratch)."""
    from personagpt.tokenizer import load_tokenizer, train_bpe

    if cfg.model.source == "scratch":
        return train_bpe(train_texts, cfg.model.vocab_size), "bpe-trained-on-train-split"
    if cfg.model.source in ("smollm2", "gemma3"):
        from personagpt.gguf_models import converted_dir

        return load_tokenizer(converted_dir(cfg.model.source)), cfg.model.source
    path = Path(cfg.model.path)
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise DataError(f"model.path: {path}: no tokenizer found")
    return load_tokenizer(path), str(path)


def _assign_splits(conv_ids: list[str], d) -> dict[str, str]:
    splits = {cid: split_of(cid, d.split_seed, d.val_fraction, d.test_fraction) for cid in conv_ids}
    # Tiny inputs can leave a requested split empty: move train conversations over, deterministically.
    for name, frac in (("val", d.val_fraction), ("test", d.test_fraction)):
        if frac > 0 and name not in splits.values():
            train = sorted(c for c, s in splits.items() if s == "train")
            if len(train) > 1:
                splits[train[0]] = name
    return splits


def _fit(tok, cand: Candidate, max_length: int, label_turns: str) -> tuple[list[dict], int, int] | None:
    """Drop the oldest context turns until the sample fits ``max_length`` tokens (system prompt kept)."""
    n = len(cand.context)
    while n >= 1:
        msgs = cand.messages(n)
        if not any(m["role"] == "user" for m in msgs):
            return None
        enc = encode_sample(tok, msgs, label_turns)
        if len(enc["input_ids"]) <= max_length:
            n_lab = sum(1 for x in enc["labels"] if x != IGNORE_INDEX)
            return (msgs, len(enc["input_ids"]), n_lab) if n_lab else None
        n -= 1
    return None


def _window_length(tok, system: str | None, exchanges: list[Exchange]) -> int:
    return len(tok(render(tok, _window_messages(system, exchanges)), add_special_tokens=False)["input_ids"])


def _window_messages(system: str | None, exchanges: list[Exchange]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [m for e in exchanges for m in e.messages]


def _fit_exchange(tok, system: str | None, ex: Exchange, max_length: int) -> Exchange | None:
    """An exchange alone, its oldest user turns dropped until it fits (one user turn kept); None if it cannot."""
    n_user = len(ex.turns) - len(ex.persona_turns)
    for skip in range(n_user):
        trimmed = Exchange(ex.turns[skip:], ex.messages[skip:])
        if _window_length(tok, system, [trimmed]) <= max_length:
            return trimmed
    return None


def session_windows(tok, cand: SessionCandidate, max_length: int) -> tuple[list[list[Exchange]], int]:
    """Pack a session's exchanges, in order, into windows of at most ``max_length`` tokens (system prompt in
    each); a window ends at an exchange boundary, so no persona turn is split or repeated. Returns the windows and
    the number of persona turns dropped because their exchange cannot fit ``max_length`` on its own."""
    windows: list[list[Exchange]] = []
    cur: list[Exchange] = []
    dropped = 0
    for ex in cand.exchanges:
        if cur and _window_length(tok, cand.system, [*cur, ex]) <= max_length:
            cur.append(ex)
            continue
        if cur:
            windows.append(cur)
            cur = []
        fitted = _fit_exchange(tok, cand.system, ex, max_length)
        if fitted is None:
            dropped += len(ex.persona_turns)
        else:
            cur = [fitted]
    if cur:
        windows.append(cur)
    return windows, dropped


def _session_split(tok, cands: list[SessionCandidate], d, seen: set[str], progress: bool):
    """The train split as session windows: (samples, token lengths, label tokens, counts)."""
    samples, lengths, n_label = [], [], 0
    counts = {"persona_turns": 0, "labelled": 0, "dropped_too_long": 0, "in_duplicate_windows": 0, "duplicates": 0}
    for c in tqdm(cands, desc="windows train", disable=not progress, unit="session"):
        counts["persona_turns"] += sum(len(e.persona_turns) for e in c.exchanges)
        windows, dropped = session_windows(tok, c, d.max_length)
        counts["dropped_too_long"] += dropped
        for w in windows:
            msgs = _window_messages(c.system, w)
            persona = [t for e in w for t in e.persona_turns]
            key = sample_key(msgs)
            if key in seen:
                counts["duplicates"] += 1
                counts["in_duplicate_windows"] += len(persona)
                continue
            seen.add(key)
            enc = encode_sample(tok, msgs, "all")
            turns = [t for e in w for t in e.turns]
            samples.append({"id": f"{c.conversation_id}:{c.session}:{turns[0]}-{turns[-1]}",
                            "conversation_id": c.conversation_id, "session": c.session, "messages": msgs,
                            "turns": turns})
            lengths.append(len(enc["input_ids"]))
            n_label += sum(1 for x in enc["labels"] if x != IGNORE_INDEX)
            counts["labelled"] += len(persona)
    return samples, lengths, n_label, counts


def split_label_turns(dataset_dir: str | Path, split: str, default: str) -> str:
    """The label_turns a split's samples are encoded with: ``all`` for session windows, else ``default``
    (``data.label_turns``), as the dataset manifest records it."""
    from personagpt.artifacts import read_manifest

    return read_manifest(dataset_dir).get("label_turns", {}).get(split, default)


def _length_stats(lengths: list[int]) -> dict[str, Any]:
    if not lengths:
        return {"mean": 0, "p50": 0, "p95": 0, "max": 0}
    s = sorted(lengths)
    return {"mean": round(statistics.fmean(s), 1), "p50": s[len(s) // 2], "p95": s[min(len(s) - 1, int(len(s) * 0.95))],
            "max": s[-1]}


def prepare(cfg: Config, out: str | Path, progress: bool = True) -> dict[str, Any]:
    d = cfg.data
    t0 = time.time()
    source = read_source(d.format, d.path, d.export)
    persona = choose_persona(source, d.persona)
    persona_name = source.names.get(persona)
    # Personal data leaves the text here, before the tokenizer is trained or anything is written.
    privacy: dict[str, Any] = {"scrubbed": scrub(source, d.scrub_kinds, tuple(d.phone_regions))}
    if d.pseudonymize:
        privacy["pseudonymized_speakers"] = pseudonymize(source, persona)
    convs = [c for c in source.conversations if any(t.speaker == persona for t in c.turns)]
    if d.max_conversations is not None:
        convs = convs[: d.max_conversations]
    # Without conversation ids (CSV without the column) or one chat being the whole export, every session is its
    # own conversation for the split.
    if source.stats.get("per_session_conversations"):
        convs = sessions_as_conversations(convs, d.session_gap_seconds)
    split_by_conv = _assign_splits([c.id for c in convs], d)

    sessions_mode = d.train_samples == "session"
    cands: dict[str, list[Candidate]] = {s: [] for s in SPLITS}
    session_cands: list[SessionCandidate] = []
    n_sessions = collections.Counter()
    reply_keys: set[str] = set()
    for conv in tqdm(convs, desc="sessions", disable=not progress, unit="conv"):
        split = split_by_conv[conv.id]
        if sessions_mode and split == "train":
            sc = session_candidates(conv, persona, d.session_gap_seconds, d.merge_consecutive, d.system_prompt)
            session_cands.extend(sc)
            n_sessions[split] += len(sc)
            # val/test drop samples equal to a train reply sample, as in reply mode, so they stay the same samples
            # (untrimmed context: the duplicates are short exchanges)
            reply_keys.update(sample_key(c.messages(len(c.context))) for c in candidates(
                conv, persona, d.session_gap_seconds, d.merge_consecutive, d.max_context_turns, d.system_prompt,
                d.min_answer_chars))
            continue
        cs = candidates(conv, persona, d.session_gap_seconds, d.merge_consecutive, d.max_context_turns,
                        d.system_prompt, d.min_answer_chars)
        cands[split].extend(cs)
        n_sessions[split] += len({c.session for c in cs})

    train_texts = (t.text for conv in convs if split_by_conv[conv.id] == "train" for t in conv.turns)
    tok, tok_source = load_tokenizer_for(cfg, train_texts)

    seen: set[str] = set()
    samples: dict[str, list[dict]] = {s: [] for s in SPLITS}
    stats: dict[str, dict] = {}
    dropped_long = duplicates = 0
    label_turns = {split: d.label_turns for split in SPLITS}
    for split in SPLITS:
        if sessions_mode and split == "train":
            samples[split], lengths, n_label, window_counts = _session_split(tok, session_cands, d, seen, progress)
            duplicates += window_counts["duplicates"]
            seen |= reply_keys
            label_turns[split] = "all"
            stats[split] = {"conversations": sum(1 for c in convs if split_by_conv[c.id] == split),
                            "sessions": n_sessions[split], "samples": len(samples[split]), "tokens": sum(lengths),
                            "assistant_tokens": n_label, "length": _length_stats(lengths),
                            "session_windows": window_counts}
            continue
        lengths, n_label = [], 0
        for c in tqdm(cands[split], desc=f"tokenize {split}", disable=not progress, unit="sample"):
            fitted = _fit(tok, c, d.max_length, d.label_turns)
            if fitted is None:
                dropped_long += 1
                continue
            msgs, n_tok, n_lab = fitted
            key = sample_key(msgs)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            samples[split].append({"id": f"{c.conversation_id}:{c.session}:{c.turn}", "conversation_id":
                                   c.conversation_id, "session": c.session, "messages": msgs})
            lengths.append(n_tok)
            n_label += n_lab
        stats[split] = {"conversations": sum(1 for c in convs if split_by_conv[c.id] == split),
                        "sessions": n_sessions[split], "samples": len(samples[split]),
                        "tokens": sum(lengths), "assistant_tokens": n_label, "length": _length_stats(lengths)}
    if not samples["train"]:
        raise DataError(f"{source.name}: no training samples left after filtering (persona {persona!r}, "
                        f"{len(convs)} conversations, {dropped_long} samples too long or without a reply)")

    with staging_dir(out) as tmp:
        for split in SPLITS:
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for s in samples[split]:
                    f.write(json.dumps(s, ensure_ascii=False) + "\n")
        tok.save_pretrained(tmp / "tokenizer")
        manifest = new_manifest(
            "dataset", "data-prepare",
            config={"data": d.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json")},
            source=source.name, persona=persona, **({"persona_name": persona_name} if persona_name else {}),
            privacy=privacy, train_samples=d.train_samples, label_turns=label_turns,
            tokenizer={"source": tok_source, "vocab_size": len(tok), "chat_template": tok.chat_template},
            counts={"conversations_with_persona": len(convs), "dropped_too_long_or_empty": dropped_long,
                    "persona_turns_dropped_too_long": stats["train"].get("session_windows", {}).get(
                        "dropped_too_long", 0),
                    "duplicates_removed": duplicates, **source.stats},
            splits=stats, metrics={"prepare_seconds": round(time.time() - t0, 1)})
        manifest = write_manifest(tmp, manifest)
    return manifest


def read_split(dataset_dir: str | Path, split: str) -> list[dict]:
    """Samples of one split of a dataset artifact."""
    path = Path(dataset_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{dataset_dir}: dataset artifact has no {split}.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
