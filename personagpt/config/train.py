"""``train:`` — teacher training with DeepSpeed ZeRO (``deepspeed train/run.py``); the distill stage reuses it.

Batch sizes: ``global_batch_size = micro_batch_size x grad_accum_steps x world_size``. Give ``grad_accum_steps``
(the global batch follows from the number of ranks) or ``global_batch_size`` (the accumulation follows; it must
divide by ``micro_batch_size x world_size``), or both when they agree. The world size is only known at launch, so
that check runs there, before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from personagpt.config.base import Section

RENAMED = {"run_dir": "work_dir"}  # old key -> new key: the old one is an error naming the new one


class LoraConfig(Section):
    enabled: bool = Field(False, description="train LoRA adapters (peft) instead of all weights; merged at the end")
    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="module names (suffixes) that get adapters; each must exist in the model")


class TrainConfig(Section):
    section_name: ClassVar[str] = "train"

    # where
    dataset: Path | None = Field(
        None, description="dataset artifact (personagpt data prepare); null: runs/NAME/data, prepared from the "
                          "data: section when missing or made with another data:/model: config")
    work_dir: Path | None = Field(None, description="the stage's work folder: checkpoints, metrics, TensorBoard, "
                                                     "plots; default runs/NAME/train")
    output_dir: Path | None = Field(None, description="the teacher model artifact; default runs/NAME/teacher")
    # DeepSpeed
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage 0 (plain data parallel), 1, 2 or 3")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload: optimizer states and step on the CPU")
    offload_param: bool = Field(False, description="ZeRO-3 only: parameters live on the CPU")
    torch_adam: bool | None = Field(
        None, description="use torch's AdamW instead of DeepSpeed's compiled Adam; null: true on CPU (no 4-minute "
                          "JIT build), false on GPUs (fused Adam / CPU Adam for offload)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on GPUs that support it, float32 on CPU")
    activation_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")
    comm_shm: bool = Field(
        False, description="CPU only: let DeepSpeed JIT-build its shared-memory comm op (~2 min once; used only by "
                           "inference all-reduce, training uses gloo either way)")
    # batch
    micro_batch_size: int = Field(8, ge=1, description="samples per rank per forward/backward")
    grad_accum_steps: int | None = Field(None, ge=1, description="micro-batches per optimizer step (per rank)")
    global_batch_size: int | None = Field(None, ge=1, description="samples per optimizer step over all ranks")
    max_length: int | None = Field(None, ge=16, description="truncate samples to this many tokens; "
                                                            "default data.max_length")
    # optimizer and schedule
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine ends at lr x min_lr_ratio")
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0, description="clip the global gradient norm (0: off)")
    # length
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; default epochs x steps per epoch")
    epochs: float = Field(1.0, gt=0)
    # evaluation, checkpoints, logging
    eval_every: int = Field(50, ge=0, description="validate every N steps (0: only before and after training)")
    eval_samples: int | None = Field(256, ge=1, description="validation samples scored (null: the whole split)")
    eval_batch_size: int = Field(8, ge=1)
    save_every: int = Field(50, ge=0, description="DeepSpeed checkpoint every N steps (0: only the final one)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept (older ones are deleted)")
    log_every: int = Field(1, ge=1, description="metrics line every N steps")
    eval_before: bool = Field(True, description="score the starting model first (the base perplexity)")
    export: Literal["last", "best"] = Field(
        "last", description="the weights the artifact gets: the last step's, or those of the evaluation with the "
                            "lowest validation loss (kept in work_dir/best/; small data overfits)")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    # fault injection for tests: every rank SIGKILLs itself right after this step (no cleanup, like a crash)
    debug_sigkill_at_step: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data):
        if isinstance(data, dict):
            for old, new in RENAMED.items():
                if old in data:
                    raise ValueError(f"{cls.section_name}.{old} was renamed to {cls.section_name}.{new} (the stage's "
                                     f"work folder: checkpoints, metrics, plots)")
        return data

    @model_validator(mode="after")
    def _check(self):
        k = self.section_name  # the section these keys live in (distill: reuses them)
        if self.offload_param and self.zero_stage != 3:
            raise ValueError(f"{k}.offload_param needs {k}.zero_stage 3 (got {self.zero_stage})")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError(f"{k}.offload_optimizer needs {k}.zero_stage 1, 2 or 3 (got 0)")
        if self.global_batch_size is not None and self.global_batch_size % self.micro_batch_size:
            raise ValueError(f"{k}.global_batch_size ({self.global_batch_size}) must be a multiple of "
                             f"{k}.micro_batch_size ({self.micro_batch_size})")
        if not 0 <= self.betas[0] < 1 or not 0 <= self.betas[1] < 1:
            raise ValueError(f"{k}.betas must be in [0, 1)")
        return self
