"""First throughput figure: output tokens/s of vLLM vs the baseline server at a few concurrency levels.

    python serve/bench.py --artifact DIR [--engines vllm baseline] [--concurrency 1 8 32] [--max-tokens 64]
                          [--requests 32] [--out bench.json] [key=value ...]
    python serve/bench.py --url http://127.0.0.1:8000 --model NAME ...      # a server that is already running

Each request is a chat completion of a distinct conversation with exactly ``--max-tokens`` output tokens
(``ignore_eos``), temperature 0. ``--requests`` requests per level (at least the concurrency), issued by
``concurrency`` client threads. Output tokens come from each response's ``usage``. The full load-testing
harness (TTFT/ITL percentiles, load shapes, SLOs) is loadtest/; this is the quick, dependency-free check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TOPICS = ["the weekend", "your new job", "that movie", "the weather", "your trip", "dinner plans",
          "the game last night",
          "your sister", "music lately", "the book you lent me", "moving house", "your dog"]


def messages(i: int) -> list[dict]:
    t = TOPICS[i % len(TOPICS)]
    return [{"role": "user", "content": f"hey! #{i} how was {t}?"},
            {"role": "assistant", "content": "pretty good honestly"},
            {"role": "user", "content": f"tell me more about {t}"}]


def one_request(url: str, model: str, api_key: str | None, i: int, max_tokens: int) -> dict:
    body = {"model": model, "messages": messages(i), "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=1800) as r:
            usage = json.loads(r.read())["usage"]
        return {"ok": True, "latency": time.perf_counter() - t0, "out": usage["completion_tokens"],
                "in": usage["prompt_tokens"]}
    except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
        return {"ok": False, "latency": time.perf_counter() - t0, "error": str(e)[:200], "out": 0, "in": 0}


def run_level(url: str, model: str, api_key: str | None, concurrency: int, n: int, max_tokens: int,
              offset: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    next_i = iter(range(offset, offset + n))

    def worker():
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            r = one_request(url, model, api_key, i, max_tokens)
            with lock:
                results.append(r)

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    lat = sorted(r["latency"] for r in ok)
    out_tokens = sum(r["out"] for r in ok)
    return {"concurrency": concurrency, "requests": n, "errors": n - len(ok), "wall_s": round(wall, 2),
            "output_tokens": out_tokens, "output_tok_s": round(out_tokens / wall, 1),
            "requests_s": round(len(ok) / wall, 2),
            "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
            "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
            "prompt_tokens_mean": round(statistics.mean(r["in"] for r in ok), 1) if ok else None,
            # 1-minute load average around the level: other work on the machine skews every figure
            "loadavg": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def bench_server(url: str, model: str, api_key: str | None, levels: list[int], requests_per_level: int,
                 max_tokens: int, label: str) -> list[dict]:
    one_request(url, model, api_key, 10**6, max_tokens)  # warm-up (first-request compilation, caches)
    rows = []
    offset = 0
    for c in levels:
        n = max(requests_per_level, c)
        row = {"engine": label, **run_level(url, model, api_key, c, n, max_tokens, offset)}
        offset += n
        print(f"{label:9s} c={c:<3d} {row['output_tok_s']:8.1f} out tok/s  {row['requests_s']:6.2f} req/s  "
              f"p50 {row['latency_p50_s']}s  p95 {row['latency_p95_s']}s  errors {row['errors']}  "
              f"load {row['loadavg'][0]}-{row['loadavg'][1]}", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, help="start each engine on this artifact (serve/run.py), bench, stop")
    ap.add_argument("--url", help="bench a running server instead")
    ap.add_argument("--model", help="served model name (with --url)")
    ap.add_argument("--engines", nargs="+", default=["vllm", "baseline"], choices=["vllm", "baseline"])
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=32, help="requests per concurrency level (>= concurrency)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)

    from personagpt.config import load_config
    from personagpt.errors import PersonaGPTError

    try:
        cfg = load_config(args.config, args.overrides).serve
    except PersonaGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    api_key = os.environ.get(cfg.api_key_env) or None
    rows: list[dict] = []
    meta: dict = {"max_tokens": args.max_tokens, "cpu_count": os.cpu_count()}
    if args.url:
        if not args.model:
            ap.error("--url needs --model")
        rows = bench_server(args.url.rstrip("/"), args.model, api_key, args.concurrency, args.requests,
                            args.max_tokens, "server")
    elif args.artifact:
        from personagpt import process_group
        from serve import plan
        from serve.ready import NotReady, wait_ready
        from serve.run import _server_env

        for engine in args.engines:
            c = cfg.model_copy(update={"engine": engine, "port": 0,
                                       "max_num_seqs": max(cfg.max_num_seqs, max(args.concurrency))})
            try:
                launch = plan.build_launch(args.artifact, c)
            except PersonaGPTError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            launch.make_dirs()
            t0 = time.monotonic()
            proc = process_group.start(launch.argv, _server_env(launch, api_key), launch.log_file, cwd=ROOT)
            try:
                wait_ready(launch.url, launch.model, api_key, c.ready_timeout_s, proc.poll, launch.log_file)
                startup = time.monotonic() - t0
                print(f"{engine}: ready in {startup:.1f} s ({launch.url}, log {launch.log_file})", flush=True)
                meta[f"{engine}_startup_s"] = round(startup, 1)
                rows += bench_server(launch.url, launch.model, api_key, args.concurrency, args.requests,
                                     args.max_tokens, engine)
            except NotReady as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            finally:
                process_group.stop_group(proc.pid, c.shutdown_timeout_s, proc)
    else:
        ap.error("give --artifact or --url")

    by = {(r["engine"], r["concurrency"]): r for r in rows}
    if "vllm" in args.engines and "baseline" in args.engines and args.artifact:
        print("\nconcurrency  vllm tok/s  baseline tok/s  ratio")
        for c in args.concurrency:
            v, b = by.get(("vllm", c)), by.get(("baseline", c))
            if v and b and b["output_tok_s"]:
                print(f"{c:11d}  {v['output_tok_s']:10.1f}  {b['output_tok_s']:14.1f}  "
                      f"{v['output_tok_s'] / b['output_tok_s']:5.1f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
