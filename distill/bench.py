"""Distillation benchmark: the same student shape, data and step budget trained (a) with KD and (b) with
cross-entropy only; prints quality retained, parameter ratio and decode speed ratio for both.

    python distill/bench.py --config configs/smollm2-persona.yaml --teacher runs/smollm2-persona/teacher \\
        [--layers 10] [--steps 120] [--ranks 2] [key=value ...]

Each arm runs the real entry (``deepspeed --num_gpus RANKS distill/run.py``) into runs/NAME/bench/distill/ARM and
the table is read from the two student manifests (teacher and student perplexity on the same validation samples
with the same code; decode tokens/s of both on the same prompts and batch). Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from personagpt.network import free_port
from personagpt.paths import RunLayout

ROOT = Path(__file__).resolve().parent.parent


def run_arm(args, name: str, extra: list[str], out: Path) -> dict:
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(args.ranks), "--master_port",
                str(free_port())] if args.ranks > 1 else [sys.executable]
    argv = [*launcher, str(ROOT / "distill" / "run.py"), "--config", args.config, *args.overrides,
            f"distill.teacher={args.teacher}", f"distill.student.num_hidden_layers={args.layers}",
            f"distill.max_steps={args.steps}", f"distill.work_dir={out / name / 'work'}",
            f"distill.output_dir={out / name / 'student'}", "distill.save_every=0", *extra, "--fresh"]
    if args.dataset:
        argv.append(f"distill.dataset={args.dataset}")
    log = out / f"{name}.log"
    t0 = time.time()
    print(f"[{name}] {' '.join(argv[-8:])} (log {log})", flush=True)
    with open(log, "w") as f:
        rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ)).returncode
    if rc != 0:
        sys.exit(f"[{name}] failed with exit code {rc}; see {log}")
    m = json.loads((out / name / "student" / "manifest.json").read_text())
    return {**m["distillation"], "wall_s": round(time.time() - t0, 1), "weight_bytes": m["model"]["weight_bytes"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/smollm2-persona.yaml")
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--dataset", type=Path, default=None, help="default: the teacher's dataset")
    ap.add_argument("--layers", type=int, default=10, help="student depth (SmolLM2: 10 of 30 layers = 47%% of params)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    name = json.loads((args.teacher / "manifest.json").read_text())["config"].get("name", "run")
    out = (args.out or RunLayout.of(name).bench("distill")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    arms = {"kd": ["distill.alpha=0.5", "distill.loss=forward_kl", "distill.temperature=2.0"],
            "ce_only": ["distill.alpha=0.0"]}
    results = {k: run_arm(args, k, v, out) for k, v in arms.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    t = results["kd"]
    print(f"\nteacher: {t['teacher_num_parameters'] / 1e6:.1f}M params, {t['teacher_weight_bytes'] / 1e6:.0f} MB, "
          f"val ppl {t['teacher_val_ppl']:.3f}, decode {t['teacher_decode_tokens_per_s']:.1f} tok/s")
    print("| arm | student params | params ratio | student val ppl | quality retained (teacher/student ppl) | "
          "decode speed ratio | wall s |")
    print("|---|---|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['student_num_parameters'] / 1e6:.1f}M | {r['params_ratio']:.3f} | "
              f"{r['student_val_ppl']:.3f} | "
              f"{r['quality_retained'] * 100:.1f}% | {r['decode_speedup']:.2f}x | {r['wall_s']} |")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
