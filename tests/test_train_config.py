"""Bad training input: a clear error naming the key or path, exit code 2, and nothing written (no run folder, no
artifact). Most cases run as ``python train/run.py`` (one rank); the batch arithmetic that depends on the number of
ranks runs through the real ``deepspeed --num_gpus 2`` launcher, which must pass the exit code through."""

from __future__ import annotations

import pytest

from fixtures.train import tiny_args, train

CASES = {
    "zero_stage": (["train.zero_stage=4"], "train.zero_stage"),
    "zero_stage_negative": (["train.zero_stage=-1"], "train.zero_stage"),
    "offload_param_needs_zero3": (["train.zero_stage=2", "train.offload_param=true"], "train.offload_param"),
    "global_batch_not_multiple_of_micro": (["train.micro_batch_size=8", "train.global_batch_size=12"],
                                           "train.global_batch_size"),
    "accum_disagrees": (["train.micro_batch_size=4", "train.global_batch_size=16", "train.grad_accum_steps=3"],
                        "train.grad_accum_steps"),
    "batch_larger_than_data": (["train.micro_batch_size=4096"], "train.global_batch_size"),
    "missing_dataset": (["train.dataset=/nonexistent/dataset"], "train.dataset"),
    "missing_model_path": (["model.source=pretrained", "model.path=/nonexistent/model"], "model.path"),
    "lora_target_missing": (["train.lora.enabled=true", "train.lora.target_modules=[q_proj,attn_qkv]"],
                            "train.lora.target_modules"),
    "resume_without_checkpoint": (["--resume"], "--resume"),
    "unknown_key": (["train.zero=2"], "train.zero"),
    "renamed_key": (["train.run_dir=/tmp/x"], "train.run_dir was renamed to train.work_dir"),
}


def assert_rejected(proc, key: str, tmp_path) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "error:" in proc.stderr and key in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "train").exists() and not (tmp_path / "teacher").exists(), "something was written"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exits_2_and_writes_nothing(case, tiny_dataset, tmp_path):
    extra, key = CASES[case]
    args = tiny_args(tiny_dataset, tmp_path / "train", tmp_path / "teacher", "train.max_steps=2")
    args = [a for a in args if not (a.startswith("train.dataset=") and any(e.startswith("train.dataset=")
                                                                           for e in extra))]
    proc = train(*args, *extra, launcher="python", check=False, timeout=300)
    assert_rejected(proc, key, tmp_path)
    if case == "lora_target_missing":
        assert "attn_qkv" in proc.stderr and "q_proj" in proc.stderr  # names the bad one, lists real ones


def test_batch_not_divisible_by_world_size_via_deepspeed_launcher(tiny_dataset, tmp_path):
    """12 samples per step cannot be split into micro-batches of 4 over 2 ranks."""
    args = tiny_args(tiny_dataset, tmp_path / "train", tmp_path / "teacher", "train.micro_batch_size=4",
                     "train.global_batch_size=12", "train.max_steps=2")
    proc = train(*args, launcher="deepspeed", nproc=2, check=False, timeout=300)
    assert_rejected(proc, "train.global_batch_size", tmp_path)
    assert "world size (2)" in proc.stderr
