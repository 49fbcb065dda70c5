"""Serving a model for a later stage: ``with served(ctx, artifact, log) as server:`` starts ``serve/run.py`` (vLLM
by default) in the foreground as its own process group, yields once the server answered a real completion, and
stops it on leaving the block — normally, on an error, or on an interrupt. serve/run.py stops the server's whole
process group when it gets SIGTERM, so no server outlives the block; and it gets that SIGTERM from the kernel if
the runner itself dies (parent-death signal), while the server gets it if serve/run.py dies."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from personagpt.errors import StageFailed
from personagpt.network import free_port
from personagpt.paths import ROOT
from personagpt.pipeline.context import PY, Ctx, env_for_children
from personagpt.pipeline.stage import log_tail


@dataclass(frozen=True)
class Server:
    url: str
    model: str
    artifact: Path
    api_key: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _pump(stream, log, lines: queue.Queue) -> None:
    """Copy serve/run.py's stdout into the stage log, and hand its JSON event lines over."""
    for line in stream:
        log.write(line)
        log.flush()
        if line.startswith("{"):
            lines.put(line)
    lines.put(None)


@contextlib.contextmanager
def served(ctx: Ctx, artifact: Path, log: Path) -> Iterator[Server]:
    scfg = ctx.cfg.serve
    port = ctx.cfg.pipeline.serve_port or free_port()
    argv = [PY, str(ROOT / "serve" / "run.py"), "--artifact", str(artifact), *ctx.args(), "--port", str(port)]
    with open(log, "a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        # its own group; in the foreground it arms the kernel's parent-death signal, so it stops the server if
        # the runner dies
        proc = subprocess.Popen(argv, cwd=ROOT, env=env_for_children(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=f, text=True, start_new_session=True)
        ctx.started(proc.pid)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, f, lines), daemon=True).start()
        try:
            record = _wait_ready(proc, lines, scfg.ready_timeout_s + 60, artifact, log)
            yield Server(url=record["url"], model=record["model"], artifact=artifact,
                         api_key=os.environ.get(scfg.api_key_env) or None)
        finally:
            _stop(proc, scfg.shutdown_timeout_s + 30)


def _wait_ready(proc: subprocess.Popen, lines: queue.Queue, timeout: float, artifact: Path, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise StageFailed(f"serving {artifact}: not ready after {timeout:.0f} s\n--- last lines of {log} ---\n"
                              f"{log_tail(log)}") from None
        if line is None:
            proc.wait()
            raise StageFailed(f"serving {artifact}: serve/run.py exited with code {proc.returncode} before the "
                              f"server was ready\n--- last lines of {log} ---\n{log_tail(log)}")
        event = json.loads(line)
        if event.get("event") == "ready":
            return event


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to serve/run.py (it stops the server's group), SIGKILL to its own group at the timeout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
