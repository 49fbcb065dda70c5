"""Training throughput and memory per ZeRO stage: tokens/s and peak memory per rank for ZeRO 0/1/2/3 on 1 and 2
ranks, for the tiny preset model and SmolLM2-135M, plus the model-state bytes each rank actually holds against the
ZeRO formula.

    python train/bench.py                                  # everything (CPU: ~10 min on 2 cores)
    python train/bench.py --models tiny --stages 2 3 --ranks 2
    python train/bench.py --out runs/bench/train.json      # also write the rows as JSON

Each configuration runs as its own job under the real launcher (``deepspeed --num_gpus R train/bench.py --worker``)
on synthetic token batches of a fixed length (same work for every configuration), with the DeepSpeed config the
training stage builds (``personagpt.training.ds_config``) and its loss (``causal_lm_loss``). One rank gets all the
machine's cores, two ranks half each, so rows compare the same hardware.

Model states per rank are measured, not derived: after the last backward of a step and before the optimizer step
(when parameters, gradients and optimizer states all exist), every live tensor storage of the rank (parameters,
ZeRO partitions, gradients and gradient buckets, optimizer states, fp32 master copies) is summed once. The formula
column is what ZeRO predicts for the bytes per parameter of this setup with Ψ parameters on N ranks:

    fp32 (CPU):   stage 0: 16Ψ     stage 1: 8Ψ + 12Ψ/N    stage 2: 4Ψ + 16Ψ/N    stage 3: 20Ψ/N
                  (4 weights + 4 gradients + 8 Adam moments; with ZeRO, DeepSpeed also keeps a 4-byte fp32 master
                  copy of each rank's partition even when the weights are fp32 already)
    bf16 (GPU):   the ZeRO paper's mixed precision: 16Ψ, 4Ψ + 12Ψ/N, 2Ψ + 14Ψ/N, 16Ψ/N

On a GPU the table adds MFU for bf16 (6Ψ + attention FLOPs per token against the GPU's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {"tiny": ROOT / "configs" / "tiny.yaml", "smollm2": ROOT / "configs" / "smollm2-persona.yaml"}
# per model: micro-batch, sequence length, warmup steps, timed steps (SmolLM2 kept short on CPU)
SHAPES = {"tiny": (8, 128, 2, 6), "smollm2": (2, 128, 1, 2)}
# dense bf16 peak FLOP/s by GPU name (for MFU)
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
                 "RTX 4090": 165e12}


def formula_bytes(stage: int, psi: int, n: int, mixed: bool) -> float:
    if mixed:
        return {0: 16 * psi, 1: 4 * psi + 12 * psi / n, 2: 2 * psi + 14 * psi / n, 3: 16 * psi / n}[stage]
    return {0: 16 * psi, 1: 8 * psi + 12 * psi / n, 2: 4 * psi + 16 * psi / n, 3: 20 * psi / n}[stage]


# --- worker (one rank of one configuration) --------------------------------------------------------------------
def live_tensor_bytes(engine) -> dict[str, int]:
    """Bytes of every live tensor storage of this process, each storage once, by what holds it."""
    import gc

    import torch

    seen: dict[tuple, tuple[int, str]] = {}

    def add(t, cat: str) -> None:
        if not torch.is_tensor(t) or t.device.type == "meta":
            return
        st = t.untyped_storage()
        key = (st.data_ptr(), str(t.device))
        if st.data_ptr() == 0 or key in seen:
            return
        seen[key] = (st.nbytes(), cat)

    for p in engine.module.parameters():
        add(getattr(p, "ds_tensor", None), "params")
        add(p.data, "params")
        add(p.grad, "grads")
    for state in engine.basic_optimizer.state.values():
        for v in state.values():
            add(v, "optimizer")
    for obj in gc.get_objects():
        try:
            if torch.is_tensor(obj):
                add(obj, "other")
        except Exception:  # objects that fail isinstance checks (lazy modules)
            continue
    out: dict[str, int] = {}
    for nbytes, cat in seen.values():
        out[cat] = out.get(cat, 0) + nbytes
    out["total"] = sum(out.values())
    return out


def worker(a) -> None:
    from personagpt.training.env import init_distributed, prepare_process_env

    prepare_process_env()
    import deepspeed
    import torch

    from personagpt.config import load_config
    from personagpt.config.train import TrainConfig
    from personagpt.device import dtype as pick_dtype
    from personagpt.training.batching import BatchPlan
    from personagpt.training.ds_config import build_ds_config
    from personagpt.training.loop import causal_lm_loss, peak_memory_bytes
    from personagpt.training.model_setup import hf_config, pretrained_config, resolve_model_source

    dist = init_distributed()
    cfg = load_config(PRESETS[a.model])
    source = resolve_model_source(cfg.model, convert_missing=not a.random_init)
    dtype = pick_dtype("auto", dist.device)
    torch.manual_seed(0)
    from transformers import AutoConfig, AutoModelForCausalLM

    if source.kind == "scratch":
        model = AutoModelForCausalLM.from_config(hf_config(source, cfg.model), dtype=dtype)
    elif a.random_init:  # the checkpoint's architecture, random weights: same shapes and work, no weights needed
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(source.path)), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(source.path), config=pretrained_config(source), dtype=dtype)
    model.config.use_cache = False
    psi = sum(p.numel() for p in model.parameters())  # tied weights counted once
    tcfg = TrainConfig(zero_stage=a.stage, micro_batch_size=a.micro, grad_accum_steps=1, lr=1e-4, warmup_steps=0)
    plan = BatchPlan.resolve(tcfg, dist.world_size)
    ds_config = build_ds_config(tcfg, plan, dtype, dist.device.type, psi)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()],
                                      config=ds_config)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1234 + dist.rank)
    times, states = [], None
    for i in range(a.warmup + a.steps):
        ids = torch.randint(0, vocab, (a.micro, a.seq), generator=g).to(dist.device)
        batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}
        if dist.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = causal_lm_loss(engine, batch)
        engine.backward(loss / (a.micro * (a.seq - 1)))
        if i == a.warmup + a.steps - 1:
            if dist.device.type == "cuda":
                torch.cuda.synchronize()
            t_pause = time.perf_counter()
            states = live_tensor_bytes(engine)
            t0 += time.perf_counter() - t_pause  # measuring is not training time
        engine.step()
        if dist.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    res = {"rank": dist.rank, "world_size": dist.world_size, "threads": torch.get_num_threads(),
           "device": dist.device.type, "dtype": str(dtype).replace("torch.", ""), "psi": psi,
           "step_seconds": times, "tokens_per_step_per_rank": a.micro * a.seq,
           "peak_memory_bytes": peak_memory_bytes(dist.device), "model_states": states,
           "gpu_name": torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else None,
           "num_layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size}
    Path(a.json).with_suffix(f".rank{dist.rank}.json").write_text(json.dumps(res))


# --- driver ----------------------------------------------------------------------------------------------------
def run_config(model: str, stage: int, ranks: int, tmp: Path, timeout: float, shape: tuple | None = None,
               random_init: bool = False) -> dict:
    from personagpt.network import free_port

    micro, seq, warmup, steps = shape or SHAPES[model]
    out = tmp / f"{model}-z{stage}-r{ranks}.json"
    port = free_port()
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))
    launcher = Path(sys.executable).parent / "deepspeed"  # the deepspeed script, or its module where not installed
    launcher = [str(launcher)] if launcher.is_file() else [sys.executable, "-m", "deepspeed.launcher.runner"]
    cmd = [*launcher, "--num_gpus", str(ranks), "--master_port", str(port),
           str(Path(__file__).resolve()), "--worker", "--model", model, "--stage", str(stage), "--micro", str(micro),
           "--seq", str(seq), "--warmup", str(warmup), "--steps", str(steps), "--json", str(out),
           *(["--random-init"] if random_init else [])]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"model": model, "stage": stage, "ranks": ranks, "error": proc.stderr[-1500:]}
    per_rank = [json.loads(out.with_suffix(f".rank{r}.json").read_text()) for r in range(ranks)]
    r0 = per_rank[0]
    # a step ends when every rank is done
    step_s = [max(ts) for ts in zip(*(r["step_seconds"] for r in per_rank), strict=True)]
    tokens = r0["tokens_per_step_per_rank"] * ranks * len(step_s)
    psi, mixed = r0["psi"], r0["dtype"] != "float32"
    row = {"model": model, "stage": stage, "ranks": ranks, "threads_per_rank": r0["threads"], "device": r0["device"],
           "dtype": r0["dtype"], "psi": psi, "tokens_per_s": tokens / sum(step_s),
           "peak_memory_bytes_per_rank": [r["peak_memory_bytes"] for r in per_rank],
           "model_states_bytes_per_rank": [r["model_states"] for r in per_rank],
           "formula_bytes": formula_bytes(stage, psi, ranks, mixed), "micro_batch": micro, "seq_len": seq,
           "timed_steps": len(step_s), "random_init": random_init, "job_seconds": round(time.time() - t0, 1)}
    if r0["device"] == "cuda" and mixed:
        peak = next((v for k, v in GPU_PEAK_BF16.items() if k in (r0["gpu_name"] or "")), None)
        flops_per_token = 6 * psi + 12 * r0["num_layers"] * r0["hidden_size"] * seq
        row["gpu_name"] = r0["gpu_name"]
        row["mfu"] = row["tokens_per_s"] / ranks * flops_per_token / peak if peak else None
    return row


def fmt_table(rows: list[dict]) -> str:
    mib = 1 << 20
    gpu = any("mfu" in r for r in rows)
    head = ["model", "ZeRO", "ranks", "thr/rank", "tokens/s", "peak mem/rank MiB", "model states/rank MiB (measured)",
            "ZeRO formula MiB", "measured/formula"] + (["MFU"] if gpu else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['stage']} | {r['ranks']} | failed: "
                         f"{r['error'].strip().splitlines()[-1][:80] if r['error'].strip() else '?'} |")
            continue
        ms = max(s["total"] for s in r["model_states_bytes_per_rank"])
        cells = [r["model"], str(r["stage"]), str(r["ranks"]), str(r["threads_per_rank"]), f"{r['tokens_per_s']:.0f}",
                 f"{max(r['peak_memory_bytes_per_rank']) / mib:.0f}", f"{ms / mib:.1f}",
                 f"{r['formula_bytes'] / mib:.1f}", f"{ms / r['formula_bytes']:.2f}"]
        if gpu:
            cells.append(f"{r['mfu'] * 100:.1f}%" if r.get("mfu") else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=sorted(PRESETS))
    ap.add_argument("--stages", nargs="+", type=int, default=[0, 1, 2, 3], choices=[0, 1, 2, 3])
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    ap.add_argument("--table", type=Path, default=None, help="print the table of rows saved with --out, run nothing")
    ap.add_argument("--shape", nargs=4, type=int, default=None, metavar=("MICRO", "SEQ", "WARMUP", "STEPS"),
                    help="micro-batch, sequence length, warmup and timed steps for every model (default: per model, "
                         "sized for CPUs; on a GPU use e.g. 16 512 3 10)")
    ap.add_argument("--random-init", action="store_true",
                    help="pretrained models: their architecture (config.json) with random weights — same shapes "
                         "and work, for a machine that has the config but not the weights")
    # worker mode (started by the launcher)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    for k in ("model", "json"):
        ap.add_argument(f"--{k}", help=argparse.SUPPRESS)
    for k in ("stage", "micro", "seq", "warmup", "steps"):
        ap.add_argument(f"--{k}", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.shape and (min(a.shape) < 1 or a.shape[2] < 1):
        ap.error("--shape: every value >= 1 (WARMUP >= 1: Adam's states only exist after the first optimizer step, "
                 "and model states are measured on a later one)")
    if a.worker:
        worker(a)
        return 0

    if a.table:
        rows = json.loads(a.table.read_text())
        for r in rows:  # the formula column follows this file's formulas
            if "psi" in r:
                r["formula_bytes"] = formula_bytes(r["stage"], r["psi"], r["ranks"], r["dtype"] != "float32")
        print(fmt_table(rows))
        return 0

    import torch

    ranks = list(a.ranks)
    if torch.cuda.is_available():
        ranks = [r for r in ranks if r <= torch.cuda.device_count()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        for model in a.models:
            for stage in a.stages:
                for r in ranks:
                    row = run_config(model, stage, r, Path(tmp), a.timeout, a.shape, a.random_init)
                    rows.append(row)
                    status = "failed" if "error" in row else f"{row['tokens_per_s']:.0f} tokens/s"
                    print(f"[{len(rows)}] {model} ZeRO-{stage} {r} rank(s): {status} "
                          f"({row.get('job_seconds', '?')} s)", file=sys.stderr, flush=True)
    print(fmt_table(rows))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
