"""The leader of a pipeline stage's process group: ``python -m personagpt.pipeline.supervisor --parent PID
--grace S -- COMMAND ...``.

The runner starts every stage command through it, in a new session, so that the stage is one process group the
runner can stop as a whole. Rules:

- It runs COMMAND as its child in its own group and exits with COMMAND's exit code.
- SIGTERM, SIGINT or SIGHUP to it stops the whole group: SIGTERM to every other member (the DeepSpeed launcher, its
  ranks, a Locust run ...), SIGKILL to what is left after ``--grace`` seconds; then it exits with 128 + the signal.
- It dies with the runner: it arms the kernel's parent-death signal (SIGTERM) first thing, then checks that
  ``--parent`` is still its parent. So even a runner killed by SIGKILL (an OOM kill, ``kill -9``) leaves no stage
  process behind.
- When COMMAND exits by itself, anything it left in the group is stopped the same way before the supervisor exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from personagpt.process_group import arm_parent_death_signal, group_members

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def others(pgid: int) -> list[int]:
    return [p for p in group_members(pgid) if p != os.getpid()]


def stop_others(pgid: int, grace: float) -> list[int]:
    """SIGTERM every other member of the group, SIGKILL what is left after ``grace`` s; returns the killed pids."""
    for pid in others(pgid):
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while others(pgid) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.1)
    left = others(pgid)
    for pid in left:
        _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while others(pgid) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    return left


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def supervise(argv: list[str], parent: int | None, grace: float) -> int:
    received: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    if parent is not None and not arm_parent_death_signal(parent):  # the runner died before we could arm it
        return 128 + signal.SIGTERM
    pgid = os.getpgrp()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    while child.poll() is None and not received:
        time.sleep(0.1)
    if received:
        killed = stop_others(pgid, grace)
        child.poll()
        note = f"; killed after {grace:.0f} s: {killed}" if killed else ""
        print(f"[supervisor] signal {received[0]}: stopped the stage's process group {pgid}{note}", flush=True)
        return 128 + received[0]
    stop_others(pgid, grace)  # whatever the command left behind
    return child.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m personagpt.pipeline.supervisor", description=__doc__.split("\n")[0])
    ap.add_argument("--parent", type=int, help="the runner's pid: exit at once if it is no longer the parent")
    ap.add_argument("--grace", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command after --")
    return supervise(command, args.parent, args.grace)


if __name__ == "__main__":
    sys.exit(main())
