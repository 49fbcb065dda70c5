"""The command line shared by the DeepSpeed stage entries (train/run.py, distill/run.py).

Both take ``--config FILE [key=value ...] [--resume | --fresh]`` (plus ``--local_rank`` from the deepspeed
launcher), load the config before torch is imported (config errors exit 2 fast) and run one job class."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def parse_args(prog: str, description: str, override_example: str, section: str,
               argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--config", "-c", type=Path, required=True, help="YAML config (configs/*.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help=f"config overrides, e.g. {override_example}")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    g.add_argument("--fresh", action="store_true",
                   help=f"delete earlier checkpoints/metrics in {section}.work_dir first")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    return ap.parse_args(argv)


def job_main(prog: str, doc: str, override_example: str, section: str, job_class: Callable[[], type],
             argv: list[str] | None = None) -> int:
    """Parse, load the config, then import (``job_class()``) and run the job; PersonaGPTError -> exit code 2."""
    from personagpt.cli import run_cli

    args = parse_args(prog, doc.split("\n\n")[0], override_example, section, argv)

    def _run(a) -> int:
        from personagpt.config import load_config

        cfg = load_config(a.config, a.overrides)  # config errors exit before torch is imported
        job_class()(cfg, resume=a.resume, fresh=a.fresh).run()
        return 0

    return run_cli(_run, args)
