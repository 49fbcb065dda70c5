"""The distillation objective the training loop calls each micro-batch: teacher forward (frozen, no gradients),
student forward, ``alpha·KD + (1-alpha)·CE`` (CE on assistant tokens; KD on assistant tokens or on every real
token, ``kd_positions``, as a mean over its positions), optional hidden-state matching, and an optional
on-policy share λ of micro-batches whose replies the student samples itself (GKD).

The loop expects per-token *sums* over the micro-batch's labelled tokens (it divides by the global batch's count).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from distill.losses import divergence, hidden_loss, kd_mask
from personagpt.template import IGNORE_INDEX


class DistillObjective:
    def __init__(self, dcfg, teacher, keep_layers: list[int], pad_id: int, eos_ids: list[int], seed: int,
                 synced_gpus: bool = False, hidden_channels: list[int] | None = None):
        """``hidden_channels``: the teacher's residual channels a width-pruned student kept (hidden-state matching
        compares those; None: the leading ones)."""
        self.c, self.teacher, self.keep = dcfg, teacher, keep_layers
        self.hidden_channels = hidden_channels
        self._hidden_index = None
        self.pad_id, self.eos_ids, self.synced_gpus = pad_id, eos_ids, synced_gpus
        self.rng = random.Random(seed)
        self.on_policy_batches = 0
        self.batches = 0

    # --- on-policy (GKD): the student writes the reply, the teacher grades it -----------------------------------
    @torch.no_grad()
    def student_rollout(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, labels = batch["input_ids"], batch["labels"]
        prompts = []
        for i in range(ids.size(0)):
            lab = (labels[i] != IGNORE_INDEX).nonzero()
            start = int(lab[0]) if len(lab) else int(batch["attention_mask"][i].sum())
            prompts.append(ids[i, :start])
        width = max(len(p) for p in prompts)
        left = torch.full((len(prompts), width), self.pad_id, dtype=ids.dtype, device=ids.device)
        mask = torch.zeros_like(left)
        for i, p in enumerate(prompts):
            left[i, width - len(p):] = p
            mask[i, width - len(p):] = 1
        module = getattr(model, "module", model)
        was_training = module.training
        module.eval()
        out = module.generate(input_ids=left, attention_mask=mask, do_sample=True,
                              temperature=self.c.on_policy_temperature, top_k=0, top_p=1.0,
                              max_new_tokens=self.c.on_policy_max_new_tokens, eos_token_id=self.eos_ids,
                              pad_token_id=self.pad_id, synced_gpus=self.synced_gpus)
        if was_training:
            module.train()
        gen = out[:, width:]
        rows, row_labels = [], []
        for i, p in enumerate(prompts):
            g = gen[i].tolist()
            for k, t in enumerate(g):  # keep the reply up to and including its first end-of-turn token
                if t in self.eos_ids:
                    g = g[: k + 1]
                    break
            g = [t for t in g if t != self.pad_id] or [self.eos_ids[0]]
            rows.append(p.tolist() + g)
            row_labels.append([IGNORE_INDEX] * len(p) + g)
        n = max(len(r) for r in rows)
        new_ids = torch.full((len(rows), n), self.pad_id, dtype=ids.dtype, device=ids.device)
        new_labels = torch.full_like(new_ids, IGNORE_INDEX)
        new_mask = torch.zeros_like(new_ids)
        for i, (r, lab) in enumerate(zip(rows, row_labels, strict=True)):
            new_ids[i, :len(r)] = torch.tensor(r, device=ids.device)
            new_labels[i, :len(r)] = torch.tensor(lab, device=ids.device)
            new_mask[i, :len(r)] = 1
        return {"input_ids": new_ids, "attention_mask": new_mask, "labels": new_labels}

    # --- the loss ------------------------------------------------------------------------------------------------
    def _teacher_channels(self, t_h: torch.Tensor, width: int) -> torch.Tensor:
        """The teacher's hidden states on the student's channels (the kept ones of a width-pruned student)."""
        if t_h.size(-1) == width:
            return t_h
        if self.hidden_channels is None:
            return t_h[..., :width]
        if self._hidden_index is None or self._hidden_index.device != t_h.device:
            self._hidden_index = torch.tensor(self.hidden_channels, dtype=torch.long, device=t_h.device)
        return t_h.index_select(-1, self._hidden_index)

    def scored_positions(self, labels: torch.Tensor, attention_mask: torch.Tensor, with_kd: bool = True):
        """The KD positions (none without ``with_kd``) and the CE (label) positions ``[B, T-1]``, and the sequence
        positions where either is true in some row: the only ones whose logits the loss needs (``logits_to_keep``)."""
        ce = labels[:, 1:] != IGNORE_INDEX
        kd = kd_mask(labels, attention_mask, self.c.kd_positions, IGNORE_INDEX) if with_kd else torch.zeros_like(ce)
        return kd, ce, (kd | ce).any(dim=0).nonzero().squeeze(1)

    def kd_sum(self, s_logits: torch.Tensor, t_logits: torch.Tensor, kd: torch.Tensor,
               n_label: torch.Tensor) -> torch.Tensor:
        """T²·(mean divergence over the micro-batch's KD positions ``kd``) x its label-token count: a per-token mean
        expressed as a sum like CE's, so that the loop's division by the global batch's label tokens leaves KD and
        CE on one scale whichever positions KD covers (with ``kd_positions: assistant`` this is exactly the sum over
        the label positions). Only the KD positions reach the vocabulary-wide softmax."""
        c = self.c
        d = divergence(s_logits[kd], t_logits[kd], c.loss, c.temperature, c.beta, c.skew)
        return d.sum() / kd.sum().clamp_min(1) * n_label.to(d.dtype) * c.temperature ** 2

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.c
        self.batches += 1
        on_policy = c.on_policy_fraction > 0 and self.rng.random() < c.on_policy_fraction
        if on_policy:
            batch = self.student_rollout(model, batch)
            self.on_policy_batches += 1
        want_hidden = c.hidden_weight > 0
        # on-policy replies have no ground truth: only the teacher's judgement counts there
        alpha = 1.0 if on_policy else c.alpha
        # CE only (alpha 0, no hidden matching): the teacher is not run at all, as a plain fine-tune would not
        use_teacher = alpha > 0 or want_hidden
        labels = batch["labels"]
        kd, ce, keep = self.scored_positions(labels, batch["attention_mask"], with_kd=use_teacher)
        # the LM heads only where the loss looks (with kd_positions assistant: the replies, ~11% of the tokens)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=want_hidden, logits_to_keep=keep)
        kd, ce, target = kd[:, keep], ce[:, keep], labels[:, 1:][:, keep]
        n_label = ce.sum()
        ce_sum = torch.nn.functional.cross_entropy(out.logits[ce].float(), target[ce], reduction="sum")
        t_out = None
        kd_sum = torch.zeros((), device=ce_sum.device)
        if use_teacher:
            with torch.no_grad():
                t_out = self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     output_hidden_states=want_hidden, logits_to_keep=keep)
            kd_sum = self.kd_sum(out.logits, t_out.logits, kd, n_label)
        loss_sum = alpha * kd_sum + (1 - alpha) * ce_sum
        n_kd = kd.sum()
        # the loop reports per-label-token means: this one is the KD positions per label token
        metrics = {"kd": kd_sum.detach(), "ce": ce_sum.detach(), "kd_positions": n_kd.detach()}
        if want_hidden:
            h_sum = 0.0
            for i, t_layer in enumerate(self.keep):
                s_h = out.hidden_states[i + 1]
                t_h = self._teacher_channels(t_out.hidden_states[t_layer + 1], s_h.size(-1))
                h_sum = h_sum + hidden_loss(s_h, t_h, batch["attention_mask"], c.hidden_loss)
            h_sum = h_sum / len(self.keep) * n_label  # a per-token mean, expressed as a sum like the others
            loss_sum = loss_sum + c.hidden_weight * h_sum
            metrics["hidden"] = h_sum.detach()
        return loss_sum, metrics
