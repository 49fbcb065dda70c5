"""Distillation benchmark: named arms (student shape, objective, data), each a real distill run on the same teacher;
a table of validation perplexity, quality retained, parameter ratio and decode speed per arm, and KD vs CE-only.

    python distill/bench.py --config configs/smollm2-persona.yaml --teacher runs/smollm2-persona/teacher \\
        --arm kd=alpha=0.5 --arm ce_only=alpha=0 [--arm NAME=key=value,key=value ...] \\
        [--steps 120] [--layers 10] [--ranks 2] [--reuse] [--student NAME=PATH] [shared key=value ...]

Rules:

- An arm is ``NAME=key=value,key=value`` (commas inside brackets belong to the value: ``keep_layers=[0, 3]``); a key
  without a config section is a ``distill.`` key. Without ``--arm``: ``kd`` (alpha 0.5, forward KL, T 2) and
  ``ce_only`` (alpha 0). Overrides apply in this order, later ones winning: ``--steps``/``--layers``, the shared
  ``key=value`` arguments, the arm's own.
- An arm with ``data.*`` keys (its own or shared) gets the dataset artifact of those keys (``personagpt data
  prepare`` into datasets/KEY/data, one per distinct set of data keys); the others use the teacher's dataset.
  Validation stays reply samples in every data mode, and each arm's teacher perplexity is measured on that arm's
  own validation samples with the same code, so quality retained compares.
- Each arm runs the real entry (``deepspeed --num_gpus RANKS distill/run.py``) into runs/NAME/bench/distill/ARM
  (RunLayout's bench path); figures come from the student manifest: validation perplexity before (the untrained
  student) and after training, the teacher's on the same samples, quality retained = teacher ppl / student ppl,
  parameter ratio, decode tokens/s of teacher and student with the same code, prompts and batch.
- ``--reuse`` skips an arm whose student artifact exists and was made with the same command and the same resolved
  config file (arm.json); a changed arm, or any arm after a config change, is run again.
- ``--student NAME=PATH`` adds a student artifact made elsewhere (the demo's ``runs/NAME/student``) as an arm
  without training it again; its row comes from its manifest like every arm's. It must name the same teacher (by
  content hash), else the bench stops.
- KD vs CE-only: every CE-only arm (alpha 0) is compared with each KD arm of the same student shape and steps.
- Output: results.md and results.json in the bench folder. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from personagpt.network import free_port
from personagpt.paths import RunLayout

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARMS = {"kd": ["distill.alpha=0.5", "distill.loss=forward_kl", "distill.temperature=2.0"],
                "ce_only": ["distill.alpha=0.0"]}
KD_GOAL = 0.10  # issue 19: KD at least 10% lower validation perplexity than CE-only


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def qualify(override: str) -> str:
    """``key=value`` with ``distill.`` in front of a key that names no config section."""
    from personagpt.config import Config

    key, eq, _ = override.partition("=")
    if not eq:
        raise SystemExit(f"--arm: {override!r} is not key=value")
    first = key.strip().split(".")[0]
    return override if first in Config.model_fields else f"distill.{override.strip()}"


def parse_arm(spec: str) -> tuple[str, list[str]]:
    """``NAME=key=value,key=value`` -> (NAME, [qualified overrides])."""
    name, eq, rest = spec.partition("=")
    name = name.strip()
    if not eq or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise SystemExit(f"--arm {spec!r}: expected NAME=key=value,key=value (NAME: letters, digits, - and _)")
    return name, [qualify(o) for o in split_top_level(rest)]


def _data_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.startswith("data.")]


def prepare_dataset(args, name: str, data: list[str], out: Path) -> Path:
    """The dataset artifact of these data overrides, shared by the arms that give the same ones (reused when it
    was prepared with the same command)."""
    import hashlib

    key = hashlib.sha256(json.dumps([args.config, data]).encode()).hexdigest()[:12]
    path = out / "datasets" / key / "data"
    stamp = path.parent / "data.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "personagpt.cli", "data", "prepare", "--config", args.config, *data, "--out",
            str(path)]
    if (path / "manifest.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == argv:
        return path
    print(f"[{name}] data prepare {' '.join(data)}", flush=True)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    rc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
    if rc != 0:
        sys.exit(f"[{name}] data prepare failed with exit code {rc}")
    stamp.write_text(json.dumps(argv))
    return path


def config_hash(args) -> str:
    """The config file's resolved content (comments and key order do not count): an arm is reused only when
    neither its command nor the config it reads changed."""
    import hashlib

    from personagpt.config import load_config

    resolved = load_config(args.config, []).model_dump(mode="json")
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_arm(args, name: str, extra: list[str], out: Path) -> dict[str, Any]:
    arm_dir = out / name
    arm_dir.mkdir(parents=True, exist_ok=True)
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(args.ranks)] \
        if args.ranks > 1 else [sys.executable]
    shared = [f"distill.max_steps={args.steps}"] + \
        ([f"distill.student.num_hidden_layers={args.layers}"] if args.layers else [])
    data = _data_overrides([*args.overrides, *extra])
    dataset = [f"distill.dataset={prepare_dataset(args, name, data, out)}"] if data else \
        ([f"distill.dataset={args.dataset}"] if args.dataset else [])
    body = [str(ROOT / "distill" / "run.py"), "--config", args.config, f"distill.teacher={args.teacher}", *shared,
            *args.overrides, *extra, *dataset, f"distill.work_dir={arm_dir / 'work'}",
            f"distill.output_dir={arm_dir / 'student'}", "distill.save_every=0", "--fresh"]
    manifest = arm_dir / "student" / "manifest.json"
    stamp = arm_dir / "arm.json"
    made = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if args.reuse and manifest.is_file() and made.get("argv") == body and made.get("config_hash") == config_hash(args):
        print(f"[{name}] reused {manifest.parent}", flush=True)
        rec = made
    else:
        if manifest.is_file() and args.reuse:
            print(f"[{name}] arm changed since its artifact was made: running it again", flush=True)
        stamp.unlink(missing_ok=True)
        log = out / f"{name}.log"
        argv = [*launcher, *(["--master_port", str(free_port())] if args.ranks > 1 else []), *body]
        print(f"[{name}] {' '.join(extra) or '(shared settings only)'} (log {log})", flush=True)
        t0 = time.time()
        with open(log, "w") as f:
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ)).returncode
        if rc != 0:
            sys.exit(f"[{name}] failed with exit code {rc}; see {log}")
        rec = {"argv": body, "config_hash": config_hash(args), "overrides": extra,
               "shared_overrides": args.overrides, "wall_s": round(time.time() - t0, 1)}
        stamp.write_text(json.dumps(rec, indent=2) + "\n")
    return summarize(json.loads(manifest.read_text()), rec)


def existing_arm(args, spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME=PATH``: a student artifact distilled elsewhere from the same teacher, as a row."""
    name, eq, path = spec.partition("=")
    manifest = Path(path) / "manifest.json"
    if not eq or not manifest.is_file():
        raise SystemExit(f"--student {spec!r}: expected NAME=PATH of a student artifact (no {manifest})")
    m = json.loads(manifest.read_text())
    teacher = json.loads((args.teacher / "manifest.json").read_text()).get("content_hash")
    theirs = m.get("parents", {}).get("teacher", {}).get("content_hash")
    if theirs != teacher:
        raise SystemExit(f"--student {spec!r}: distilled from another teacher ({theirs} != {teacher})")
    cmd = m.get("command") or []
    rec = {"argv": cmd, "overrides": [f"(artifact {path})"], "shared_overrides": [],
           "wall_s": m["metrics"].get("wall_seconds", "n/a")}
    print(f"[{name}] existing artifact {manifest.parent}", flush=True)
    return name.strip(), summarize(m, rec)


