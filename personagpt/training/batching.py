"""Deterministic data order that resumes exactly, on any number of ranks.

The order is a pure function of ``(seed, optimizer step, global batch size)``: epoch ``e`` is a seeded permutation
of the training samples, and optimizer step ``s`` takes the next ``global_batch_size`` of them. Resuming at step
``s`` therefore needs no sampler state, and a resume on a different number of ranks sees the same samples in the
same steps (only their split over ranks differs).

Within a step the global batch is sorted by length and cut into micro-batches (less padding); micro-batch ``j``
runs on rank ``j % world_size`` at accumulation step ``j // world_size``, so ranks working at the same time get
similar lengths. Every rank knows the whole global batch, so each can compute the number of labelled tokens of
the global batch locally: the step loop divides summed token losses by it, and the gradient is the token mean of
the global batch whatever the split over ranks and micro-steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personagpt.errors import ConfigError
from personagpt.evaluate import collate
from personagpt.template import IGNORE_INDEX, encode_sample


def encode_samples(tokenizer, samples: Sequence[dict], label_turns: str, max_length: int | None) -> list[dict]:
    """Token ids and label masks; samples left without a predictable assistant token after truncation are dropped."""
    out = []
    for s in samples:
        enc = encode_sample(tokenizer, s["messages"], label_turns, max_length)
        n_label = sum(1 for x in enc["labels"][1:] if x != IGNORE_INDEX)
        if n_label:
            out.append({**enc, "n_label": n_label, "id": s.get("id")})
    return out


@dataclass(frozen=True)
class BatchPlan:
    world_size: int
    micro_batch_size: int
    grad_accum_steps: int
    section: str = "train"  # the config section the batch keys came from (named in errors)

    @property
    def global_batch_size(self) -> int:
        return self.world_size * self.micro_batch_size * self.grad_accum_steps

    @classmethod
    def resolve(cls, tcfg, world_size: int, section: str = "train") -> BatchPlan:
        """Accumulation steps from ``grad_accum_steps`` / ``global_batch_size`` and the launch's world size."""
        micro, accum, glob = tcfg.micro_batch_size, tcfg.grad_accum_steps, tcfg.global_batch_size
        per_step = micro * world_size
        if glob is not None:
            if glob % per_step:
                raise ConfigError(
                    f"{section}.global_batch_size ({glob}) must be divisible by {section}.micro_batch_size ({micro}) x "
                    f"world size ({world_size}) = {per_step}")
            if accum is not None and accum != glob // per_step:
                raise ConfigError(
                    f"{section}.grad_accum_steps ({accum}) disagrees with {section}.global_batch_size ({glob}) = "
                    f"micro_batch_size ({micro}) x world size ({world_size}) x {glob // per_step}")
            accum = glob // per_step
        return cls(world_size, micro, accum or 1, section)


class GlobalBatchSampler:
    def __init__(self, lengths: Sequence[int], n_labels: Sequence[int], plan: BatchPlan, seed: int):
        self.lengths = list(lengths)
        self.n_labels = list(n_labels)
        self.plan = plan
        self.seed = seed
        self.n = len(self.lengths)
        self.steps_per_epoch = self.n // plan.global_batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{plan.section}.global_batch_size: the global batch ({plan.global_batch_size} = micro_batch_size "
                f"{plan.micro_batch_size} x grad_accum_steps {plan.grad_accum_steps} x world size {plan.world_size}) "
                f"is larger than the training split ({self.n} samples)")
        self._perm_epoch, self._perm = None, None

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
        return self._perm

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def global_indices(self, step: int) -> list[int]:
        """The samples of optimizer step ``step`` (0-based), over all ranks."""
        epoch, k = divmod(step, self.steps_per_epoch)
        g = self.plan.global_batch_size
        return self._permutation(epoch)[k * g:(k + 1) * g]

    def micro_indices(self, step: int, rank: int) -> list[list[int]]:
        """This rank's micro-batches of step ``step``: ``grad_accum_steps`` lists of ``micro_batch_size`` indices."""
        idx = sorted(self.global_indices(step), key=lambda i: (self.lengths[i], i))
        m, w = self.plan.micro_batch_size, self.plan.world_size
        chunks = [idx[j * m:(j + 1) * m] for j in range(len(idx) // m)]
        return [chunks[a * w + rank] for a in range(self.plan.grad_accum_steps)]

    def label_tokens(self, step: int) -> int:
        return sum(self.n_labels[i] for i in self.global_indices(step))


@dataclass
class JobData:
    """The data of a training job: the dataset artifact, its tokenizer, the training batches and the encoded
    validation samples."""

    dataset_dir: Path
    dataset_hash: str | None
    tokenizer: Any
    train: TrainData
    val: list[dict]


class TrainData:
    """Encoded training samples + sampler: ``step_batches(step, rank)`` gives the rank's collated micro-batches."""

    def __init__(self, encoded: list[dict], plan: BatchPlan, seed: int, pad_id: int):
        self.encoded = encoded
        self.pad_id = pad_id
        self.sampler = GlobalBatchSampler([len(e["input_ids"]) for e in encoded], [e["n_label"] for e in encoded],
                                          plan, seed)

    def step_batches(self, step: int, rank: int) -> list[dict[str, torch.Tensor]]:
        return [collate([self.encoded[i] for i in mb], self.pad_id) for mb in self.sampler.micro_indices(step, rank)]

    def step_tokens(self, step: int) -> int:
        """Input tokens (not padding) of the whole global batch of ``step``."""
        return sum(self.sampler.lengths[i] for i in self.sampler.global_indices(step))
