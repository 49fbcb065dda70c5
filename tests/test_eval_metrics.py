"""personagpt eval's metrics on constructed cases: style statistics against hand-computed values, bootstrap
intervals, hits@1 of a scorer that prefers the real reply (1.0) and of one that cannot tell (chance), the HF
scorer against a plain forward pass, and the authorship classifier on the tiny dataset (above chance)."""

from __future__ import annotations

import math

import pytest

from personagpt.eval import style
from personagpt.eval.bootstrap import interval, mean
from personagpt.eval.ranking import POOLS, build_items, hits

REPLIES = ["hello there 😀", "Why not?", "ok ok ok ok", "", "  yes, I am sure. I am sure. I am sure.", "lol 👍 what?"]


def test_style_statistics_by_hand():
    assert [style.lowercase_start(t) for t in REPLIES] == [True, False, True, False, True, True]
    assert [style.has_question(t) for t in REPLIES] == [False, True, False, False, False, True]
    assert [style.has_emoji(t) for t in REPLIES] == [True, False, False, False, False, True]
    assert [style.is_empty(t) for t in REPLIES] == [False, False, False, True, False, False]
    # "ok" four times in a row; "i am sure." three times in a row; "hello there" is no loop
    assert [style.is_loop(t) for t in REPLIES] == [False, False, True, False, True, False]
    assert not style.is_loop("ok ok") and style.is_loop("a b a b a b")
    assert style.share(REPLIES, style.has_emoji) == pytest.approx(2 / 6)
    # distinct-1 over the words, lowercased: "ok ok ok ok" -> 1 type of 4; "a b a" -> 2 of 3
    assert style.distinct_n(["ok ok ok ok"], 1) == 0.25
    assert style.distinct_n(["a b a", "A c"], 1) == pytest.approx(3 / 5)
    assert style.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert style.distinct_n([""], 2) == 0.0
    assert style.mean_words(["a b", "c"]) == 1.5
    # reply lengths 1,2,3 vs 1,2,3: distance 0; 1,1 vs 5,5: 1
    assert style.length_ks(["a", "a b", "a b c"], ["x", "x y", "x y z"]) == 0.0
    assert style.length_ks(["a", "b"], ["a b c d e", "a b c d e"]) == 1.0


def test_bootstrap_interval_covers_the_value_and_shrinks_with_n():
    small = interval(mean, [0, 1] * 10, n_resamples=500, seed=1)
    large = interval(mean, [0, 1] * 500, n_resamples=500, seed=1)
    assert small["value"] == large["value"] == 0.5 and small["n"] == 20
    assert small["low"] < 0.5 < small["high"] and large["low"] < 0.5 < large["high"]
    assert (large["high"] - large["low"]) < (small["high"] - small["low"]) / 4
    const = interval(mean, [1, 1, 1], n_resamples=200, seed=0)
    assert const["low"] == const["high"] == 1.0
    # two samples, unpaired: a difference of means
    d = interval(lambda a, b: mean(a) - mean(b), [1.0] * 5 + [0.0] * 5, [0.0] * 10, n_resamples=300, seed=0)
    assert d["value"] == 0.5 and d["low"] < 0.5 < d["high"]
    # corpus statistics on the distinct draws of each resample: distinct-1 of all-different replies stays 1
    u = interval(lambda t: style.distinct_n(t, 1), ["a", "b", "c", "d", "e"], n_resamples=200, seed=0, unique=True)
    assert u["low"] == u["high"] == 1.0


@pytest.fixture(scope="module")
def test_split(tiny_dataset):
    from personagpt.data.prepare import read_split

    return read_split(tiny_dataset, "test")


def test_distractors_come_from_other_conversations(test_split):
    items = build_items(test_split, 20, 50, seed=0)
    by_reply = {s["messages"][-1]["content"].strip(): s for s in test_split}
    user_turns = {m["content"].strip() for s in test_split for m in s["messages"] if m["role"] == "user"}
    for it in items:
        assert all(len(it.distractors[p]) == 19 for p in POOLS)
        assert it.reply not in it.distractors["others"] + it.distractors["same_persona"]
        assert set(it.distractors["others"]) <= user_turns
        conv = by_reply[it.reply]["conversation_id"]
        own = {m["content"].strip() for s in test_split if s["conversation_id"] == conv for m in s["messages"]}
        assert not own & set(it.distractors["same_persona"])
    assert build_items(test_split, 20, 50, seed=0) == items  # seeded


def test_hits_at_1_of_a_model_preferring_the_real_reply_is_1(test_split):
    items = build_items(test_split, 20, 60, seed=0)
    truth = {it.reply for it in items}

    def prefers_truth(messages, cands):
        return [1.0 if c in truth and c == cands[0] else 0.0 for c in cands]

    h = hits(prefers_truth, items, seed=0)
    assert all(h[p] == [1] * len(items) for p in POOLS)


def test_hits_at_1_of_a_uniform_model_is_chance(test_split):
    items = build_items(test_split, 10, 400, seed=0)
    h = hits(lambda messages, cands: [0.0] * len(cands), items, seed=3)
    for p in POOLS:
        ci = interval(mean, h[p], n_resamples=1000, seed=0)
        assert ci["low"] <= 0.1 <= ci["high"], (p, ci)
        assert ci["high"] - ci["low"] < 0.1


def test_too_few_samples_for_n_is_an_error(test_split):
    from personagpt.errors import PersonaGPTError

    with pytest.raises(PersonaGPTError, match=r"eval\.candidates: test\.jsonl has \d+ others replies outside"):
        build_items(test_split[:5], 20, 5, seed=0, where="test.jsonl")


def test_hf_scorer_equals_a_full_forward_pass(tiny_model_artifact, test_split):
    """The cached-context scorer gives each candidate the mean log-likelihood a plain forward pass over the whole
    conversation gives its tokens (personagpt.evaluate's loss on the assistant tokens)."""
    import torch

    from personagpt.eval.ranking import HFScorer
    from personagpt.evaluate import collate, token_losses
    from personagpt.models import load_model
    from personagpt.template import encode_sample, prompt_messages

    model, tok = load_model(tiny_model_artifact)
    s = test_split[0]
    ctx = prompt_messages(s["messages"])
    cands = [s["messages"][-1]["content"], "ok", "what do you mean by that? tell me more please"]
    got = HFScorer(model, tok, max_reply_tokens=1000, batch_size=2)(ctx, cands)
    for c, g in zip(cands, got, strict=True):
        enc = encode_sample(tok, [*ctx, {"role": "assistant", "content": c}])
        batch = collate([enc], tok.pad_token_id)
        with torch.no_grad():
            loss, n = token_losses(model(input_ids=batch["input_ids"]).logits, batch["labels"])
        assert g == pytest.approx(-loss.item() / n.item(), abs=1e-4)
    assert not math.isclose(got[0], got[1])


def test_authorship_classifier_beats_chance_on_held_out_data(tiny_dataset, test_split):
    from personagpt.data.prepare import read_split
    from personagpt.eval.authorship import Authorship, split_texts

    clf = Authorship.fit(read_split(tiny_dataset, "train"), 4000, seed=0)
    persona, others = split_texts(test_split)
    hit_p, hit_o = clf.attributed(persona), [1 - x for x in clf.attributed(others)]
    acc = interval(lambda a, b: (mean(a) + mean(b)) / 2, hit_p, hit_o, n_resamples=500, seed=0)
    assert acc["low"] > 0.5, acc  # balanced accuracy: chance is 0.5
    assert clf.attributed(["", "  "]) == [0, 0]
