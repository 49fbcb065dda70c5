"""Load-test an OpenAI-compatible LLM server with Locust (headless, or with Locust's web UI).

    python loadtest/run.py --host URL [--config FILE] [--out DIR] [key=value ...]
    python loadtest/run.py --host URL --master --expect-workers N [...]    # distributed: the master
    python loadtest/run.py --worker --master-host HOST [--master-port P]   # distributed: a worker (no config)
    python loadtest/run.py --host URL --web [--web-port 8089] [...]        # interactive, Locust's web UI

Before any load it checks the server (bounded timeouts: a bad host or a silent server is an error within
seconds) and picks the prompts (held-out split of the dataset artifact). Then Locust runs the ``loadtest:``
profile and the results folder gets Locust's CSV and HTML report, ``records.jsonl`` (one line per request),
``summary.json`` (TTFT/ITL/E2E percentiles, requests/s, output tokens/s, errors, goodput, per load level), PNG
plots and ``manifest.json``.

Exit codes: 0 the SLO held; 1 the SLO was violated (results are written); 2 bad input, unreachable or
non-answering server (nothing written); 3 the load test itself failed (Locust crashed or overran its bound).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from personagpt.errors import ConfigError, PersonaGPTError
from personagpt.paths import ROOT, RunLayout

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
PLAN_ENV = "PERSONAGPT_LOADTEST_PLAN"
WORKER_REPORT_LAG_S = 4.0  # Locust workers report every 3 s; a sweep level is judged once its reports are in
EXIT_SLO, EXIT_FAILED = 1, 3


class LoadtestFailed(Exception):
    """The load test could not run to its end (Locust crashed, or ran past its time bound)."""


def say(msg: str) -> None:
    print(f"loadtest: {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="loadtest/run.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="key=value overrides set any config key, e.g. loadtest.profile=sweep "
                                        "loadtest.users=8 loadtest.slo.ttft_p95_ms=500")
    ap.add_argument("--host", help="server base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--config", type=Path, help="YAML config; its loadtest: section is used")
    ap.add_argument("--out", type=Path, help="= loadtest.out (results folder)")
    ap.add_argument("--profile", choices=["fixed", "step", "poisson", "sweep"], help="= loadtest.profile")
    ap.add_argument("--web", action="store_true", help="Locust's web UI instead of a headless run")
    ap.add_argument("--web-host", default="127.0.0.1")
    ap.add_argument("--web-port", type=int, default=8089)
    dist = ap.add_argument_group("distributed Locust")
    dist.add_argument("--master", action="store_true", help="run as the master of --expect-workers workers")
    dist.add_argument("--expect-workers", type=int, default=1, help="master: start once this many workers joined")
    dist.add_argument("--expect-workers-max-wait", type=float, default=300.0,
                      help="master: give up when the workers have not joined after this many seconds")
    dist.add_argument("--master-bind-host", default="*", help="master: address workers connect to")
    dist.add_argument("--master-bind-port", type=int, default=5557)
    dist.add_argument("--worker", action="store_true", help="run as a worker; it gets its plan from the master")
    dist.add_argument("--master-host", default="127.0.0.1", help="worker: the master's address")
    dist.add_argument("--master-port", type=int, default=5557, help="worker: the master's port")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    return ap


# ------------------------------------------------------------------------------------------------------ plan


def run_seconds(lt, master: bool) -> float:
    """How long the load runs, as planned (the shapes stop themselves; this also bounds the subprocess)."""
    from loadtest.shapes import step_stages

    if lt.profile == "step":
        s = lt.step
        return len(step_stages(s.start_users, s.step_users, s.max_users, s.step_duration_s)) * s.step_duration_s
    if lt.profile == "sweep":
        lag = WORKER_REPORT_LAG_S if master else 0.0
        return len(lt.sweep.levels) * (lt.sweep.level_duration_s + lag + 1.0)
    return lt.duration_s


def make_plan(args) -> tuple[dict, object]:
    """Validate everything and check the server; returns (plan, config). Raises PersonaGPTError on bad input."""
    from loadtest.preflight import auth_headers, check_lengths, check_server, normalize_host, probe_request
    from loadtest.prompts import build_prompts
    from personagpt.config import load_config

    flags = [f"loadtest.{k}={v}" for k, v in (("out", args.out), ("profile", args.profile)) if v is not None]
    cfg = load_config(args.config, [*args.overrides, *flags])
    lt = cfg.loadtest
    host = normalize_host(args.host)
    if args.master and args.expect_workers < 1:
        raise ConfigError("--expect-workers must be >= 1")
    layout = RunLayout.of(cfg.name)
    dataset = Path(lt.dataset) if lt.dataset is not None else layout.data
    if not dataset.is_dir():
        raise ConfigError(f"loadtest.dataset: {dataset}: dataset artifact folder does not exist "
                          f"(personagpt data prepare --out {dataset})")
    api_key = os.environ.get(lt.api_key_env) or None
    say(f"checking {host} ...")
    server = check_server(host, api_key, lt.api_key_env, lt.model, lt.connect_timeout_s, lt.preflight_timeout_s)
    check_lengths(server, lt.max_input_tokens, lt.max_tokens)
    prompts, prompt_stats = build_prompts(dataset, lt.split, lt.tokenizer, lt.num_prompts, lt.min_input_tokens,
                                          lt.max_input_tokens, cfg.seed)
    server["probe"] = probe_request(host, auth_headers(api_key), server["model"], prompts[0]["messages"],
                                    lt.connect_timeout_s, lt.preflight_timeout_s)
    say(f"server ok: model {server['model']!r}, check request TTFT {server['probe']['ttft_ms']:.0f} ms; "
        f"{len(prompts)} prompts from {dataset}/{lt.split}.jsonl "
        f"({prompt_stats['input_tokens_min']}-{prompt_stats['input_tokens_max']} input tokens)")
    out = Path(lt.out) if lt.out is not None else layout.loadtest(server["model"], lt.profile)
    plan = {
        "host": host, "model": server["model"], "server": server, "profile": lt.profile, "users": lt.users,
        "spawn_rate": lt.spawn_rate or float(lt.users), "duration_s": lt.duration_s,
        "run_s": run_seconds(lt, args.master), "max_requests": lt.max_requests,
        "step": lt.step.model_dump(mode="json"), "poisson": lt.poisson.model_dump(mode="json"),
        "sweep": lt.sweep.model_dump(mode="json"), "slo": lt.slo.model_dump(mode="json"),
        "max_tokens": lt.max_tokens, "ignore_eos": lt.ignore_eos, "temperature": lt.temperature,
        "api_key_env": lt.api_key_env, "connect_timeout_s": lt.connect_timeout_s,
        "request_timeout_s": lt.request_timeout_s, "stop_timeout_s": lt.stop_timeout_s, "seed": cfg.seed,
        "tokenizer": prompt_stats["tokenizer"], "dataset": str(dataset.resolve()), "prompt_stats": prompt_stats,
        "prompts": prompts, "out_final": str(out.resolve()),
    }
    return plan, cfg


def locust_args(plan: dict, args, tmp: Path) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", plan["host"],
           "--stop-timeout", f"{plan['stop_timeout_s']:g}", "--exit-code-on-error", "0",
           "--csv", str(tmp / "locust"), "--html", str(tmp / "report.html")]
    if plan["profile"] == "fixed":
        cmd += ["--users", str(plan["users"]), "--spawn-rate", f"{plan['spawn_rate']:g}",
                "--run-time", f"{max(1, round(plan['duration_s']))}s"]
    elif plan["profile"] == "poisson":
        n = plan["poisson"]["max_concurrency"]
        cmd += ["--users", str(n), "--spawn-rate", str(n), "--run-time", f"{max(1, round(plan['duration_s']))}s"]
    if args.web:
        cmd += ["--web-host", args.web_host, "--web-port", str(args.web_port)]
    else:
        cmd += ["--headless"]
    if args.master:
        cmd += ["--master", "--expect-workers", str(args.expect_workers), "--expect-workers-max-wait",
                f"{args.expect_workers_max_wait:g}", "--master-bind-host", args.master_bind_host,
                "--master-bind-port", str(args.master_bind_port)]
    return cmd


def run_locust(cmd: list[str], env: dict, log_path: Path, timeout: float | None) -> int:
    """Run Locust in its own process group, its output teed to ``log_path`` and our stderr; bounded."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)

        def pump():
            for line in proc.stdout:
                log.write(line)
                log.flush()
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

        t = threading.Thread(target=pump, daemon=True)
        t.start()

        def on_term(signum, frame):  # stopped from outside: stop Locust the same way (it writes its reports)
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            t.join(5)
            raise LoadtestFailed(f"Locust did not finish within {timeout:.0f} s (planned run plus stop timeout "
                                 f"and margin); stopped it. See {log_path.name}") from None
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: let Locust stop and write its reports, then post-process
            try:
                os.killpg(proc.pid, signal.SIGINT)  # Locust's Ctrl-C: stops, writes CSV and HTML, exits
                rc = proc.wait(60)
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                raise LoadtestFailed("interrupted, and Locust did not stop within 60 s") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        t.join(10)
    return rc


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------------ run


