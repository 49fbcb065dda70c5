"""Readiness: a server is ready when a real completion succeeded, not when /health answers.

On CPU, vLLM's /health answers before any forward pass has run (and a model the CPU kernels cannot run only
fails at the first request), so readiness sends a one-token completion. Standard library only, so it also runs
as a probe where only the server's own Python exists:

    python serve/ready.py --url http://127.0.0.1:8000 --model NAME [--timeout 600]   # exit 0 when ready
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path


class NotReady(Exception):
    """The server did not become ready (timed out, or its process exited); the message carries the log tail."""


def log_tail(path: str | Path | None, lines: int = 40) -> str:
    if path is None:
        return "(server log goes to this process's output)"
    try:
        with open(path, "rb") as f:
            tail = deque(f, maxlen=lines)
    except OSError as e:
        return f"(no log at {path}: {e.strerror})"
    return b"".join(tail).decode("utf-8", "replace").rstrip() or "(log is empty)"


def _request(url: str, body: dict | None, api_key: str | None, timeout: float) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def probe(url: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> tuple[bool, str]:
    """One readiness check: /health, then a one-token completion. (ok, what happened)."""
    try:
        code, _ = _request(f"{url}/health", None, None, min(timeout, 10.0))
        if code != 200:
            return False, f"/health answered {code}"
        code, raw = _request(f"{url}/v1/completions",
                             {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0},
                             api_key, timeout)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        return False, f"not answering ({getattr(e, 'reason', e)})"
    if code != 200:
        return False, f"/v1/completions answered {code}: {raw[:300].decode('utf-8', 'replace')}"
    try:
        choices = json.loads(raw)["choices"]
        assert choices and "text" in choices[0]
    except (ValueError, KeyError, AssertionError, TypeError):
        return False, f"/v1/completions returned no completion: {raw[:300]!r}"
    return True, "a one-token completion succeeded"


def wait_ready(url: str, model: str, api_key: str | None = None, timeout: float = 900.0,
               exited: Callable[[], int | None] | None = None, log_file: str | Path | None = None,
               interval: float = 1.0) -> float:
    """Block until ``probe`` succeeds; seconds waited. NotReady (with the log tail) on timeout or process exit."""
    t0 = time.monotonic()
    last = "not tried yet"
    while True:
        if exited is not None and (code := exited()) is not None:
            raise NotReady(f"server process exited with code {code} before it was ready ({last}).\n"
                           f"--- last lines of {log_file or 'the server output'} ---\n{log_tail(log_file)}")
        remaining = timeout - (time.monotonic() - t0)
        if remaining <= 0:
            raise NotReady(f"server at {url} not ready after {timeout:.0f} s (last check: {last}).\n"
                           f"--- last lines of {log_file or 'the server output'} ---\n{log_tail(log_file)}")
        ok, last = probe(url, model, api_key, timeout=max(1.0, min(remaining, 120.0)))
        if ok:
            return time.monotonic() - t0
        time.sleep(min(interval, max(0.0, timeout - (time.monotonic() - t0))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--api-key-env", default="PERSONAGPT_API_KEY")
    ap.add_argument("--timeout", type=float, default=0, help="0: a single check")
    args = ap.parse_args(argv)
    key = os.environ.get(args.api_key_env) or None
    if args.timeout <= 0:
        ok, what = probe(args.url.rstrip("/"), args.model, key)
        print(what, file=sys.stderr)
        return 0 if ok else 1
    try:
        s = wait_ready(args.url.rstrip("/"), args.model, key, args.timeout)
    except NotReady as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"ready after {s:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
