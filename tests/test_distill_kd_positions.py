"""distill.kd_positions: which positions the KD term covers (assistant tokens or every real token), counted and
checked against a loss computed by hand on a small batch; CE stays on the persona's tokens either way."""

import math

import pytest
import torch

from distill.losses import kd_loss, kd_mask
from distill.objective import DistillObjective
from personagpt.config.distill import DistillConfig

IGN = -100


def _batch():
    """Two samples, the second right-padded: persona tokens at 4, 5 (sample 0) and 3 (sample 1)."""
    ids = torch.tensor([[5, 9, 3, 7, 11, 2], [4, 8, 6, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.full_like(ids, IGN)
    labels[0, 4:6] = ids[0, 4:6]
    labels[1, 3] = ids[1, 3]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# the positions (sample, t) whose prediction of token t+1 each mode scores, written out by hand
ASSISTANT = [(0, 3), (0, 4), (1, 2)]
ALL = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (1, 1), (1, 2)]


def _model(seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).double().eval()


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _hand_loss(s_logits, t_logits, batch, positions, alpha, T):
    """alpha·T²·mean_{positions} KL(p_T || q_T)·n_label + (1-alpha)·sum_{label positions} -log q(next token)."""
    kls = []
    for b, t in positions:
        p = _softmax([x / T for x in t_logits[b, t].tolist()])
        q = _softmax([x / T for x in s_logits[b, t].tolist()])
        kls.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)))
    n_label = len(ASSISTANT)
    ce = 0.0
    for b, t in ASSISTANT:
        q = _softmax(s_logits[b, t].tolist())
        ce -= math.log(q[int(batch["labels"][b, t + 1])])
    return alpha * T * T * sum(kls) / len(kls) * n_label + (1 - alpha) * ce, kls


def test_all_scores_more_positions_than_assistant():
    b = _batch()
    assistant = kd_mask(b["labels"], b["attention_mask"], "assistant")
    every = kd_mask(b["labels"], b["attention_mask"], "all")
    assert int(assistant.sum()) == len(ASSISTANT) == 3
    assert int(every.sum()) == len(ALL) == 8
    assert sorted(map(tuple, assistant.nonzero().tolist())) == ASSISTANT
    assert sorted(map(tuple, every.nonzero().tolist())) == ALL
    assert not (assistant & ~every).any()  # assistant positions are a subset of all
    with pytest.raises(ValueError, match="unknown KD positions 'prompt'"):
        kd_mask(b["labels"], b["attention_mask"], "prompt")


@pytest.mark.parametrize("mode, positions", [("assistant", ASSISTANT), ("all", ALL)])
def test_objective_matches_the_hand_computed_loss(mode, positions):
    batch = _batch()
    teacher, student = _model(0), _model(1)
    alpha, T = 0.5, 2.0
    cfg = DistillConfig(kd_positions=mode, alpha=alpha, temperature=T, loss="forward_kl")
    obj = DistillObjective(cfg, teacher, [0, 1], pad_id=0, eos_ids=[2], seed=0)
    loss_sum, metrics = obj(student, batch)
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected, kls = _hand_loss(s_logits, t_logits, batch, positions, alpha, T)
    assert loss_sum.item() == pytest.approx(expected, rel=1e-6)  # CE runs in float32
    assert int(metrics["kd_positions"]) == len(positions)
    # KD is a mean over its positions (times the label count the loop divides by): one scale for both modes
    assert metrics["kd"].item() == pytest.approx(T * T * sum(kls) / len(kls) * len(ASSISTANT), rel=1e-9)
    mean = kd_loss(s_logits, t_logits, batch["labels"], "forward_kl", T, positions=mode,
                   attention_mask=batch["attention_mask"])
    assert mean.item() == pytest.approx(T * T * sum(kls) / len(kls), rel=1e-9)


def test_padding_never_counts_in_all_mode():
    batch = _batch()
    teacher, student = _model(0), _model(1)
    cfg = DistillConfig(kd_positions="all", alpha=1.0)
    obj = DistillObjective(cfg, teacher, [0, 1], pad_id=0, eos_ids=[2], seed=0)
    base = obj(student, batch)[0].item()
    padded = {k: v.clone() for k, v in batch.items()}
    padded["input_ids"][1, 4:] = 13  # other token ids under the padding mask: same loss
    assert obj(student, padded)[0].item() == pytest.approx(base, rel=1e-9)


def test_ce_only_never_runs_the_teacher():
    """alpha 0 without hidden matching is a plain fine-tune: the teacher is not called, the loss is the CE sum."""
    batch = _batch()
    student = _model(1)

    def teacher(**_):
        raise AssertionError("the teacher ran for a CE-only objective")

    obj = DistillObjective(DistillConfig(alpha=0.0), teacher, [0, 1], pad_id=0, eos_ids=[2], seed=0)
    loss_sum, metrics = obj(student, batch)
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = -sum(math.log(_softmax(s_logits[b, t].tolist())[int(batch["labels"][b, t + 1])]) for b, t in ASSISTANT)
    assert loss_sum.item() == pytest.approx(ce, rel=1e-6) and metrics["kd"].item() == 0.0  # CE in float32
