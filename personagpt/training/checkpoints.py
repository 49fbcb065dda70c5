"""DeepSpeed checkpoints: every N steps, keep the last K, resume exactly (also after SIGKILL, also on another
number of ranks).

Layout: ``<work_dir>/checkpoints/step00000040/`` (DeepSpeed's files + ``trainer_state.json``) and ``latest``.
A checkpoint counts only once ``trainer_state.json`` is written, which happens after every rank finished its
DeepSpeed files; ``latest`` is replaced atomically after that. A run killed mid-save therefore resumes from the
previous complete checkpoint.

On a different world size, ZeRO-1/2/3 checkpoints (optimizer state partitioned per rank) are converted once to a
DeepSpeed *universal checkpoint* (``ds_to_universal``, next to the original as ``stepNNNNNNNN_universal``) and
loaded with ``checkpoint.load_universal``; ZeRO-0 checkpoints hold full states and load on any world size.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personagpt.errors import ArtifactError

STATE_FILE = "trainer_state.json"
TAG_RE = re.compile(r"^step(\d{8})$")


def tag_for(step: int) -> str:
    return f"step{step:08d}"


@dataclass(frozen=True)
class CheckpointInfo:
    dir: Path  # the checkpoints folder
    tag: str
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def path(self) -> Path:
        return self.dir / self.tag


def complete_checkpoints(ckpt_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints (those with a trainer_state.json), oldest first."""
    out = []
    if not ckpt_dir.is_dir():
        return out
    for p in ckpt_dir.iterdir():
        if p.is_dir() and TAG_RE.match(p.name) and (p / STATE_FILE).is_file():
            try:
                state = json.loads((p / STATE_FILE).read_text())
            except json.JSONDecodeError:
                continue
            out.append(CheckpointInfo(ckpt_dir, p.name, state))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(ckpt_dir: Path) -> CheckpointInfo | None:
    """The checkpoint ``latest`` names when it is complete, else the newest complete one."""
    done = complete_checkpoints(ckpt_dir)
    latest = ckpt_dir / "latest"
    if latest.is_file():
        tag = latest.read_text().strip()
        for c in done:
            if c.tag == tag:
                return c
    return done[-1] if done else None


def save(engine, ckpt_dir: Path, step: int, state: dict[str, Any], keep_last: int, is_main: bool) -> CheckpointInfo:
    """Collective: every rank writes its DeepSpeed shards, then rank 0 marks the checkpoint complete."""
    import torch.distributed as dist

    tag = tag_for(step)
    # universal_checkpoint_info: what ds_to_universal needs to re-partition the ZeRO states later (no tensor
    # parallelism here, so nothing beyond its presence)
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"personagpt": state,
                                                                  "universal_checkpoint_info": {}},
                           save_latest=False)
    dist.barrier()
    if is_main:
        tmp = ckpt_dir / tag / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, ckpt_dir / tag / STATE_FILE)
        tmp = ckpt_dir / "latest.tmp"
        tmp.write_text(tag)
        os.replace(tmp, ckpt_dir / "latest")
        prune(ckpt_dir, keep_last, current=tag)
    dist.barrier()
    return CheckpointInfo(ckpt_dir, tag, state)


def prune(ckpt_dir: Path, keep_last: int, current: str) -> None:
    """Keep the newest ``keep_last`` complete checkpoints; drop older ones, their universal conversions, and
    incomplete leftovers of a killed run."""
    done = complete_checkpoints(ckpt_dir)
    keep = {c.tag for c in done[-keep_last:]} | {current}
    for p in ckpt_dir.iterdir():
        if not p.is_dir():
            continue
        base = p.name.removesuffix("_universal")
        if TAG_RE.match(base) and base not in keep:
            shutil.rmtree(p, ignore_errors=True)


def needs_universal(info: CheckpointInfo, world_size: int) -> bool:
    return int(info.state["world_size"]) != world_size and int(info.state["zero_stage"]) > 0


def universal_tag(info: CheckpointInfo) -> str:
    return info.tag + "_universal"


def convert_to_universal(info: CheckpointInfo) -> str:
    """ds_to_universal on rank 0 (idempotent). Returns the universal tag; DeepSpeed reads it via
    ``latest_universal``."""
    out = info.dir / universal_tag(info)
    if not (out / "zero").is_dir():
        import argparse

        from deepspeed.checkpoint import ds_to_universal

        tmp = info.dir / (universal_tag(info) + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        args = argparse.Namespace(input_folder=str(info.path), output_folder=str(tmp), num_extract_workers=1,
                                  num_merge_workers=1, keep_temp_folder=False, strict=True,
                                  inject_missing_state=False)
        ds_to_universal.main(args)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    (info.dir / "latest_universal").write_text(universal_tag(info))
    return universal_tag(info)


def load(engine, info: CheckpointInfo, universal: bool) -> dict[str, Any]:
    """Load module, optimizer, LR scheduler states; returns the trainer state saved with the checkpoint."""
    tag = universal_tag(info) if universal else info.tag
    path, client = engine.load_checkpoint(str(info.dir), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None:
        raise ArtifactError(f"{info.dir / tag}: DeepSpeed could not load this checkpoint")
    return info.state
