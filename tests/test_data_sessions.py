"""data.train_samples: session — the train split as windows of whole sessions (real chitchat data, tiny preset):
every persona turn of a session is labelled exactly once across the split's samples, no sample exceeds
max_length, splits stay disjoint by conversation, val/test stay reply samples."""

import collections

import pytest

from fixtures.artifacts import TINY, TINY_OVERRIDES, personagpt
from personagpt.artifacts import read_manifest
from personagpt.data.prepare import SPLITS, read_split, split_label_turns
from personagpt.data.readers import read_chitchat
from personagpt.data.samples import session_messages, split_of, split_sessions
from personagpt.template import IGNORE_INDEX, encode_sample
from personagpt.tokenizer import load_tokenizer

MAX_LENGTH = 96  # short windows: sessions split into several, and some persona turns cannot fit at all


@pytest.fixture(scope="module")
def session_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sessions") / "data"
    personagpt("data", "prepare", "--config", str(TINY), *TINY_OVERRIDES, "data.train_samples=session",
               f"data.max_length={MAX_LENGTH}", "--out", str(out))
    return out


@pytest.fixture(scope="module")
def manifest(session_dataset):
    return read_manifest(session_dataset, kind="dataset")


@pytest.fixture(scope="module")
def splits(session_dataset):
    return {s: read_split(session_dataset, s) for s in SPLITS}


@pytest.fixture(scope="module")
def tok(session_dataset):
    return load_tokenizer(session_dataset / "tokenizer")


def _expected_persona_turns(manifest) -> set[tuple[str, int, int]]:
    """(conversation, session, turn) of every persona turn that answers a user turn, in train conversations,
    derived from the source again."""
    d = manifest["config"]["data"]
    persona = manifest["persona"]
    convs = [c for c in read_chitchat().conversations if any(t.speaker == persona for t in c.turns)]
    convs = convs[: d["max_conversations"]]
    out = set()
    for conv in convs:
        if split_of(conv.id, d["split_seed"], d["val_fraction"], d["test_fraction"]) != "train":
            continue
        for s_idx, session in enumerate(split_sessions(conv.turns, d["session_gap_seconds"], d["merge_consecutive"])):
            msgs = session_messages(session, persona)
            for t_idx, m in enumerate(msgs):
                if m["role"] == "assistant" and any(p["role"] == "user" for p in msgs[:t_idx]):
                    out.add((conv.id, s_idx, t_idx))
    return out


def _labelled_runs(labels) -> int:
    runs, prev = 0, False
    for x in labels:
        cur = x != IGNORE_INDEX
        runs += cur and not prev
        prev = cur
    return runs


def test_every_persona_turn_is_labelled_exactly_once(splits, manifest, tok, session_dataset):
    assert split_label_turns(session_dataset, "train", "last") == "all"
    labelled = collections.Counter()
    label_tokens = 0
    for x in splits["train"]:
        msgs = [m for m in x["messages"] if m["role"] != "system"]
        assert len(msgs) == len(x["turns"]) and msgs[0]["role"] == "user"  # a window starts with the user's side
        enc = encode_sample(tok, x["messages"], "all")
        assistant = [t for t, m in zip(x["turns"], msgs, strict=True) if m["role"] == "assistant"]
        assert _labelled_runs(enc["labels"]) == len(assistant) > 0  # each persona turn of the window is labelled
        label_tokens += sum(1 for v in enc["labels"] if v != IGNORE_INDEX)
        labelled.update((x["conversation_id"], x["session"], t) for t in assistant)
    assert labelled and max(labelled.values()) == 1  # never twice
    expected = _expected_persona_turns(manifest)
    assert set(labelled) <= expected
    w = manifest["splits"]["train"]["session_windows"]
    assert w["persona_turns"] == len(expected) and w["labelled"] == len(labelled)
    assert w["dropped_too_long"] > 0 and manifest["counts"]["persona_turns_dropped_too_long"] == w["dropped_too_long"]
    assert len(expected) == len(labelled) + w["dropped_too_long"] + w["in_duplicate_windows"]
    assert manifest["splits"]["train"]["assistant_tokens"] == label_tokens
    # several windows per session: the sessions were split at turn boundaries
    per_session = collections.Counter((x["conversation_id"], x["session"]) for x in splits["train"])
    assert max(per_session.values()) > 1


def test_no_sample_exceeds_max_length(splits, manifest, tok, session_dataset):
    for s, samples in splits.items():
        lt = split_label_turns(session_dataset, s, "last")
        lengths = [len(encode_sample(tok, x["messages"], lt)["input_ids"]) for x in samples]
        assert lengths and max(lengths) <= MAX_LENGTH
        assert manifest["splits"][s]["length"]["max"] == max(lengths)


def test_splits_stay_disjoint_by_conversation(splits):
    owner = {}
    for s, samples in splits.items():
        for x in samples:
            assert owner.setdefault(x["conversation_id"], s) == s


def test_val_and_test_stay_reply_samples(splits, manifest):
    assert manifest["train_samples"] == "session"
    assert manifest["label_turns"] == {"train": "all", "val": "last", "test": "last"}
    for s in ("val", "test"):
        assert splits[s] and all(x["messages"][-1]["role"] == "assistant" and "turns" not in x for x in splits[s])


def test_val_and_test_are_the_reply_modes_samples(session_dataset, tmp_path):
    """Same validation and test samples in both modes: perplexities compare across train_samples."""
    personagpt("data", "prepare", "--config", str(TINY), *TINY_OVERRIDES, f"data.max_length={MAX_LENGTH}",
               "--out", str(tmp_path / "reply"))
    for s in ("val", "test"):
        assert read_split(tmp_path / "reply", s) == read_split(session_dataset, s)
    assert read_split(tmp_path / "reply", "train") != read_split(session_dataset, "train")