def summarize(m: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    """One arm's row, from its student manifest."""
    d, s = m["distillation"], m["distillation"]["student"]
    cfg = m["config"]
    return {
        "overrides": rec["overrides"], "shared_overrides": rec["shared_overrides"], "wall_s": rec["wall_s"],
        "student": {k: s.get(k) for k in ("keep_layers", "num_hidden_layers", "hidden_size", "intermediate_size")}
        | {"num_attention_heads": cfg["distill"]["student"]["num_attention_heads"],
           "num_key_value_heads": cfg["distill"]["student"]["num_key_value_heads"],
           "layer_selection": (s.get("layer_selection") or {}).get("method", "keep_layers" if cfg["distill"][
               "student"]["keep_layers"] else cfg["distill"]["student"]["layer_selection"]),
           "width_selection": (s.get("width_selection") or {}).get("method"),
           "bridge": (s.get("bridge") or {}).get("method", "none"),
           "bridge_layers": (s.get("bridge") or {}).get("layers", "gaps"),
           # the bridges' fit decides the start: arms fitted differently are different students
           "bridge_fit": {k: (s.get("bridge") or {}).get(k) for k in ("samples", "ridge", "dtype")}},
        "objective": d["objective"], "steps": m["metrics"]["steps"], "train_samples": cfg["data"]["train_samples"],
        "label_tokens_seen": m["metrics"]["label_tokens_seen"], "tokens_seen": m["metrics"]["tokens_seen"],
        "student_num_parameters": d["student_num_parameters"], "teacher_num_parameters": d["teacher_num_parameters"],
        "params_ratio": d["params_ratio"], "teacher_val_ppl": d["teacher_val_ppl"],
        "student_start_val_ppl": d.get("student_start_val_ppl"), "student_val_ppl": d.get("student_val_ppl"),
        "quality_retained": d.get("quality_retained"),
        "teacher_decode_tokens_per_s": d["teacher_decode_tokens_per_s"],
        "student_decode_tokens_per_s": d["student_decode_tokens_per_s"], "decode_speedup": d["decode_speedup"],
    }


def kd_vs_ce(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every CE-only arm (alpha 0) against each KD arm of the same student shape, steps and data mode."""
    def key(r):
        return json.dumps([r["student"], r["steps"], r["train_samples"]], sort_keys=True)

    out = []
    for ce_name, ce in results.items():
        if ce["objective"]["alpha"] != 0:
            continue
        for kd_name, kd in results.items():
            if kd["objective"]["alpha"] > 0 and key(kd) == key(ce):
                gain = 1 - kd["student_val_ppl"] / ce["student_val_ppl"]
                out.append({"kd": kd_name, "ce_only": ce_name, "kd_val_ppl": kd["student_val_ppl"],
                            "ce_val_ppl": ce["student_val_ppl"], "kd_lower_by": round(gain, 4),
                            "goal": KD_GOAL, "met": gain >= KD_GOAL})
    return out


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(results: dict[str, dict[str, Any]], comparisons: list[dict[str, Any]], command: str) -> str:
    first = next(iter(results.values()))
    lines = ["# Distillation benchmark", "", f"`{command}`", "",
             f"Teacher: {first['teacher_num_parameters'] / 1e6:.1f}M parameters, decode "
             f"{first['teacher_decode_tokens_per_s']:.1f} tok/s; its val ppl is measured again on each arm's "
             f"validation samples (column teacher ppl).", "",
             f"Every arm: {' '.join(first['shared_overrides']) or '(the config as is)'}.", "",
             "| arm | overrides | layers | widths (hidden/inter/heads/kv) | selection | params ratio | steps | "
             "untrained ppl | val ppl | teacher ppl | quality retained | student tok/s | teacher tok/s | "
             "decode speedup | wall s |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        s = r["student"]
        widths = f"{s['hidden_size']}/{s['intermediate_size']}/{s['num_attention_heads'] or '-'}/" \
                 f"{s['num_key_value_heads'] or '-'}"
        sel = s["layer_selection"] + (f", {s['width_selection']}" if s["width_selection"] else "") + \
            (f", {s['bridge']} bridges" if s.get("bridge", "none") != "none" else "") + \
            (" on all layers" if s.get("bridge_layers") == "all" else "")
        q = r["quality_retained"]
        lines.append(
            f"| {name} | {' '.join(r['overrides']) or '-'} | {s['num_hidden_layers']} | {widths} | {sel} | "
            f"{r['params_ratio']:.3f} | {r['steps']} | {_fmt(r['student_start_val_ppl'], '.1f')} | "
            f"{_fmt(r['student_val_ppl'], '.2f')} | {r['teacher_val_ppl']:.2f} | "
            f"{'n/a' if q is None else f'{q * 100:.1f}%'} | {r['student_decode_tokens_per_s']:.1f} | "
            f"{r['teacher_decode_tokens_per_s']:.1f} | {r['decode_speedup']:.2f}x | {r['wall_s']} |")
    lines.append("")
    if comparisons:
        for c in comparisons:
            lines.append(f"KD vs CE-only: {c['kd']} val ppl {c['kd_val_ppl']:.2f} vs {c['ce_only']} "
                         f"{c['ce_val_ppl']:.2f}: KD {c['kd_lower_by'] * 100:.1f}% lower (goal >= "
                         f"{c['goal'] * 100:.0f}%: {'met' if c['met'] else 'missed'})")
    else:
        lines.append("KD vs CE-only: no CE-only arm (alpha=0) with the shape, steps and data of a KD arm")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/smollm2-persona.yaml")
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--dataset", type=Path, default=None, help="default: the teacher's dataset")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=key=value,...",
                    help="a benchmark arm (repeatable); default: kd and ce_only")
    ap.add_argument("--layers", type=int, default=None, help="student depth for every arm (default: the config's)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--student", action="append", default=[], metavar="NAME=PATH",
                    help="an existing student artifact of the same teacher as an arm (repeatable)")
    ap.add_argument("--reuse", action="store_true", help="skip arms whose artifact exists with the same command")
    ap.add_argument("--out", type=Path, default=None, help="default: runs/NAME/bench/distill")
    ap.add_argument("overrides", nargs="*", help="key=value for every arm")
    args = ap.parse_args(argv)
    args.teacher = args.teacher.resolve()
    args.overrides = [qualify(o) for o in args.overrides]
    arms = dict(parse_arm(a) for a in args.arm) if args.arm else DEFAULT_ARMS
    if args.arm and len(arms) != len(args.arm):
        raise SystemExit("--arm: two arms have the same name")
    name = json.loads((args.teacher / "manifest.json").read_text())["config"].get("name", "run")
    out = (args.out or RunLayout.of(name).bench("distill")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = dict(existing_arm(args, spec) for spec in args.student)
    results |= {k: run_arm(args, k, v, out) for k, v in arms.items()}
    comparisons = kd_vs_ce(results)
    command = "python distill/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps({"command": command, "arms": results, "kd_vs_ce": comparisons}, indent=2) + "\n")
    tmp.replace(out / "results.json")
    md = markdown(results, comparisons, command)
    (out / "results.md.tmp").write_text(md)
    (out / "results.md.tmp").replace(out / "results.md")
    print("\n" + md + f"results: {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
