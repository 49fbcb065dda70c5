"""serve/run.py as users run it: bad input (exit 2), --wait/--stop, readiness, timeouts with the log tail,
graceful SIGTERM of the whole process group. Uses the cheap baseline engine; the vLLM engine goes through the
same launcher in the session fixture (tests/fixtures/serve.py), whose teardown checks its SIGTERM shutdown."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from fixtures.serve import API_KEY, ROOT, group_alive, start_server, stop_server
from serve.ready import NotReady, probe, wait_ready

RUN = str(ROOT / "serve" / "run.py")


def run(*args: str, timeout: float = 300, env: dict | None = None, cache: Path | None = None):
    full_env = {**os.environ, "PERSONAGPT_API_KEY": API_KEY, **(env or {})}
    if cache is not None:
        full_env["PERSONAGPT_CACHE"] = str(cache)
    return subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=full_env)


# ------------------------------------------------------------------------------------------------ bad input


def test_artifact_without_manifest_exits_2(tmp_path, serve_artifact):
    art = tmp_path / "no-manifest"
    shutil.copytree(serve_artifact, art)
    (art / "manifest.json").unlink()
    p = run("--artifact", str(art), "--engine", "baseline")
    assert p.returncode == 2
    assert "error:" in p.stderr and str(art) in p.stderr and "manifest.json" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_artifact_folder_exits_2(tmp_path):
    p = run("--artifact", str(tmp_path / "nowhere"))
    assert p.returncode == 2 and str(tmp_path / "nowhere") in p.stderr and "does not exist" in p.stderr


@pytest.mark.parametrize("override,key", [("serve.port=-1", "serve.port"),
                                          ("serve.kv_cache_gib=lots", "serve.kv_cache_gib"),
                                          ("serve.unknown=1", "serve.unknown")])
def test_bad_config_value_exits_2(serve_artifact, override, key):
    p = run("--artifact", str(serve_artifact), override)
    assert p.returncode == 2, p.stderr
    assert key in p.stderr and "Traceback" not in p.stderr


def test_bad_config_file_names_file_and_key(tmp_path, serve_artifact):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("serve:\n  max_num_seqs: 0\n")
    p = run("--artifact", str(serve_artifact), "--config", str(cfg))
    assert p.returncode == 2 and str(cfg) in p.stderr and "serve.max_num_seqs" in p.stderr


def test_context_longer_than_model_exits_2(serve_artifact):
    p = run("--artifact", str(serve_artifact), "serve.max_model_len=100000", "--print-command")
    assert p.returncode == 2 and "serve.max_model_len" in p.stderr


def test_print_command_uses_config_file_and_hides_key(tmp_path, serve_artifact):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("serve:\n  served_model_name: sam\n  max_num_seqs: 4\n")
    p = run("--artifact", str(serve_artifact), "--config", str(cfg), "--port", "8199", "--print-command")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    argv = plan["argv"]
    assert plan["model"] == "sam" and argv[argv.index("--served-model-name") + 1] == "sam"
    assert argv[argv.index("--max-num-seqs") + 1] == "4" and plan["url"] == "http://127.0.0.1:8199"
    assert API_KEY not in p.stdout


# --------------------------------------------------------------------------------------- --wait and --stop


def test_wait_then_stop(tmp_path, serve_artifact):
    p = run("--artifact", str(serve_artifact), "--engine", "baseline", "--port", "0", "--wait", cache=tmp_path)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    try:
        assert rec["event"] == "ready" and rec["engine"] == "baseline" and rec["startup_s"] > 0
        assert Path(rec["pidfile"]).is_file() and Path(rec["log_file"]).is_file()
        # run.py has returned; the server keeps serving in its own process group
        r = requests.post(f"{rec['url']}/v1/completions", json={"model": rec["model"], "prompt": "hi", "max_tokens": 2},
                          headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
        assert r.status_code == 200
        port = rec["url"].rsplit(":", 1)[1]
        s = run("--stop", "--port", port, cache=tmp_path)
        assert s.returncode == 0, s.stderr
        assert "stopped baseline server" in s.stderr
        assert not group_alive(rec["pgid"])
        assert not Path(rec["pidfile"]).exists()
        assert "shutting down" in Path(rec["log_file"]).read_text()  # it got SIGTERM, not SIGKILL
    finally:
        if group_alive(rec["pgid"]):
            os.killpg(rec["pgid"], signal.SIGKILL)


def test_port_in_use_exits_2(tmp_path, serve_artifact):
    fake = FakeServer()
    try:
        port = fake.url.rsplit(":", 1)[1]
        p = run("--artifact", str(serve_artifact), "--engine", "baseline", "--port", port, "--wait", cache=tmp_path)
        assert p.returncode == 2 and f"port {port}" in p.stderr and "in use" in p.stderr
    finally:
        fake.close()


def test_stop_without_server_exits_2(tmp_path):
    p = run("--stop", "--port", "8999", cache=tmp_path)
    assert p.returncode == 2 and "no server" in p.stderr


def test_wait_timeout_reports_log_tail_and_stops_server(tmp_path, serve_artifact):
    t0 = time.monotonic()
    p = run("--artifact", str(serve_artifact), "--engine", "baseline", "--port", "0", "--wait", "--timeout", "1",
            cache=tmp_path)
    assert p.returncode == 1
    assert "not ready after 1 s" in p.stderr and "--- last lines of" in p.stderr
    assert time.monotonic() - t0 < 60
    assert list((tmp_path / "serve" / "run").glob("*.json")) == []
    pgid = int(re.search(r"server stopped \(process group (\d+)", p.stderr).group(1))
    assert not group_alive(pgid)


def test_crash_before_ready_reports_log_tail(tmp_path, serve_artifact):
    art = tmp_path / "broken"
    shutil.copytree(serve_artifact, art)
    (art / "model.safetensors").write_bytes(b"this is not a safetensors file")
    p = run("--artifact", str(art), "--engine", "baseline", "--port", "0", "--wait", cache=tmp_path)
    assert p.returncode == 1
    assert "exited with code" in p.stderr and "before it was ready" in p.stderr
    assert "Traceback" in p.stderr  # the server's own error, from the tail of its log


def test_foreground_sigterm_stops_process_group(tmp_path, serve_artifact):
    server = start_server(serve_artifact, "baseline", tmp_path, timeout=120)
    assert group_alive(server.pid)
    seconds = stop_server(server)  # asserts exit code 0 and an empty process group
    assert seconds < 15
    assert "shutting down" in server.log_file.read_text()


# ---------------------------------------------------------------------------------------------- readiness


class FakeServer:
    """/health says OK, completions fail until ``healthy`` is set: what vLLM on CPU looks like before (or
    instead of) its first successful forward pass."""

    def __init__(self):
        self.healthy = False
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {})

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                if outer.healthy:
                    self._send(200, {"choices": [{"index": 0, "text": "x"}]})
                else:
                    self._send(500, {"error": {"message": "EngineCore encountered an issue"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_ready_means_a_completion_succeeded(tmp_path):
    fake = FakeServer()
    try:
        ok, why = probe(fake.url, "m")
        assert not ok and "500" in why
        log = tmp_path / "server.log"
        log.write_text("line 1\nRuntimeError: Unsupported CPU attention configuration\n")
        with pytest.raises(NotReady) as e:
            wait_ready(fake.url, "m", timeout=1.5, log_file=log, interval=0.2)
        assert "answered 500" in str(e.value) and "Unsupported CPU attention" in str(e.value)
        fake.healthy = True
        assert wait_ready(fake.url, "m", timeout=10, interval=0.2) < 10
    finally:
        fake.close()


def test_ready_cli_probe(tmp_path):
    fake = FakeServer()
    try:
        cmd = [sys.executable, str(ROOT / "serve" / "ready.py"), "--url", fake.url, "--model", "m"]
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 1
        fake.healthy = True
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    finally:
        fake.close()
