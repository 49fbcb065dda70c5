"""Bad hosts, silent servers and bad config: a clear error within seconds (exit 2, nothing written), never a hang.
A server that stops answering in the middle of a run: requests time out, the run ends on time, the gate fails."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fixtures.loadtest import run_loadtest
from personagpt.network import free_port


def assert_clean_error(run, *needles):
    assert run.proc.returncode == 2, run.explain()
    for n in needles:
        assert n in run.proc.stderr, run.explain()
    assert not run.out.exists()
    assert not [p for p in run.out.parent.iterdir() if p.name.startswith(f".{run.out.name}.tmp")]


def test_connection_refused(tmp_path, tiny_dataset):
    port = free_port()
    run = run_loadtest(f"http://127.0.0.1:{port}", tmp_path / "out", dataset=tiny_dataset, timeout=60)
    assert_clean_error(run, f"--host http://127.0.0.1:{port}", "cannot connect (Connection refused)")
    assert run.seconds < 30


def test_server_that_never_answers(tmp_path, tiny_dataset):
    """A socket that accepts connections and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        port = s.getsockname()[1]
        run = run_loadtest(f"http://127.0.0.1:{port}", tmp_path / "out", "loadtest.preflight_timeout_s=2",
                           dataset=tiny_dataset, timeout=60)
    assert_clean_error(run, "connected, but no answer within 2 s (loadtest.preflight_timeout_s)")
    assert run.seconds < 30


@pytest.mark.parametrize("host, needle", [
    ("127.0.0.1:8000", "--host '127.0.0.1:8000': expected http://HOST[:PORT]"),
    ("ftp://127.0.0.1:21", "expected http://HOST[:PORT]"),
    ("http://127.0.0.1:99999", "--host 'http://127.0.0.1:99999': Port out of range"),
])
def test_malformed_host(tmp_path, host, needle):
    run = run_loadtest(host, tmp_path / "out", timeout=60)
    assert_clean_error(run, needle)


@pytest.mark.parametrize("override, needle", [
    ("loadtest.profile=burst", "loadtest.profile: Input should be 'fixed', 'step', 'poisson' or 'sweep'"),
    ("loadtest.sweep.levels=[4,2]", "loadtest.sweep.levels: Value error, must be strictly increasing"),
    ("loadtest.users=0", "loadtest.users: Input should be greater than or equal to 1"),
    ("loadtest.slo.max_error_rate=2", "loadtest.slo.max_error_rate: Input should be less than or equal to 1"),
    ("loadtest.rps=3", "loadtest.rps: unknown key"),
    ("loadtest.min_input_tokens=500", "min_input_tokens (500) must be <= max_input_tokens (128)"),
])
def test_bad_config(tmp_path, override, needle):
    run = run_loadtest("http://127.0.0.1:9", tmp_path / "out", override, timeout=60)
    assert_clean_error(run, needle)


def test_missing_dataset(tmp_path):
    missing = tmp_path / "no-such-dataset"
    run = run_loadtest("http://127.0.0.1:9", tmp_path / "out", f"loadtest.dataset={missing}", timeout=60)
    assert_clean_error(run, f"loadtest.dataset: {missing}: dataset artifact folder does not exist")


class FlakyOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-looking server that answers /v1/models and the first chat request, then hangs on every other
    one (a wedged engine): what the load test must survive without hanging."""

    answered = 0
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "flaky", "max_model_len": 512}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if FlakyOpenAI.answered >= 1:
            time.sleep(30)  # never within the client's timeout
            return
        FlakyOpenAI.answered += 1
        events = [{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
                  {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}]
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_server_that_stops_answering_mid_run(tmp_path, tiny_dataset):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyOpenAI)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = run_loadtest(f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "out", "loadtest.users=2",
                           "loadtest.duration_s=3", "loadtest.request_timeout_s=2", "loadtest.stop_timeout_s=3",
                           dataset=tiny_dataset, timeout=120)
    finally:
        server.shutdown()
    assert run.proc.returncode == 1, run.explain()  # the SLO gate (error rate), with results written
    s = run.summary
    assert s["failed"] >= 2 and s["completed"] == 0
    assert all("no complete answer within loadtest.request_timeout_s=2 s" in e for e in s["errors"])
    assert "no request completed" in s["slo"]["violations"]
    assert run.seconds < 90
