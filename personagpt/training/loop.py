"""The step loop: forward/backward through a pluggable loss, DeepSpeed step, metrics, evaluation, checkpoints.

``loss_fn(model, batch) -> (loss_sum, metrics)`` is the hook a stage plugs in (the teacher uses
:func:`causal_lm_loss`; distillation plugs in a loss that also runs a teacher). ``model`` is the DeepSpeed engine
(call it like the module); ``batch`` has ``input_ids``, ``attention_mask``, ``labels`` on the device. The hook
returns the *sum* of its per-token loss over the batch's labelled tokens (a 0-dim tensor) and a dict of other
per-token sums to report (floats or 0-dim tensors, e.g. ``{"kd": ..., "ce": ...}``). The loop divides by the
number of labelled tokens in the whole global batch, so the gradient is the token mean of the global batch however
the samples are split over ranks and micro-steps, and reported metrics are token means too.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from personagpt.template import IGNORE_INDEX
from personagpt.training import checkpoints
from personagpt.training.batching import JobData
from personagpt.training.evaluation import distributed_perplexity

LossFn = Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, Any]]]


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Next-token cross-entropy summed over assistant tokens: the sum ``personagpt.evaluate.token_losses`` computes,
    with the LM head applied only at positions that predict a labelled token (``logits_to_keep``). Samples train on
    their last reply, so this skips most of the vocabulary projection (a fifth of SmolLM2's compute)."""
    labels = batch["labels"]
    target = labels[:, 1:]
    positions = (target != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=positions).logits
    loss_sum = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                 target[:, positions].reshape(-1), ignore_index=IGNORE_INDEX,
                                                 reduction="sum")
    return loss_sum, {}


def lr_lambda(warmup_steps: int, total_steps: int, schedule: str, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup from lr/(warmup+1) to lr, then cosine to lr*min_ratio at the last step (or constant)."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        span = max(1, total_steps - warmup_steps - 1)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def peak_memory_bytes(device) -> int:
    """Peak memory of this rank: CUDA allocator peak on GPUs, the process's max RSS on CPU."""
    if getattr(device, "type", "cpu") == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def step_seed(seed: int, step: int, rank: int) -> int:
    """Dropout (LoRA) randomness as a function of (seed, step, rank): resumed steps draw the same numbers."""
    return (seed * 1_000_003 + step * 1009 + rank) % (2 ** 63)


@dataclass
class LoopSettings:
    total_steps: int
    eval_every: int
    save_every: int
    log_every: int
    keep_last: int
    eval_batch_size: int
    eval_before: bool
    seed: int
    ckpt_dir: Path
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)  # saved with every checkpoint (resume checks)
    debug_sigkill_at_step: int | None = None
    title: str = "training"


