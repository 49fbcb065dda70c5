"""vLLM vs the Hugging Face baseline server under the same load, and Locust vs vLLM's own benchmark client.

    python loadtest/bench.py --artifact MODEL_DIR --dataset DATASET_DIR [--config FILE] [--out DIR]
                             [--levels 1,8,32] [--duration 30] [--xcheck 8] [key=value ...]

For each engine in turn (never both at once: they would share the CPU) it starts the server over the same model
artifact with ``serve/run.py``, runs ``loadtest/run.py`` (fixed concurrency, same prompts, same output length with
ignore_eos) at every level, and stops the server. Then: output tokens/s and TTFT p95 of both engines per level
and the vLLM / baseline ratios. Cross-check: at concurrency ``--xcheck`` vLLM's benchmark client
(``vllm.benchmarks.serve``, in .venv-serve) sends the same number of requests with the same prompts and
concurrency as a Locust run, alternating ``--xcheck-repeats`` times; TTFT, time per output token and throughput
are compared (medians, with each repeat's range: on a shared machine the noise between repeats is large).

Writes ``bench.json``, ``bench.md`` (the tables), ``bench.png`` and every run's own results folder.
Servers already running can be given instead (``--vllm-url``, ``--baseline-url``; API key from the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from personagpt.errors import ConfigError, PersonaGPTError
from personagpt.paths import ROOT

RUN = ROOT / "loadtest" / "run.py"
SERVE = ROOT / "serve" / "run.py"
VLLM_CLIENT = ROOT / "loadtest" / "vllm_client.py"
READY_TIMEOUT_S = {"vllm": 900.0, "baseline": 300.0}


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Server:
    """``serve/run.py --artifact A --engine E --port 0`` in the foreground; ready once it prints its JSON line."""

    def __init__(self, engine: str, artifact: Path, overrides: list[str], log_dir: Path):
        self.engine = engine
        self.log = log_dir / f"{engine}-server.log"
        cmd = [sys.executable, str(SERVE), "--artifact", str(artifact), "--engine", engine, "--port", "0",
               f"serve.log_file={self.log}", *overrides]
        self.stderr = open(log_dir / f"{engine}-run.stderr", "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        t0, self.ready = time.monotonic(), None
        while self.ready is None:
            try:
                line = lines.get(timeout=max(0.1, READY_TIMEOUT_S[engine] - (time.monotonic() - t0)))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise PersonaGPTError(f"{engine} server did not become ready; see {self.log} and "
                                      f"{self.stderr.name}")
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                self.ready = json.loads(line)
        self.url, self.startup_s = self.ready["url"], time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def load(url: str, out: Path, users: int, duration: float, args, extra: list[str]) -> dict:
    """One fixed-concurrency Locust run through loadtest/run.py; its summary."""
    cmd = [sys.executable, str(RUN), "--host", url, "--out", str(out), "--profile", "fixed",
           f"loadtest.users={users}", f"loadtest.duration_s={duration}", f"loadtest.dataset={args.dataset}",
           # no gate here: the benchmark measures; every request still has to succeed (checked below)
           "loadtest.slo.ttft_p95_ms=null", "loadtest.slo.itl_p95_ms=null", "loadtest.slo.e2e_p95_ms=null",
           "loadtest.slo.max_error_rate=1", *(["--config", str(args.config)] if args.config else []), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration + 600)
    if proc.returncode != 0:
        raise PersonaGPTError(f"load test {out.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    if summary["failed"]:
        raise PersonaGPTError(f"load test {out.name}: {summary['failed']} requests failed: {summary['errors']}")
    return summary


METRICS = [  # (row, Locust summary path, vLLM benchmark result key)
    ("output tokens/s", ("output_tokens_per_s",), "output_throughput"),
    ("requests/s", ("requests_per_s",), "request_throughput"),
    ("TTFT mean (ms)", ("ttft_ms", "mean"), "mean_ttft_ms"),
    ("TTFT p50 (ms)", ("ttft_ms", "p50"), "p50_ttft_ms"),
    ("TTFT p95 (ms)", ("ttft_ms", "p95"), "p95_ttft_ms"),
    ("ITL mean = vLLM TPOT mean (ms)", ("itl_ms", "mean"), "mean_tpot_ms"),
    ("ITL p50 = vLLM TPOT p50 (ms)", ("itl_ms", "p50"), "p50_tpot_ms"),
    ("ITL p95 = vLLM TPOT p95 (ms)", ("itl_ms", "p95"), "p95_tpot_ms"),
    ("E2E p50 (ms)", ("e2e_ms", "p50"), "p50_e2el_ms"),
    ("duration (s)", ("duration_s",), "duration"),
]


def vllm_client(url: str, model: str, plan_dir: Path, requests: int, users: int, out: Path) -> dict:
    """vLLM's benchmark client with a Locust run's prompts (same order), concurrency and output length."""
    plan = json.loads((plan_dir / "plan.json").read_text())
    python = os.environ.get("PERSONAGPT_VLLM_PYTHON") or str(ROOT / ".venv-serve" / "bin" / "python")
    result = out.with_suffix(".json")
    cmd = [python, str(VLLM_CLIENT), "--url", url, "--model", model, "--prompts", str(plan_dir / "plan.json"),
           "--concurrency", str(users), "--num-prompts", str(requests), "--max-tokens", str(plan["max_tokens"]),
           "--temperature", str(plan["temperature"]), "--tokenizer", plan["tokenizer"], "--api-key-env",
           plan["api_key_env"], "--out", str(result)]
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    if proc.returncode != 0:
        raise PersonaGPTError(f"vLLM's benchmark client failed ({proc.returncode}); see {out.with_suffix('.log')}")
    return json.loads(result.read_text())


def xcheck(url: str, users: int, repeats: int, out: Path, args) -> dict:
    """Alternate Locust and vLLM's client ``repeats`` times at the same load (same prompts in the same order, same
    request count, concurrency, output length): the spread of each tool's repeats shows the machine's noise."""
    import statistics

    loc, vb = [], []
    for i in range(repeats):
        d = out / f"locust-{i + 1}"
        s = load(url, d, users, args.duration, args, args.overrides)
        loc.append(s)
        vb.append(vllm_client(url, s["model"], d, s["completed"], users, out / f"vllm-bench-{i + 1}"))
        say(f"cross-check {i + 1}/{repeats}: Locust {s['output_tokens_per_s']:.1f} tok/s, TTFT p50 "
            f"{s['ttft_ms']['p50']:.1f} ms | vllm bench {vb[-1]['output_throughput']:.1f} tok/s, TTFT p50 "
            f"{vb[-1]['p50_ttft_ms']:.1f} ms ({s['completed']} requests each)")
    rows = []
    for name, path, key in METRICS:
        a = [_get(s, path) for s in loc]
        b = [v[key] for v in vb]
        ma, mb = statistics.median(a), statistics.median(b)
        pairs = [100.0 * (x - y) / y for x, y in zip(a, b, strict=True) if y]
        rows.append({"metric": name, "locust": ma, "vllm_bench": mb, "locust_runs": a, "vllm_bench_runs": b,
                     "diff_pct": 100.0 * (ma - mb) / mb if mb else None, "pair_diff_pct": pairs,
                     "median_pair_diff_pct": statistics.median(pairs) if pairs else None})
    return {"users": users, "repeats": repeats, "requests": [s["completed"] for s in loc], "rows": rows}


def _get(d: dict, path: tuple):
    for k in path:
        d = d[k]
    return d


def tables(result: dict, xcheck_only: bool = False) -> str:
    lines = [] if xcheck_only else [f"# vLLM vs baseline: {result['artifact']}", "",
             f"Prompts: {result['prompts']['prompts']} held-out chats ({result['prompts']['input_tokens_min']}-"
             f"{result['prompts']['input_tokens_max']} input tokens, mean {result['prompts']['input_tokens_mean']}); "
             f"{result['max_tokens']} output tokens per request (ignore_eos); {result['duration_s']:g} s per level; "
             f"device: {result['device']}.", "",
             "| users | vLLM tok/s | baseline tok/s | ratio | vLLM TTFT p95 ms | baseline TTFT p95 ms | vLLM req/s "
             "| baseline req/s |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result.get("levels", []):
        lines.append(f"| {r['users']} | {r['vllm']['output_tokens_per_s']:.1f} | "
                     f"{r['baseline']['output_tokens_per_s']:.1f} | {r['throughput_ratio']:.2f}x | "
                     f"{r['vllm']['ttft_p95_ms']:.1f} | {r['baseline']['ttft_p95_ms']:.1f} | "
                     f"{r['vllm']['requests_per_s']:.2f} | {r['baseline']['requests_per_s']:.2f} |")
    if result.get("xcheck"):
        x = result["xcheck"]
        lines += ["", f"## Locust vs vLLM's benchmark client (vLLM server, {x['users']} concurrent users, same "
                      f"prompts, request count and output length; {x['repeats']} alternating repeats of "
                      f"{', '.join(map(str, x['requests']))} requests; medians, and each repeat's range)", "",
                  "| metric | Locust | vllm bench | diff of medians | median diff of pairs | diff per repeat |",
                  "|---|---:|---:|---:|---:|---|"]

        def rng(v):
            return f"{min(v):.1f}-{max(v):.1f}"

        for row in x["rows"]:
            d = "" if row["diff_pct"] is None else f"{row['diff_pct']:+.1f}%"
            per = ", ".join(f"{p:+.0f}%" for p in row["pair_diff_pct"])
            mp = "" if row["median_pair_diff_pct"] is None else f"{row['median_pair_diff_pct']:+.1f}%"
            lines.append(f"| {row['metric']} | {row['locust']:.2f} ({rng(row['locust_runs'])}) | "
                         f"{row['vllm_bench']:.2f} ({rng(row['vllm_bench_runs'])}) | {d} | {mp} | {per} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [r["users"] for r in result["levels"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for eng, style in (("vllm", "o-"), ("baseline", "s--")):
        a.plot(users, [r[eng]["output_tokens_per_s"] for r in result["levels"]], style, label=eng)
        b.plot(users, [r[eng]["ttft_p95_ms"] for r in result["levels"]], style, label=eng)
    for ax, title in ((a, "output tokens/s"), (b, "TTFT p95 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent users")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    b.set_yscale("log")
    fig.suptitle(f"vLLM vs HF baseline, same artifact and load ({Path(result['artifact']).name})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from personagpt.artifacts import new_manifest, read_manifest, staging_dir, write_manifest
    from personagpt.config import load_config
    from personagpt.paths import RunLayout

    read_manifest(args.artifact, kind="model")
    read_manifest(args.dataset, kind="dataset")
    levels = sorted({int(x) for x in args.levels.split(",")})
    if not levels or levels[0] < 1:
        raise ConfigError(f"--levels {args.levels!r}: positive integers, comma-separated")
    out = Path(args.out) if args.out else RunLayout.of(load_config(args.config).name).bench("loadtest") / \
        Path(args.artifact).resolve().name
    serve_overrides = [f"serve.max_num_seqs={max(64, levels[-1])}", *args.serve_overrides]
    with staging_dir(out) as tmp:
        summaries: dict[str, dict[int, dict]] = {}
        xc = None
        engines = ("vllm",) if args.xcheck_only else ("vllm", "baseline")
        for engine in engines:
            url = args.vllm_url if engine == "vllm" else args.baseline_url
            server = None
            if url is None:
                say(f"starting the {engine} server over {args.artifact} ...")
                server = Server(engine, args.artifact, serve_overrides, tmp)
                url = server.url
                say(f"{engine} ready at {url} in {server.startup_s:.0f} s")
            try:
                summaries[engine] = {}
                for users in ([] if args.xcheck_only else levels):
                    say(f"{engine}: {users} users for {args.duration:g} s ...")
                    s = load(url, tmp / f"{engine}-u{users}", users, args.duration, args, args.overrides)
                    summaries[engine][users] = s
                    say(f"{engine} {users} users: {s['output_tokens_per_s']:.1f} tok/s, TTFT p95 "
                        f"{s['ttft_ms']['p95']:.1f} ms, {s['completed']} requests")
                if engine == "vllm" and args.xcheck:
                    say(f"cross-check at {args.xcheck} users with vLLM's benchmark client ...")
                    xdir = tmp / f"xcheck-u{args.xcheck}"
                    xdir.mkdir()
                    xc = xcheck(url, args.xcheck, args.xcheck_repeats, xdir, args)
            finally:
                if server is not None:
                    server.stop()
        if args.xcheck_only:
            (tmp / "xcheck.json").write_text(json.dumps(xc, indent=2) + "\n")
            text = tables({"xcheck": xc}, xcheck_only=True)
            (tmp / "xcheck.md").write_text(text)
            print(text)
            return 0
        first = summaries["vllm"][levels[0]]

        def pick(s):
            return {"output_tokens_per_s": s["output_tokens_per_s"], "requests_per_s": s["requests_per_s"],
                    "ttft_p50_ms": s["ttft_ms"]["p50"], "ttft_p95_ms": s["ttft_ms"]["p95"],
                    "itl_p50_ms": s["itl_ms"]["p50"], "e2e_p95_ms": s["e2e_ms"]["p95"], "completed": s["completed"]}

        result = {"artifact": str(Path(args.artifact).resolve()), "dataset": str(Path(args.dataset).resolve()),
                  "device": _device(), "duration_s": args.duration, "max_tokens": first["request"]["max_tokens"],
                  "prompts": first["prompts"], "levels": [], "xcheck": xc}
        for users in levels:
            v, b = summaries["vllm"][users], summaries["baseline"][users]
            result["levels"].append({"users": users, "vllm": pick(v), "baseline": pick(b),
                                     "throughput_ratio": v["output_tokens_per_s"] / b["output_tokens_per_s"],
                                     "ttft_p95_ratio": b["ttft_ms"]["p95"] / v["ttft_ms"]["p95"]})
        top = result["levels"][-1]
        result["goal"] = {"users": top["users"], "throughput_ratio": top["throughput_ratio"],
                          "met": top["throughput_ratio"] >= 10.0}
        (tmp / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "bench.md").write_text(tables(result))
        plot(result, tmp / "bench.png")
        write_manifest(tmp, new_manifest("loadtest-bench", "loadtest", parents={"model": args.artifact,
                                                                                 "dataset": args.dataset},
                                         metrics={"goal": result["goal"]}, levels=levels))
    print(tables(result))
    say(f"results in {out}")
    return 0


def _device() -> str:
    import platform

    try:
        gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        if gpu.returncode == 0 and gpu.stdout.strip():
            return gpu.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return f"CPU {platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="loadtest/bench.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, required=True, help="model artifact both servers serve")
    ap.add_argument("--dataset", type=Path, required=True, help="dataset artifact (held-out prompts)")
    ap.add_argument("--config", type=Path, help="YAML config (its loadtest: and serve: sections)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default runs/NAME/bench/loadtest/ARTIFACT, NAME from --config)")
    ap.add_argument("--levels", default="1,8,32", help="concurrency levels (default 1,8,32)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per level")
    ap.add_argument("--xcheck", type=int, default=8, help="concurrency of the cross-check (0: none)")
    ap.add_argument("--xcheck-repeats", type=int, default=3, help="alternating Locust / vLLM client runs")
    ap.add_argument("--xcheck-only", action="store_true", help="only the cross-check (vLLM server only)")
    ap.add_argument("--vllm-url", help="use this running vLLM server instead of starting one")
    ap.add_argument("--baseline-url", help="use this running baseline server instead of starting one")
    ap.add_argument("--serve", dest="serve_overrides", action="append", default=[], metavar="serve.KEY=VALUE",
                    help="override for the servers started here (repeatable)")
    ap.add_argument("overrides", nargs="*", metavar="loadtest.KEY=VALUE", help="passed to every load test")
    args = ap.parse_intermixed_args(argv)
    from personagpt.cli import run_cli

    return run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
