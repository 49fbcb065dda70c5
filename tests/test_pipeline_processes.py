"""The runner's process rules with real processes and real signals (fast; the tiny pipeline under kills is in
test_pipeline_faults.py): the stage supervisor stops its whole group on a signal and when its parent dies, the
run-folder lock, clean-up after killed artifact writers, and which stage records resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from fixtures.artifacts import ROOT, TINY
from personagpt.artifacts import recover_staging
from personagpt.pipeline.lock import RunLock, RunLocked
from personagpt.process_group import group_members, pid_alive

# a stage that leaves a grandchild which ignores SIGTERM (only SIGKILL stops it), then sleeps
STUBBORN = ("import signal, subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); print(\"child up\", flush=True); time.sleep(600)']); time.sleep(600)")


def wait_for(pred, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def supervisor(*args):
    return [sys.executable, "-m", "personagpt.pipeline.supervisor", *args]


def test_supervisor_stops_its_whole_group_on_sigterm(tmp_path):
    log = open(tmp_path / "log", "w")
    sup = subprocess.Popen(supervisor("--grace", "2", "--", sys.executable, "-c", STUBBORN), stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    assert wait_for(lambda: len(group_members(sup.pid)) == 3)  # supervisor, command, grandchild
    assert wait_for(lambda: "child up" in (tmp_path / "log").read_text())  # it ignores SIGTERM from now on
    t0 = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 2 + 5
    assert group_members(sup.pid) == []
    text = (tmp_path / "log").read_text()
    assert "child up" in text and "killed after 2 s" in text  # the grandchild needed the SIGKILL


def test_supervisor_passes_the_exit_code_and_cleans_up_leftovers(tmp_path):
    leave = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
             "sys.exit(3)")
    sup = subprocess.Popen(supervisor("--grace", "2", "--", sys.executable, "-c", leave), start_new_session=True,
                           cwd=ROOT)
    assert sup.wait(timeout=30) == 3
    assert group_members(sup.pid) == []


def test_supervisor_dies_with_its_parent_even_by_sigkill(tmp_path):
    """The runner killed with SIGKILL: the kernel's parent-death signal reaches the supervisor, which stops the
    stage's group."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import os, subprocess, sys, time; "
         "p = subprocess.Popen([a.replace('PARENT', str(os.getpid())) for a in sys.argv[1:]], "
         "start_new_session=True); print(p.pid, flush=True); time.sleep(600)",
         *supervisor("--grace", "2", "--parent", "PARENT", "--", sys.executable, "-c", STUBBORN)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    sup_pid = int(parent.stdout.readline())
    assert wait_for(lambda: len(group_members(sup_pid)) == 3)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_for(lambda: group_members(sup_pid) == [], timeout=2 + 10)


def test_supervisor_refuses_to_start_when_its_parent_is_already_gone():
    sup = subprocess.run(supervisor("--parent", "1", "--", sys.executable, "-c", "print('ran')"),
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert sup.returncode == 128 + signal.SIGTERM and "ran" not in sup.stdout


def test_a_second_run_on_a_locked_folder_exits_2_naming_the_holder(tmp_path):
    lock = tmp_path / "runs" / "tiny" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from personagpt.pipeline.lock import RunLock; RunLock(Path(sys.argv[1])).acquire(); "
                               "print('held', flush=True); time.sleep(600)", str(lock)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "personagpt.cli", "run", "--config", str(TINY)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 2, proc.stderr
        assert f"pid {holder.pid} on host" in proc.stderr and "in use by another personagpt run" in proc.stderr
        assert not (tmp_path / "runs" / "tiny" / "pipeline.json").exists()  # it did not start anything
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock(lock).acquire()
    finally:
        holder.kill()
        holder.wait()
    said = []
    with RunLock(lock, say=said.append):  # the holder died holding it (SIGKILL): taken over with a message
        assert f"taking over the lock of pid {holder.pid}" in said[0]
        assert f'"pid": {os.getpid()}' in lock.read_text()
    assert lock.read_text() == ""  # released


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    assert not pid_alive(p.pid)
    return p.pid


def test_recover_staging_after_killed_writers(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".student.tmp-{dead}-abc").mkdir()                # killed while writing: removed
    (tmp_path / f".teacher.old-{dead}").mkdir()                    # killed between the two renames: put back
    (tmp_path / f".teacher.old-{dead}" / "manifest.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / f".data.old-{dead}").mkdir()                       # the new one is in place: old copy removed
    live = tmp_path / f".quantized-int8.tmp-{os.getpid()}-x"      # a live writer's: untouched
    live.mkdir()
    said = []
    recover_staging(tmp_path, say=said.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["teacher", "data", live.name])
    assert (tmp_path / "teacher" / "manifest.json").is_file()
    assert len(said) == 3 and any("restored" in s for s in said)


@pytest.mark.parametrize("status,resumes", [("running", True), ("failed", True), ("interrupted", True),
                                            ("done", False)])
def test_unfinished_records_resume_with_the_same_fingerprint_only(tmp_path, status, resumes):
    from personagpt.config import load_config
    from personagpt.paths import RunLayout
    from personagpt.pipeline.context import Ctx
    from personagpt.pipeline.runner import Pipeline, fingerprint
    from personagpt.pipeline.stages import STAGES

    ctx = Ctx(TINY, [], load_config(TINY, []), RunLayout(tmp_path), 2)
    train = STAGES[1]
    fp = fingerprint(train, ctx, {})
    pipe = Pipeline(ctx, STAGES)
    pipe.state = {"train": {"fingerprint": fp, "status": status}}
    assert pipe.resumable(train, fp) is resumes
    assert pipe.resumable(train, "another fingerprint") is False
    assert Pipeline(ctx, STAGES, force=True).resumable(train, fp) is False
