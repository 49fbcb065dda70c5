"""Distillation divergences against hand-computed values, their limits, T² scaling, and assistant-only masking."""

import math

import pytest
import torch

from distill.losses import LOSSES, divergence, hidden_loss, kd_loss

P = [0.5, 0.5]     # teacher
Q = [0.25, 0.75]   # student


def logits(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


def mix(a, b, w):
    return [w * x + (1 - w) * y for x, y in zip(a, b, strict=True)]


@pytest.mark.parametrize("kind, expected", [
    ("forward_kl", 0.5 * math.log(2) + 0.5 * math.log(2 / 3)),                      # 0.143841
    ("reverse_kl", 0.25 * math.log(0.5) + 0.75 * math.log(1.5)),                      # 0.130812
    ("jsd", 0.5 * kl(P, mix(P, Q, 0.5)) + 0.5 * kl(Q, mix(P, Q, 0.5))),                # 0.033822
    ("skew_kl", kl(P, mix(P, Q, 0.1))),                                               # 0.113137
    ("skew_reverse_kl", kl(Q, mix(Q, P, 0.1))),
])
def test_hand_computed_values(kind, expected):
    got = divergence(logits(Q), logits(P), kind, temperature=1.0, beta=0.5, skew=0.1).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_literal_values():
    assert divergence(logits(Q), logits(P), "forward_kl").item() == pytest.approx(0.143841, abs=1e-6)
    assert divergence(logits(Q), logits(P), "reverse_kl").item() == pytest.approx(0.130812, abs=1e-6)
    assert divergence(logits(Q), logits(P), "jsd", beta=0.5).item() == pytest.approx(0.033822, abs=1e-6)


def test_jsd_limits_are_forward_and_reverse_kl():
    torch.manual_seed(0)
    s, t = torch.randn(4, 7, 50, dtype=torch.float64), torch.randn(4, 7, 50, dtype=torch.float64)
    fkl, rkl = divergence(s, t, "forward_kl"), divergence(s, t, "reverse_kl")
    eps = 1e-5
    assert torch.allclose(divergence(s, t, "jsd", beta=eps) / eps, fkl, rtol=1e-3)
    assert torch.allclose(divergence(s, t, "jsd", beta=1 - eps) / eps, rkl, rtol=1e-3)
    assert torch.equal(divergence(s, t, "jsd", beta=0.0), fkl)
    assert torch.equal(divergence(s, t, "jsd", beta=1.0), rkl)
    # skew 0 is plain KL; every divergence is zero when the distributions agree and positive otherwise
    assert torch.allclose(divergence(s, t, "skew_kl", skew=0.0), fkl)
    for kind in LOSSES:
        assert divergence(t, t, kind).abs().max().item() < 1e-12
        assert (divergence(s, t, kind) > 0).all()


def test_temperature_softens_and_t2_scaling():
    s, t = logits(Q).view(1, 1, 2).repeat(1, 2, 1), logits(P).view(1, 1, 2).repeat(1, 2, 1)
    labels = torch.tensor([[-100, 5]])  # position 0 predicts the labelled token at 1
    T = 2.0
    qs = torch.softmax(logits(Q) / T, -1).tolist()
    ps = torch.softmax(logits(P) / T, -1).tolist()
    assert kd_loss(s, t, labels, "forward_kl", T).item() == pytest.approx(kl(ps, qs) * T * T, rel=1e-6)


def test_masking_excludes_non_assistant_tokens():
    torch.manual_seed(0)
    s, t = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    labels = torch.full((2, 6), -100)
    labels[0, 3:5] = 1   # assistant tokens at 3, 4 -> predicted from positions 2, 3
    labels[1, 5] = 2     # predicted from position 4
    base = kd_loss(s, t, labels, "forward_kl", 1.0)
    expected = torch.stack([divergence(s[0, 2], t[0, 2]), divergence(s[0, 3], t[0, 3]),
                            divergence(s[1, 4], t[1, 4])]).mean()
    assert base.item() == pytest.approx(expected.item(), rel=1e-5)
    s2 = s.clone()
    s2[0, 0, 0] += 100.0   # prompt positions: no effect
    s2[1, 5, 1] -= 50.0    # the last position predicts nothing
    assert kd_loss(s2, t, labels, "forward_kl", 1.0).item() == pytest.approx(base.item(), rel=1e-6)
    s2[0, 2, 0] += 3.0     # a scored position: changes the loss
    assert kd_loss(s2, t, labels, "forward_kl", 1.0).item() != pytest.approx(base.item(), rel=1e-3)


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown distillation loss 'kl2'"):
        divergence(logits(Q), logits(P), "kl2")


def test_hidden_losses():
    h = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.long)
    assert hidden_loss(h, h, mask, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert hidden_loss(h, 3 * h, mask, "cosine").item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    assert hidden_loss(h, -h, mask, "cosine").item() == pytest.approx(2.0, abs=1e-6)
    assert hidden_loss(h, h + 1, mask, "mse").item() == pytest.approx(1.0, abs=1e-6)
    mask[:, 3:] = 0
    g = h.clone()
    g[:, 3:] += 10  # padding positions are ignored
    assert hidden_loss(h, g, mask, "mse").item() == pytest.approx(0.0, abs=1e-6)
