"""Untrained student shapes: the validation perplexity of students pruned from the teacher, before any training —
a cheap first look at depth, layer selection and width selection (minutes, not a distillation run).

    python distill/shapes.py --config configs/smollm2-persona.yaml --teacher runs/smollm2-persona/teacher \\
        --shape a20=num_hidden_layers=20,layer_selection=angular \\
        --shape i20=num_hidden_layers=20,layer_selection=influence [--shape NAME=key=value,... ...]

Rules: a shape is ``NAME=key=value,...`` of ``distill.student`` keys over the config's ``distill.student``. Every
student is built the way the distill job builds it (same layer and width selection on the first
``selection_samples`` training samples, same initialisation) and scored with the same perplexity code as the
teacher, on the first ``distill.eval_samples`` validation samples of the teacher's dataset. One process, CPU or
GPU. A ``bridge=linear`` shape gets its linear bridges fitted as in the job (:mod:`distill.bridges`, on the
first ``bridge_samples`` training samples). Writes shapes.json and shapes.md in RunLayout's bench path for distill.
Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from personagpt.training.env import prepare_process_env

prepare_process_env()


class CachedForward:
    """The teacher as the layer selections call it (``model(input_ids=, attention_mask=, output_hidden_states=)``),
    each calibration batch run once and its output kept for the next shape."""

    def __init__(self, model):
        self.model, self.config, self.cache = model, model.config, {}

    def eval(self):
        return self

    def to(self, device):
        self.model.to(device)
        return self

    def __call__(self, input_ids, attention_mask, **kw):
        key = (input_ids.data_ptr(), tuple(input_ids.shape))
        if key not in self.cache:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
            self.cache[key] = SimpleNamespace(hidden_states=out.hidden_states)  # not the logits (vocab-sized)
        return self.cache[key]


def main(argv=None) -> int:
    import torch

    from distill.bench import split_top_level
    from distill.bridges import bridge_dtype, fit_bridges, fitted_layers
    from distill.importance import importance_channels, narrowed
    from distill.layer_selection import MEASURED
    from distill.student import build_student, calibration_batches, student_config, student_layers
    from personagpt.artifacts import read_manifest
    from personagpt.config import load_config
    from personagpt.config.loader import apply_overrides, parse_overrides
    from personagpt.data.prepare import read_split, split_label_turns
    from personagpt.device import device as pick_device
    from personagpt.models import load_model
    from personagpt.paths import RunLayout
    from personagpt.training.batching import encode_samples
    from personagpt.training.evaluation import distributed_perplexity

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/smollm2-persona.yaml")
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--shape", action="append", required=True, metavar="NAME=key=value,...")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-teacher", action="store_true",
                    help="do not score the teacher again (its manifest's val ppl is shown: the same samples when "
                         "train.eval_samples equals distill.eval_samples)")
    ap.add_argument("overrides", nargs="*", help="config key=value")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    dcfg = cfg.distill
    dataset = Path(dcfg.dataset or read_manifest(args.teacher)["parents"]["dataset"]["path"])
    device = pick_device()
    teacher, tok = load_model(args.teacher, device="cpu")
    teacher.eval()
    max_length = dcfg.max_length or cfg.data.max_length
    val = encode_samples(tok, read_split(dataset, "val")[: dcfg.eval_samples],
                         split_label_turns(dataset, "val", cfg.data.label_turns), max_length)
    calib = calibration_batches(tok, read_split(dataset, "train")[: dcfg.student.selection_samples],
                                split_label_turns(dataset, "train", cfg.data.label_turns), max_length,
                                dcfg.eval_batch_size, device)

    def ppl(model):
        return distributed_perplexity(model.to(device), tok, val, dcfg.eval_batch_size, 0, 1, device)["ppl"]

    t_params = sum(p.numel() for p in teacher.parameters())
    t_ppl = read_manifest(args.teacher)["metrics"]["val_ppl"] if args.skip_teacher else ppl(teacher)
    rows = {"teacher": {"layers": teacher.config.num_hidden_layers, "params_ratio": 1.0, "ppl": t_ppl,
                        "from_manifest": args.skip_teacher}}
    teacher.to("cpu")
    measured = CachedForward(teacher)  # the layer selections of every shape see the same teacher forwards
    for spec in args.shape:
        name, _, rest = spec.partition("=")
        data = dcfg.student.model_dump(mode="json")
        apply_overrides(data, parse_overrides(split_top_level(rest)))
        scfg = type(dcfg.student).model_validate(data)
        keep = student_layers(scfg, teacher.config.num_hidden_layers)
        layer_info, width, width_info = None, None, None
        with torch.no_grad():
            if scfg.keep_layers is None and scfg.layer_selection in MEASURED:
                keep, layer_info = MEASURED[scfg.layer_selection](measured.to(device), calib, len(keep))
            s_config = student_config(teacher.config, scfg, keep)
            if scfg.width_selection == "importance" and narrowed(teacher.config, s_config):
                width, width_info = importance_channels(teacher.to(device), calib, keep, s_config)
            teacher.to("cpu")
            student, _ = build_student(teacher, scfg, seed=cfg.seed, layers=keep, width=width)
            bridge = None
            if scfg.bridge == "linear" and scfg.init == "teacher" and fitted_layers(keep, scfg.bridge_layers):
                bridge_batches = calibration_batches(
                    tok, read_split(dataset, "train")[: scfg.bridge_samples],
                    split_label_turns(dataset, "train", cfg.data.label_turns), max_length, dcfg.eval_batch_size, device)
                bridge = fit_bridges(teacher.to(device), student.to(device), keep, bridge_batches, scfg.bridge_ridge,
                                     width.hidden if width is not None else None,
                                     bridge_dtype(scfg.bridge_dtype, torch.device(device)),
                                     scfg.bridge_layers)
                teacher.to("cpu")
            rows[name] = {"shape": rest, "layers": len(keep), "keep_layers": keep,
                          "params_ratio": round(sum(p.numel() for p in student.parameters()) / t_params, 3),
                          "ppl": ppl(student),
                          "dropped": (layer_info or {}).get("dropped"),
                          "importance_kept": (width_info or {}).get("importance_kept"),
                          "bridge": bridge}
        del student
        print(f"{name}: {rows[name]}", flush=True)
    out = (args.out or RunLayout.of(cfg.name).bench("distill")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    md = ["| shape | keys | layers | params ratio | untrained val ppl |", "|---|---|---:|---:|---:|"]
    md += [f"| {k} | {r.get('shape', '-')} | {r['layers']} | {r['params_ratio']:.3f} | {r['ppl']:,.1f} |"
           for k, r in rows.items()]
    (out / "shapes.json").write_text(json.dumps({"command": " ".join(sys.argv), "val_samples": len(val),
                                                 "rows": rows}, indent=2) + "\n")
    (out / "shapes.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
