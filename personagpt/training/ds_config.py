"""The DeepSpeed config dict, built from the typed ``train:`` section and the launch (world size, device, dtype)."""

from __future__ import annotations

from typing import Any

import torch

from personagpt.training.batching import BatchPlan


def use_torch_adam(tcfg, device_type: str) -> bool:
    """torch's AdamW on CPU (DeepSpeed's CPU/fused Adam would JIT-compile for ~4 minutes first); DeepSpeed's
    fused Adam (GPU) or CPU Adam (offload) on GPUs."""
    return tcfg.torch_adam if tcfg.torch_adam is not None else device_type == "cpu"


def bucket_elements(num_params: int) -> int:
    """Communication bucket size: a quarter of the model, between 64K and DeepSpeed's default 500M elements (ZeRO-3
    allocates its buckets whole: DeepSpeed's defaults would hold more memory than a small model's states)."""
    return int(min(5e8, max(1 << 16, num_params // 4)))


def build_ds_config(tcfg, plan: BatchPlan, dtype: torch.dtype, device_type: str, num_params: int,
                    load_universal: bool = False) -> dict[str, Any]:
    torch_adam = use_torch_adam(tcfg, device_type)
    bucket = bucket_elements(num_params)
    zero: dict[str, Any] = {"stage": tcfg.zero_stage}
    if tcfg.zero_stage >= 1:
        zero.update(contiguous_gradients=True, overlap_comm=device_type == "cuda", reduce_scatter=True,
                    reduce_bucket_size=bucket, allgather_bucket_size=bucket)
    if tcfg.zero_stage == 3:
        zero.update(stage3_prefetch_bucket_size=bucket, stage3_max_live_parameters=int(1e9),
                    stage3_max_reuse_distance=int(1e9),
                    # parameters below this many elements stay whole on every rank: norms do, every matrix
                    # (even the tiny preset's 32x64 projections) is partitioned
                    stage3_param_persistence_threshold=1000,
                    stage3_gather_16bit_weights_on_model_save=True)
    pin = device_type == "cuda"
    if tcfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if tcfg.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    config: dict[str, Any] = {
        "train_batch_size": plan.global_batch_size,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.grad_accum_steps,
        "gradient_clipping": tcfg.grad_clip,
        "optimizer": {"type": "AdamW", "params": {
            "lr": tcfg.lr, "betas": list(tcfg.betas), "eps": tcfg.eps, "weight_decay": tcfg.weight_decay,
            "torch_adam": torch_adam}},
        "zero_optimization": zero,
        # torch's AdamW may run the offloaded optimizer step (slower than DeepSpeedCPUAdam, but no compile)
        "zero_force_ds_cpu_optimizer": not torch_adam,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    return config
