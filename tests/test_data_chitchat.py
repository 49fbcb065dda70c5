"""The tiny preset's dataset artifact, built from the real chitchat-dataset package."""

import collections
import json

import pytest

from fixtures.artifacts import TINY, TINY_OVERRIDES, personagpt
from personagpt.artifacts import hash_files, read_manifest
from personagpt.data.prepare import SPLITS, read_split
from personagpt.data.readers import read_chitchat
from personagpt.template import IGNORE_INDEX, encode_sample
from personagpt.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def manifest(tiny_dataset):
    return read_manifest(tiny_dataset, kind="dataset")


@pytest.fixture(scope="module")
def splits(tiny_dataset):
    return {s: read_split(tiny_dataset, s) for s in SPLITS}


@pytest.fixture(scope="module")
def tok(tiny_dataset):
    return load_tokenizer(tiny_dataset / "tokenizer")


def test_manifest_counts_match_files(manifest, splits, tiny_dataset):
    for s in SPLITS:
        assert manifest["splits"][s]["samples"] == len(splits[s]) > 0
    assert manifest["kind"] == "dataset" and manifest["source"] == "chitchat-dataset"
    assert manifest["content_hash"] == hash_files(tiny_dataset)
    assert manifest["config"]["data"]["max_conversations"] == 120
    assert manifest["splits"]["train"]["conversations"] > manifest["splits"]["val"]["conversations"] > 0
    assert manifest["splits"]["train"]["length"]["max"] <= manifest["config"]["data"]["max_length"]


def test_persona_is_the_most_active_sender(manifest):
    counts = collections.Counter(t.speaker for c in read_chitchat().conversations for t in c.turns)
    assert manifest["persona"] == counts.most_common(1)[0][0]
    assert counts[manifest["persona"]] > 10_000  # a real persona: ~12k messages


def test_no_conversation_in_two_splits(splits):
    owner = {}
    for s, samples in splits.items():
        for x in samples:
            assert owner.setdefault(x["conversation_id"], s) == s


def test_samples_are_persona_replies_with_user_context(splits, manifest):
    n_ctx = manifest["config"]["data"]["max_context_turns"]
    for x in splits["train"][:500]:
        roles = [m["role"] for m in x["messages"]]
        assert roles[-1] == "assistant" and roles[0] == "user"
        assert len(roles) <= n_ctx + 1
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))  # consecutive messages of one speaker merged


def test_sessions_split_at_gaps():
    """No sample's context reaches across a gap longer than session_gap_seconds."""
    conv = next(c for c in read_chitchat().conversations if any(t.gap > 600 for t in c.turns[1:]))
    from personagpt.data.samples import candidates, split_sessions

    gap = max(t.gap for t in conv.turns[1:]) - 1
    sessions = split_sessions(conv.turns, gap, merge_consecutive=False)
    assert len(sessions) >= 2 and sum(len(s) for s in sessions) == len(conv.turns)
    assert all(t.gap <= gap for s in sessions for t in s[1:])
    persona = conv.turns[0].speaker
    for c in candidates(conv, persona, gap, False, 50, None, 1):
        texts = [m["content"] for m in c.context] + [c.reply["content"]]
        session = next(s for s in sessions if texts[-1] in [t.text for t in s])
        assert all(t in [u.text for u in session] for t in texts)


def test_rendering_matches_chat_template_and_labels_only_persona(splits, tok):
    for x in splits["val"][:100]:
        enc = encode_sample(tok, x["messages"], "last")
        assert enc["input_ids"] == tok.apply_chat_template(x["messages"], tokenize=True, return_dict=True)["input_ids"]
        labelled = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE_INDEX]
        assert tok.decode(labelled) == x["messages"][-1]["content"] + "<|im_end|>"


def test_label_all_assistant_turns(splits, tok):
    x = next(s for s in splits["train"] if sum(m["role"] == "assistant" for m in s["messages"]) >= 2)
    enc = encode_sample(tok, x["messages"], "all")
    labelled = tok.decode([t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE_INDEX])
    expected = "".join(m["content"] + "<|im_end|>" for m in x["messages"] if m["role"] == "assistant")
    assert labelled == expected


def test_no_duplicate_samples(splits):
    keys = [json.dumps(x["messages"]) for s in SPLITS for x in splits[s]]
    assert len(keys) == len(set(keys))


def test_deterministic(tiny_dataset, manifest, tmp_path):
    personagpt("data", "prepare", "--config", str(TINY), *TINY_OVERRIDES, "--out", str(tmp_path / "again"))
    again = read_manifest(tmp_path / "again")
    for s in SPLITS:
        assert (tmp_path / "again" / f"{s}.jsonl").read_bytes() == (tiny_dataset / f"{s}.jsonl").read_bytes()
    assert again["splits"] == manifest["splits"]