def run(args) -> int:
    try:
        import locust  # noqa: F401
    except ImportError:
        raise ConfigError("Locust is not installed in this environment: pip install -e '.[loadtest]'") from None
    if args.worker:
        return run_worker(args)
    from personagpt.artifacts import staging_dir

    plan, cfg = make_plan(args)
    timeout = None if args.web else (plan["run_s"] + plan["stop_timeout_s"] + 90
                                     + (args.expect_workers_max_wait if args.master else 0))
    if args.web:
        say(f"Locust web UI on http://{args.web_host}:{args.web_port} ({plan['profile']} profile); Ctrl-C or SIGTERM "
            f"ends it and writes the results to {plan['out_final']}")
    else:
        say(f"{plan['profile']} load on {plan['host']} for about {plan['run_s']:.0f} s; results: {plan['out_final']}")
    with staging_dir(plan["out_final"]) as tmp:
        plan["out"] = str(tmp)
        (tmp / "plan.json").write_text(json.dumps(plan, indent=2, ensure_ascii=False) + "\n")
        env = {**os.environ, PLAN_ENV: str(tmp / "plan.json"), "PYTHONUNBUFFERED": "1"}
        rc = run_locust(locust_args(plan, args, tmp), env, tmp / "locust.log", timeout)
        if rc != 0 or not (tmp / "records.jsonl").is_file():
            raise LoadtestFailed(f"Locust exited with code {rc}" +
                                 ("" if (tmp / "records.jsonl").is_file() else " without writing records.jsonl") +
                                 f"; last lines of its log:\n{_log_tail(tmp / 'locust.log')}")
        summary = finish(plan, cfg, tmp)
    out = Path(plan["out_final"])
    report(summary, out)
    return 0 if summary["slo"]["passed"] else EXIT_SLO


