"""Distillation losses on next-token distributions, averaged over assistant (labelled) positions only.

All divergences take student and teacher logits ``[..., V]`` at temperature ``T`` and a boolean mask of the
positions to score. Definitions (p = teacher, q = student, both softened by T):

- forward KL        KL(p || q)                        — mode covering (classic Hinton KD)
- reverse KL        KL(q || p)                        — mode seeking (MiniLLM)
- generalized JSD   β·KL(p || m) + (1-β)·KL(q || m),  m = β·p + (1-β)·q   (GKD, Agarwal et al. 2024).
                    JSD(β)/β → KL(p||q) as β → 0 and JSD(β)/(1-β) → KL(q||p) as β → 1; like TRL's GKD, β = 0
                    and β = 1 are defined as forward and reverse KL exactly.
- skew KL           KL(p || a·p + (1-a)·q)            (DistiLLM, Ko et al. 2024)
- skew reverse KL   KL(q || a·q + (1-a)·p)

Scaled by T² so gradients keep their size when T changes (Hinton et al. 2015).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOSSES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) per position from log-probabilities (sum over the vocabulary)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, w: float) -> torch.Tensor:
    """log(w·a + (1-w)·b), computed stably."""
    return torch.logsumexp(torch.stack([log_a + math.log(w), log_b + math.log(1 - w)]), dim=0)


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward_kl",
               temperature: float = 1.0, beta: float = 0.5, skew: float = 0.1) -> torch.Tensor:
    """Per-position divergence ``[...]`` (not reduced, not T²-scaled)."""
    def up(x):
        return (x if x.dtype == torch.float64 else x.float())  # bf16/fp16 logits: compute in fp32
    log_q = F.log_softmax(up(student_logits) / temperature, dim=-1)
    log_p = F.log_softmax(up(teacher_logits) / temperature, dim=-1)
    if kind == "forward_kl":
        return _kl(log_p, log_q)
    if kind == "reverse_kl":
        return _kl(log_q, log_p)
    if kind == "jsd":
        if beta <= 0:
            return _kl(log_p, log_q)
        if beta >= 1:
            return _kl(log_q, log_p)
        log_m = _log_mix(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)
    if kind == "skew_kl":
        return _kl(log_p, _log_mix(log_p, log_q, skew)) if skew > 0 else _kl(log_p, log_q)
    if kind == "skew_reverse_kl":
        return _kl(log_q, _log_mix(log_q, log_p, skew)) if skew > 0 else _kl(log_q, log_p)
    raise ValueError(f"unknown distillation loss {kind!r} (one of {', '.join(LOSSES)})")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


KD_POSITIONS = ("assistant", "all")


def kd_mask(labels: torch.Tensor, attention_mask: torch.Tensor | None, positions: str = "assistant",
            ignore_index: int = -100) -> torch.Tensor:
    """``[B, T-1]`` bool: the positions whose next-token distribution the KD term compares. Position ``t`` predicts
    token ``t+1``. ``assistant``: the next token is a labelled (persona) token; ``all``: the next token is a real
    token (not padding), so prompts, the other speaker and the chat markup count too."""
    if positions == "assistant":
        return labels[:, 1:] != ignore_index
    if positions == "all":
        if attention_mask is None:
            return torch.ones_like(labels[:, 1:], dtype=torch.bool)
        real = attention_mask.bool()
        return real[:, 1:] & real[:, :-1]
    raise ValueError(f"unknown KD positions {positions!r} (one of {', '.join(KD_POSITIONS)})")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, kind: str,
            temperature: float, beta: float = 0.5, skew: float = 0.1, ignore_index: int = -100,
            positions: str = "assistant", attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """T²-scaled divergence between next-token distributions, the mean over the KD positions (:func:`kd_mask`)."""
    mask = kd_mask(labels, attention_mask, positions, ignore_index)
    d = divergence(student_logits[:, :-1], teacher_logits[:, :-1], kind, temperature, beta, skew)
    return masked_mean(d, mask) * temperature ** 2


def hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor,
                kind: str = "cosine") -> torch.Tensor:
    """Hidden-state matching on real (non-padding) tokens: 1 - cosine similarity, or mean squared error.
    The student's states must already be projected to the teacher's width."""
    mask = attention_mask.bool()
    if kind == "cosine":
        per_tok = 1 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    elif kind == "mse":
        per_tok = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(-1)
    else:
        raise ValueError(f"unknown hidden-state loss {kind!r} (cosine or mse)")
    return masked_mean(per_tok, mask)