@dataclass
class LoopState:
    """What a checkpoint carries besides DeepSpeed's own states (it goes into trainer_state.json)."""
    step: int = 0
    tokens_seen: int = 0
    label_tokens_seen: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    last_train_loss: float | None = None
    wall_seconds: float = 0.0  # wall time of the run so far, over every process that worked on it (resumes)
    evals: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """``data``: the job's data (``.train`` batches, ``.val`` encoded validation samples, ``.tokenizer``)."""

    def __init__(self, engine, data: JobData, dist, settings: LoopSettings, loss_fn: LossFn = causal_lm_loss,
                 logger=None, t_start: float | None = None, best=None):
        self.engine, self.data, self.val, self.tok, self.dist = engine, data.train, data.val, data.tokenizer, dist
        self.s, self.logger, self.loss_fn = settings, logger, loss_fn
        self.best = best  # personagpt.training.best.BestWeights (export: best), or None
        self.state = LoopState()
        self.t_start = t_start or time.time()
        self.wall_before = 0.0

    def wall_seconds(self) -> float:
        return self.wall_before + time.time() - self.t_start

    # --- pieces -------------------------------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        r = distributed_perplexity(self.engine.module, self.tok, self.val, self.s.eval_batch_size, self.dist.rank,
                                   self.dist.world_size, self.dist.device)
        dt = time.perf_counter() - t0
        self.state.eval_seconds += dt
        rec = {"kind": "eval", "step": step, "loss": r["loss"], "ppl": r["ppl"], "tokens": r["tokens"],
               "samples": r["samples"], "seconds": round(dt, 3)}
        self.state.evals.append(rec)
        if self.logger:
            self.logger.log(rec)
        if self.best is not None:
            self.best.consider(rec)
        return rec

    def save(self, step: int) -> None:
        t0 = time.perf_counter()
        self.state.step = step
        self.state.wall_seconds = self.wall_seconds()
        state = {**self.s.checkpoint_meta, **self.state.__dict__}
        checkpoints.save(self.engine, self.s.ckpt_dir, step, state, self.s.keep_last, self.dist.is_main)
        self.state.checkpoint_seconds += time.perf_counter() - t0

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step (``grad_accum_steps`` micro-batches on every rank)."""
        engine, dev = self.engine, self.dist.device
        torch.manual_seed(step_seed(self.s.seed, step, self.dist.rank))
        label_tokens = self.data.sampler.label_tokens(step)
        plan = self.data.sampler.plan
        scale = plan.world_size * plan.grad_accum_steps / label_tokens
        lr = engine.get_lr()[0]
        t0 = time.perf_counter()
        sums: dict[str, float] = {"loss": 0.0}
        for mb in self.data.step_batches(step, self.dist.rank):
            mb = {k: v.to(dev) for k, v in mb.items()}
            loss_sum, metrics = self.loss_fn(engine, mb)
            engine.backward(loss_sum * scale)
            engine.step()
            sums["loss"] += float(loss_sum.detach())
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        if plan.world_size > 1:
            torch.distributed.all_reduce(totals)
        dt = time.perf_counter() - t0
        tokens = self.data.step_tokens(step)
        self.state.train_seconds += dt
        self.state.tokens_seen += tokens
        self.state.label_tokens_seen += label_tokens
        rec = {"kind": "train", "step": step + 1, "epoch": round(self.data.sampler.epoch_of(step + 1), 4)}
        rec.update({k: v / label_tokens for k, v in zip(keys, totals.tolist(), strict=True)})
        grad_norm = engine.get_global_grad_norm()
        rec.update(lr=lr, grad_norm=float(grad_norm) if grad_norm is not None else None, tokens=tokens,
                   label_tokens=label_tokens, step_seconds=round(dt, 4), tokens_per_s=round(tokens / dt, 1))
        self.state.last_train_loss = rec["loss"]
        return rec

    # --- the loop -----------------------------------------------------------------------------------------------
    def fit(self, start_step: int = 0, resumed_state: dict[str, Any] | None = None) -> LoopState:
        s, engine = self.s, self.engine
        if resumed_state:
            for k in LoopState.__dataclass_fields__:
                if k in resumed_state:
                    setattr(self.state, k, resumed_state[k])
            self.wall_before = float(resumed_state.get("wall_seconds", 0.0))
        if self.best is not None:
            self.best.restore(start_step)
        self.state.step = start_step
        engine.train()
        if start_step == 0 and s.eval_before:
            self.evaluate(0)
        bar = tqdm(total=s.total_steps, initial=start_step, desc=s.title, unit="step", disable=not self.dist.is_main,
                   dynamic_ncols=True)
        try:
            for step in range(start_step, s.total_steps):
                rec = self.train_step(step)
                done = step + 1
                self.state.step = done
                if self.logger and (done % s.log_every == 0 or done == s.total_steps):
                    self.logger.log(rec)
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['tokens_per_s']:.0f}")
                last = done == s.total_steps
                if last or (s.eval_every and done % s.eval_every == 0):
                    ev = self.evaluate(done)
                    bar.write(f"step {done}: val loss {ev['loss']:.4f} ppl {ev['ppl']:.2f}") if self.dist.is_main \
                        else None
                if last or (s.save_every and done % s.save_every == 0):
                    self.save(done)
                if s.debug_sigkill_at_step == done:
                    bar.close()
                    os.kill(os.getpid(), signal.SIGKILL)
        finally:
            bar.close()
        return self.state