def finish(plan: dict, cfg, folder: Path) -> dict:
    """summary.json, plots and manifest.json from what the Locust run left in ``folder``."""
    from loadtest import plots
    from loadtest.summary import build_summary
    from personagpt.artifacts import new_manifest, write_manifest

    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]
    stages_info = json.loads((folder / "stages.json").read_text())
    summary = build_summary(plan, records, stages_info, folder / "locust_stats.csv")
    summary["plots"] = plots.write_all(summary, records, stages_info["stages"], folder)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    keys = ("requests", "failed", "error_rate", "requests_per_s", "output_tokens_per_s", "ttft_ms", "itl_ms",
            "e2e_ms", "goodput")
    write_manifest(folder, new_manifest("loadtest", "loadtest", config=cfg.to_dict(),
                                        parents={"dataset": plan["dataset"]},
                                        metrics={k: summary[k] for k in keys},
                                        server={"host": plan["host"], "model": plan["model"]},
                                        slo=summary["slo"]))
    return summary


def report(summary: dict, out: Path) -> None:
    def d(key):
        m = summary[key]
        return "n/a" if m["p50"] is None else f"p50 {m['p50']:.1f} / p95 {m['p95']:.1f} / p99 {m['p99']:.1f} ms"

    say(f"{summary['requests']} requests ({summary['failed']} failed) in {summary['duration_s']:.1f} s: "
        f"{summary['requests_per_s']:.2f} req/s, {summary['output_tokens_per_s']:.1f} output tokens/s, "
        f"goodput {summary['goodput']['share']:.3f}")
    say(f"TTFT {d('ttft_ms')}; ITL {d('itl_ms')}; E2E {d('e2e_ms')}")
    sat = summary["slo"].get("saturation")
    if sat:
        say(f"sweep: best {sat['max_output_tokens_per_s']} output tokens/s at {sat['max_throughput_users']} users; "
            f"stopped after {sat['stopped_after_users']} users ({sat['stop_reason']}); highest level meeting the "
            f"SLO: {summary['slo']['max_users_meeting_slo']}")
    for v in summary["slo"]["violations"]:
        say(f"SLO violated: {v}")
    say(f"{'SLO met' if summary['slo']['passed'] else 'SLO VIOLATED'}; results in {out}")
    print(json.dumps({"out": str(out), "passed": summary["slo"]["passed"], "requests": summary["requests"],
                      "failed": summary["failed"], "output_tokens_per_s": summary["output_tokens_per_s"],
                      "ttft_p95_ms": summary["ttft_ms"]["p95"], "violations": summary["slo"]["violations"]}),
          flush=True)


def run_worker(args) -> int:
    """A distributed worker: Locust with our locustfile, connected to the master (which sends the plan)."""
    if args.host or args.config or args.overrides:
        say("note: a worker takes host, prompts and settings from the master; --host/--config/overrides ignored")
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", args.master_host,
           "--master-port", str(args.master_port)]
    env = {k: v for k, v in os.environ.items() if k != PLAN_ENV}
    os.chdir(ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)  # Locust becomes this process: signals (SIGTERM from Kubernetes) reach it


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background: Locust would inherit the
        signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored SIGINT and not stop on our Ctrl-C
    if args.master and args.worker:
        print("error: --master and --worker exclude each other", file=sys.stderr)
        return 2
    try:
        return run(args)
    except PersonaGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except LoadtestFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
