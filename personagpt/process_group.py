"""Process groups: start a command as the leader of its own session/process group, find what is left of a group,
stop a whole group gracefully (SIGTERM to the leader, then to the group, SIGKILL at the timeout).

Every long-running child the project starts (the vLLM/baseline server, a pipeline stage) gets its own group, so
that one signal reaches all of its processes and nothing is left behind. A child started with
``die_with_parent=True`` also gets SIGTERM from the kernel when the process that started it dies, even by SIGKILL
(Linux ``PR_SET_PDEATHSIG``; elsewhere that guarantee is absent). Linux and other POSIX systems."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _prctl_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` that asks the kernel to send ``sig`` to the child when its parent dies (Linux; None
    elsewhere). For commands that cannot arm it themselves (the vLLM server); it survives exec."""
    if not sys.platform.startswith("linux"):
        return None
    return lambda: _prctl_pdeathsig(sig)


def arm_parent_death_signal(expected_parent: int, sig: int = signal.SIGTERM) -> bool:
    """In a process of our own (the stage supervisor, serve/run.py in the foreground): get ``sig`` from the kernel
    when the parent dies. Returns False when the parent is already gone (it died before the call): the caller
    should then stop at once. Without PR_SET_PDEATHSIG (not Linux) it only checks the parent."""
    _prctl_pdeathsig(sig)
    return os.getppid() == expected_parent


def start(argv: list[str], env: dict[str, str], log_file: Path | None, cwd: str | Path | None = None,
          die_with_parent_too: bool = False) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session/process group, output appended to ``log_file``;
    ``die_with_parent_too``: the kernel sends it SIGTERM when this process dies (see :func:`die_with_parent`)."""
    full_env = {**os.environ, **env}
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab", buffering=0)
    else:
        out = None
    try:
        return subprocess.Popen(argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out is not None else None, start_new_session=True,
                                preexec_fn=die_with_parent() if die_with_parent_too else None)
    finally:
        if out is not None:
            out.close()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a process from /proc, None when it no longer exists."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    if not Path("/proc").is_dir():  # not Linux: ask the kernel whether anything is left in the group
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st and st[1] == pgid and st[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def pid_alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pgid: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> dict:
    """Gracefully stop the process group led by ``pgid``.

    SIGTERM goes to the leader first (vLLM's API server then shuts its engine and workers down in order), then,
    after half the timeout, to every process left in the group; SIGKILL to whatever is left at the timeout.
    Returns {"graceful": bool, "seconds": float, "killed": [pids]}.
    """
    t0 = time.monotonic()

    def reap():
        if proc is not None:
            proc.poll()

    def wait(until: float) -> bool:
        while time.monotonic() < until:
            reap()
            if not group_members(pgid):
                return True
            time.sleep(0.1)
        reap()
        return not group_members(pgid)

    try:
        os.kill(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if wait(t0 + timeout / 2):
        return {"graceful": True, "seconds": time.monotonic() - t0, "killed": []}
    _signal_group(pgid, signal.SIGTERM)
    if wait(t0 + timeout):
        return {"graceful": True, "seconds": time.monotonic() - t0, "killed": []}
    left = group_members(pgid)
    _signal_group(pgid, signal.SIGKILL)
    wait(time.monotonic() + 10)
    return {"graceful": False, "seconds": time.monotonic() - t0, "killed": left}
