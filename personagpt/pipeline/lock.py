"""One ``personagpt run`` per run folder: an exclusive ``flock`` on ``runs/NAME/.lock`` that records its holder (pid,
host, start time, command).

The kernel releases the lock when the holder dies, however it dies, so a lock can never be stale: if the lock is
free but the file still names a holder, that holder is gone and the new run takes over with a message. A second
run while the holder is alive exits 2 naming it. The lock file itself stays (empty when released): deleting it
while another run waits on it would let two runs hold two different files. The lock is not inherited by stage
processes (Python opens files close-on-exec), so a stage cannot keep it after the runner.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from personagpt.errors import PersonaGPTError


class RunLocked(PersonaGPTError):
    """Another ``personagpt run`` holds the run folder (exit 2)."""


class RunLock:
    def __init__(self, path: Path, say=print):
        self.path, self.say, self._fd = Path(path), say, None

    def holder(self) -> dict | None:
        try:
            text = self.path.read_text().strip()
            return json.loads(text) if text else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is in use by another personagpt run ({describe(self.holder())}); "
                            f"wait for it to finish or stop it (lock: {self.path})") from None
        previous = self.holder()
        if previous:
            self.say(f"taking over the lock of {describe(previous)}: that run is gone (lock: {self.path})")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"
