"""Exact resume: the session's tiny teacher ran 2N steps straight (checkpoint at N). Here the same run is killed
with SIGKILL two steps after its checkpoint at N, then resumed to 2N, on 2 ranks and on 1 rank.

Same world size: data order is a function of the step, dropout reseeds per step, DeepSpeed restores module,
optimizer and LR-scheduler states, and gloo sums 2 ranks in a fixed order, so the resumed run repeats the straight
run's arithmetic; we allow 1e-6 relative (measured: bit-identical). One rank (DeepSpeed universal checkpoint,
micro-batches accumulated instead of split over ranks): the same samples and token-mean loss per step, only the
order of floating-point sums changes; differences stay at fp32 rounding, well below 1e-4 relative.
"""

from __future__ import annotations

import json
import shutil

import pytest

from fixtures.train import TEACHER_ARGS, TEACHER_SAVE_EVERY, TEACHER_STEPS, read_jsonl, tiny_args, train

N = TEACHER_SAVE_EVERY
KILL_AT = N + 2


def weights(artifact):
    from safetensors.torch import load_file

    return load_file(str(artifact / "model.safetensors"))


@pytest.fixture(scope="module")
def killed_run(tiny_dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("killed")
    proc = train(*tiny_args(tiny_dataset, base / "train", base / "teacher", *TEACHER_ARGS,
                            f"train.debug_sigkill_at_step={KILL_AT}"), check=False)
    return base, proc


def test_sigkill_leaves_last_complete_checkpoint(killed_run):
    base, proc = killed_run
    assert proc.returncode != 0, "the run was supposed to die by SIGKILL"
    ckpt = base / "train" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == [f"step{N:08d}"]
    assert (ckpt / "latest").read_text() == f"step{N:08d}"
    assert not (base / "teacher").exists(), "a killed run must not leave a model artifact"
    steps = [r["step"] for r in read_jsonl(base / "train" / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, KILL_AT + 1))  # it did train past the checkpoint before dying


@pytest.mark.slow
@pytest.mark.parametrize("launcher,nproc", [("deepspeed", 2), ("python", 1)])
def test_resume_after_sigkill_matches_straight_run(killed_run, tiny_teacher_run, tiny_dataset, tmp_path, launcher,
                                                   nproc):
    base, _ = killed_run
    work = tmp_path / "run"
    shutil.copytree(base, work)  # each resume starts from the same killed state
    args = tiny_args(tiny_dataset, work / "train", work / "teacher", *TEACHER_ARGS)
    if nproc == 1:  # keep the global batch: accumulate the micro-batches the second rank ran
        args = [a for a in args if not a.startswith("train.grad_accum_steps")] + ["train.grad_accum_steps=2"]
    proc = train(*args, "--resume", launcher=launcher, nproc=nproc)
    assert f"resumed from {work / 'train' / 'checkpoints' / f'step{N:08d}'} (step {N}" in proc.stdout
    universal = (work / "train" / "checkpoints" / f"step{N:08d}_universal").is_dir()
    assert universal == (nproc != 2)

    straight = {r["step"]: r for r in tiny_teacher_run.metrics("train")}
    resumed = [r for r in read_jsonl(work / "train" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in resumed] == list(range(1, TEACHER_STEPS + 1))  # killed steps N+1.. were replaced
    rel = 1e-6 if nproc == 2 else 1e-4
    for r in resumed[N:]:
        s = straight[r["step"]]
        assert r["lr"] == pytest.approx(s["lr"], rel=1e-12), (r, s)
        assert r["loss"] == pytest.approx(s["loss"], rel=rel), (r, s)
    final = json.loads((work / "teacher" / "manifest.json").read_text())["metrics"]
    assert final["val_loss"] == pytest.approx(tiny_teacher_run.manifest()["metrics"]["val_loss"], rel=rel)
    assert final["steps"] == TEACHER_STEPS and final["tokens_seen"] == tiny_teacher_run.manifest()["metrics"][
        "tokens_seen"]
    a, b = weights(work / "teacher"), weights(tiny_teacher_run.artifact)
    worst = max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)
    assert worst <= (1e-6 if nproc == 2 else 1e-3), worst


def test_resume_refuses_another_model_config(tiny_teacher_run, tiny_dataset, tmp_path):
    """A checkpoint only continues with the model config it was trained with; nothing is touched otherwise."""
    work = tmp_path / "run"
    shutil.copytree(tiny_teacher_run.work_dir, work / "train")
    before = (work / "train" / "metrics.jsonl").read_bytes()
    proc = train(*tiny_args(tiny_dataset, work / "train", work / "teacher", *TEACHER_ARGS,
                            "model.intermediate_size=128"),
                 "--resume", launcher="python", check=False, timeout=300)
    assert proc.returncode == 2 and "--resume" in proc.stderr and "model: config" in proc.stderr, proc.stderr[-2000:]
    assert (work / "train" / "metrics.jsonl").read_bytes() == before and not (work / "teacher").exists()
