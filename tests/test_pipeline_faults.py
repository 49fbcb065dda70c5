"""`personagpt run` under real kills and signals (tiny preset, real launcher / vLLM): what survives what.

Kill points are deterministic where the pipeline gives one (a train checkpoint on disk, the resume line in the
train log, the vLLM server's processes up); inside quantize and data prepare the moment is random, from a seed
the test prints. After every kill the test checks, by walking the process tree captured at the kill, that no
process of the stage (DeepSpeed launcher and ranks, serve/run.py and vLLM's processes, Locust) is left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.pipeline import copy_run, pipeline_argv, pipeline_env, run, state
from personagpt.artifacts import hash_files, read_manifest
from personagpt.process_group import pid_alive

STOP = ["pipeline.stop_timeout_s=10"]  # the bound a stage gets between SIGTERM and SIGKILL
BOUND_S = 10 + 30  # ... plus start-up/shut-down slack on a loaded 2-core machine


def start(cwd, *args) -> subprocess.Popen:
    """`personagpt run` as its own process group (as a terminal or a container starts it)."""
    return subprocess.Popen(pipeline_argv(*STOP, *args), cwd=cwd, env=pipeline_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def all_gone(pids: set[int], timeout: float = BOUND_S) -> None:
    wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout,
             f"the stage's processes to end: {[(p, cmdline(p)[:80]) for p in pids if pid_alive(p)]}")


def assert_no_partial_artifacts(run_dir: Path) -> None:
    """Every artifact folder is complete (manifest and content hash agree); unfinished writes exist only as the
    hidden staging folders that the next run removes."""
    for d in run_dir.iterdir():
        if d.is_dir() and not d.name.startswith(".") and d.name not in ("train", "distill", "logs", "loadtest"):
            m = read_manifest(d)
            assert m["content_hash"] == hash_files(d), f"{d} is a partial artifact"


@pytest.mark.slow
def test_train_survives_sigkill_of_the_group_and_sigterm_of_the_runner(pipeline_run, tmp_path):
    cwd, run_dir = copy_run(pipeline_run, tmp_path, keep=("data",))
    ckpts = run_dir / "train" / "checkpoints"

    # 1. SIGKILL to the runner's whole process group right after the first checkpoint (an OOM kill, a lost VM)
    proc = start(cwd, "--stages", "data,train")
    wait_for(lambda: (ckpts / "latest").is_file(), 600, "the first train checkpoint", proc)
    tree = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    all_gone(tree)
    assert state(run_dir)["train"]["status"] == "running"  # what a killed runner leaves: resumable
    assert not (run_dir / "teacher").exists()
    step = int((ckpts / "latest").read_text().removeprefix("step"))

    # 2. rerun: it resumes from that checkpoint; SIGTERM to the runner alone while it trains on
    proc = start(cwd, "--stages", "data,train")
    log = run_dir / "logs" / "train.log"
    wait_for(lambda: log.read_text().count("resumed from") == 1, 600, "the resumed train stage", proc)
    tree = descendants(proc.pid)
    assert any("train/run.py" in cmdline(p) for p in tree)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=BOUND_S)[0]
    assert proc.returncode == 143, out[-3000:]
    all_gone(tree)
    assert "resuming from checkpoint" in out and "interrupted by SIGTERM" in out, out[-3000:]
    rec = state(run_dir)["train"]
    assert rec["status"] == "interrupted" and rec["signal"] == "SIGTERM"
    assert not (run_dir / "teacher").exists()

    # 3. rerun to the end: it resumes from the same checkpoint, and the teacher equals the uninterrupted one
    proc = run(cwd, *STOP, "--stages", "data,train", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resuming from checkpoint {ckpts / f'step{step:08d}'}" in proc.stdout
    assert f"(step {step}," in log.read_text().split("resumed from")[-1]
    got = read_manifest(run_dir / "teacher")["metrics"]
    want = read_manifest(pipeline_run[1] / "teacher")["metrics"]
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-6)  # the resume test's 2-rank tolerance
    assert got["tokens_seen"] == want["tokens_seen"]


@pytest.mark.slow
def test_sigterm_during_the_load_test_stops_vllm(pipeline_run, tmp_path):
    cwd, run_dir = copy_run(pipeline_run, tmp_path)
    proc = start(cwd, "--stages", "loadtest")
    wait_for(lambda: any("vllm" in cmdline(p) for p in descendants(proc.pid)), 300, "the vLLM server", proc)
    time.sleep(5)  # in the middle of its start-up: engine processes being spawned
    tree = descendants(proc.pid)
    assert any("serve/run.py" in cmdline(p) for p in tree)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=BOUND_S + 60)[0]
    assert proc.returncode == 143, out[-3000:]
    all_gone(tree | {p for p in descendants(1) if str(run_dir) in cmdline(p)})
    assert state(run_dir)["loadtest"]["status"] == "interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("stage,keep,seconds", [("quantize", ("data", "teacher", "student", "train", "distill"), 25),
                                                ("data", (), 8)])
def test_random_kill_leaves_no_partial_artifact(pipeline_run, tmp_path, stage, keep, seconds):
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 10_000))
    delay = random.Random(seed).uniform(0, seconds)
    print(f"FAULT_SEED={seed}: SIGKILL {delay:.1f} s into {stage}")
    cwd, run_dir = copy_run(pipeline_run, tmp_path, keep=keep)
    proc = start(cwd, "--stages", stage)
    log = run_dir / "logs" / f"{stage}.log"
    wait_for(lambda: log.is_file() and "$ " in log.read_text(), 120, f"the {stage} stage", proc)
    time.sleep(delay)
    tree = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    all_gone(tree)
    assert_no_partial_artifacts(run_dir)
    proc = run(cwd, *STOP, "--stages", stage, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert state(run_dir)[stage]["status"] == "done"
    assert not [p.name for p in run_dir.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert_no_partial_artifacts(run_dir)
