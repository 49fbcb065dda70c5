"""Process setup for every launcher: ``deepspeed``, ``torchrun``, a multi-node hostfile, or plain ``python``.

``prepare_process_env()`` must run before torch is imported (OpenMP reads its thread count once):

- one OpenMP thread per core share: ``cpu_count // ranks on this node`` unless ``OMP_NUM_THREADS`` is set
  (2 ranks on 2 cores oversubscribe 10x otherwise);
- plain ``python train/run.py`` becomes a one-rank job (``RANK``/``WORLD_SIZE``/``MASTER_*`` on 127.0.0.1), so the
  same code path runs everywhere.

``init_distributed()`` starts DeepSpeed's communication backend (gloo on CPU, nccl on GPUs) without JIT-building
DeepSpeed's shared-memory op on CPU: that op (a ~2 minute compile on first use) only serves inference all-reduce;
training collectives go through the torch process group either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from personagpt.network import free_port


def local_world_size() -> int:
    for key in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"):  # torchrun, deepspeed launcher
        if os.environ.get(key, "").isdigit():
            return max(1, int(os.environ[key]))
    return 1


def expected_world_size() -> int:
    """Ranks in the job, from the launcher's environment (before the process group exists)."""
    for key in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def check_accelerate_launch(tcfg, section: str) -> None:
    """``accelerate launch --use_deepspeed`` is a launcher here: it starts the ranks and sets up the rendezvous, and
    the DeepSpeed config comes from the ``train:``/``distill:`` section, as with every launcher. Its own DeepSpeed
    flags (exported as ``ACCELERATE_DEEPSPEED_*``) must therefore agree with the section, or the run stops before
    anything is written, naming both."""
    from personagpt.errors import ConfigError

    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return
    if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        raise ConfigError(f"accelerate launch --deepspeed_config_file {env['ACCELERATE_DEEPSPEED_CONFIG_FILE']}: "
                          f"this entry builds the DeepSpeed config from the {section}: section; set "
                          f"{section}.zero_stage / {section}.offload_* instead")
    checks = (("ACCELERATE_DEEPSPEED_ZERO_STAGE", "--zero_stage", "zero_stage", str(tcfg.zero_stage)),
              ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "--offload_optimizer_device", "offload_optimizer",
               "cpu" if tcfg.offload_optimizer else "none"),
              ("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "--offload_param_device", "offload_param",
               "cpu" if tcfg.offload_param else "none"))
    for var, flag, key, ours in checks:
        theirs = env.get(var)
        if theirs is not None and theirs.lower() != ours:
            raise ConfigError(f"accelerate launch {flag} {theirs} disagrees with {section}.{key} "
                              f"({getattr(tcfg, key)}); the DeepSpeed config comes from the {section}: section")


def prepare_process_env() -> None:
    """Environment defaults; call before ``import torch``."""
    import warnings

    # torch.distributed deprecation notices DeepSpeed triggers on every collective: noise in every rank's log
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.distributed\..* is deprecated")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # DeepSpeed 0.19's op builder parses TORCH_CUDA_ARCH_LIST as plain numbers and crashes on arch-specific
    # entries such as "9.0a" (set in NVIDIA's Hopper images) when it JIT-builds fused Adam: keep the base arch.
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if arch:
        import re

        os.environ["TORCH_CUDA_ARCH_LIST"] = re.sub(r"(\d+\.\d+)[a-z]\b", r"\1", arch)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not os.environ.get("OMP_NUM_THREADS"):
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // local_world_size()))
    if "RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ and "PMI_RANK" not in os.environ:
        # plain `python train/run.py`: a one-rank job on this machine
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: object  # torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(comm_shm: bool = False, timeout_minutes: float = 30.0) -> Dist:
    """Initialise torch.distributed through DeepSpeed (idempotent) and return this process's place in the job."""
    import datetime

    import deepspeed
    import deepspeed.ops
    import torch
    from deepspeed.accelerator import get_accelerator

    from personagpt.device import device as pick_device

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if get_accelerator().device_name() == "cpu" and not comm_shm:
        # DeepSpeed's TorchBackend JIT-builds its shared-memory op whenever the op probes as compatible. Marking it
        # incompatible (DeepSpeed documents that edits to this dict persist) keeps gloo for everything.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(timeout=datetime.timedelta(minutes=timeout_minutes), verbose=False)
    dev = pick_device()
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return Dist(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)), device=dev)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def main_first(dist_info: Dist, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 only, then share its result (or its user error) with every rank.

    A user error on rank 0 is raised on every rank, so all of them exit with code 2 instead of the others waiting
    at a barrier forever."""
    import torch.distributed as tdist

    from personagpt.errors import PersonaGPTError

    result, error = None, None
    if dist_info.is_main:
        try:
            result = fn(*args, **kwargs)
        except PersonaGPTError as e:
            error = (type(e), str(e))
    if dist_info.world_size > 1:
        box = [(result, error)]
        tdist.broadcast_object_list(box, src=0)
        result, error = box[0]
    if error is not None:
        raise error[0](error[1])
    return result
