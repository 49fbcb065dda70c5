"""`accelerate launch` (its DeepSpeed plugin) as a launcher of train/run.py beside deepspeed, torchrun and python:
the ranks it starts form one job, and its own DeepSpeed flags must agree with the train: section (the DeepSpeed
config comes from there), or the run stops before anything is written, naming both."""

from __future__ import annotations

import json

import pytest

from fixtures.artifacts import TINY, TINY_OVERRIDES
from fixtures.train import train

FAST = ["train.max_steps=4", "train.eval_every=0", "train.save_every=0", "train.eval_samples=16",
        "train.micro_batch_size=4", "train.grad_accum_steps=1"]


def _args(tiny_dataset, tmp_path, *extra):
    return ["--config", str(TINY), *TINY_OVERRIDES, f"train.dataset={tiny_dataset}", f"train.work_dir={tmp_path}/train",
            f"train.output_dir={tmp_path}/teacher", *FAST, *extra]


@pytest.mark.slow
def test_accelerate_launch_trains_on_two_ranks(tiny_dataset, tmp_path):
    train(*_args(tiny_dataset, tmp_path, "train.zero_stage=2"), launcher="accelerate",
          launcher_args=("--zero_stage", "2"))
    manifest = json.loads((tmp_path / "teacher" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["training"]["zero_stage"] == 2
    assert manifest["metrics"]["steps"] == 4 and manifest["metrics"]["val_ppl"] > 1


def test_accelerate_flags_that_disagree_are_refused(tiny_dataset, tmp_path):
    proc = train(*_args(tiny_dataset, tmp_path, "train.zero_stage=2"), launcher="accelerate", check=False,
                 launcher_args=("--zero_stage", "3"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "error: accelerate launch --zero_stage 3 disagrees with train.zero_stage (2)" in out
    # the ranks exit 2 (bad config); accelerate's elastic agent reports that as its root cause and exits 1
    assert "exitcode  : 2" in out
    assert not (tmp_path / "train").exists() and not (tmp_path / "teacher").exists()
