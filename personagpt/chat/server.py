"""``personagpt chat --artifact DIR``: the chat starts its own server, ``serve/run.py`` (vLLM by default,
``--engine baseline`` for a quick start), and stops it when the chat ends.

serve/run.py runs in the foreground as the leader of its own process group (it starts the engine in a group of
its own and stops that group on SIGTERM); it prints ``{"event": "ready", ...}`` once a real completion succeeded.
Leaving the ``with`` block — /exit, Ctrl-D, Ctrl-C, SIGTERM, an error — sends it SIGTERM and waits; what is left of
its group at the timeout gets SIGKILL (personagpt/process_group.py). Its output goes to a log file whose path is
printed, so a failed start shows the log's tail.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from personagpt import process_group
from personagpt.errors import PersonaGPTError
from personagpt.network import free_port
from personagpt.paths import ROOT, cache_dir


class ServerFailed(PersonaGPTError):
    """The chat's own server did not start (the log's tail is in the message): exit code 1."""

    exit_code = 1


@dataclass(frozen=True)
class Started:
    url: str
    model: str
    max_model_len: int | None
    log_file: Path


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def started_server(artifact: Path, engine: str, config: Path | None, overrides: list[str], timeout: float,
                   shutdown_timeout: float, say=print) -> Iterator[Started]:
    port = free_port()
    log_file = cache_dir() / "chat" / f"serve-{engine}-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(ROOT / "serve" / "run.py"), "--artifact", str(artifact), "--engine", engine,
            "--port", str(port), *(["--config", str(config)] if config else []), *overrides,
            f"serve.log_file={log_file}"]
    say(f"starting the {engine} server for {artifact} (log: {log_file}); vLLM takes a minute or two on a CPU")
    with open(log_file, "ab") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                text=True, start_new_session=True)
    try:
        record = _wait_ready(proc, timeout, log_file)
        yield Started(url=record["url"], model=record["model"], max_model_len=record.get("max_model_len"),
                      log_file=log_file)
    finally:
        res = process_group.stop_group(proc.pid, shutdown_timeout + 30, proc)
        say(f"server stopped ({res['seconds']:.1f} s)" + ("" if res["graceful"] else f"; killed {res['killed']}"))


def _wait_ready(proc: subprocess.Popen, timeout: float, log_file: Path) -> dict:
    found: list[dict] = []
    done = threading.Event()

    def pump():
        for line in proc.stdout:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if ev.get("event") == "ready":
                        found.append(ev)
                        done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    t0 = time.monotonic()
    while not done.wait(0.2):
        if time.monotonic() - t0 > timeout:
            raise ServerFailed(f"the server was not ready after {timeout:.0f} s\n--- last lines of {log_file} "
                                  f"---\n{_log_tail(log_file)}")
    if not found:
        proc.wait()
        raise ServerFailed(f"serve/run.py exited with code {proc.returncode} before the server was ready\n"
                              f"--- last lines of {log_file} ---\n{_log_tail(log_file)}")
    return found[0]
