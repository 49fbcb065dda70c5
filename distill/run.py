"""Knowledge distillation: a smaller student learns from the teacher.

    deepspeed --num_gpus 2 distill/run.py --config configs/tiny.yaml [key=value ...] [--resume | --fresh]
    python distill/run.py --config ...                       (one process)

Reads the teacher artifact (``distill.teacher``, default runs/NAME/teacher) and the dataset artifact
(``distill.dataset``, default: prepared from ``data:``), builds the student (``distill.student``), trains it with the
``distill:`` objective on the same DeepSpeed engine as the teacher, and writes the student model artifact
(``distill.output_dir``, default runs/NAME/student) with distillation metrics in its manifest.
Bad input exits with code 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from personagpt.training.env import prepare_process_env  # noqa: E402  (before torch: OpenMP thread count)

prepare_process_env()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="distill/run.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", "-c", type=Path, required=True, help="YAML config (configs/*.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. distill.loss=jsd")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    g.add_argument("--fresh", action="store_true", help="delete earlier checkpoints/metrics in distill.run_dir first")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from personagpt.cli import run_cli

    args = parse_args(argv)

    def _run(a) -> int:
        from distill.job import DistillJob
        from personagpt.config import load_config

        cfg = load_config(a.config, a.overrides)
        DistillJob(cfg, resume=a.resume, fresh=a.fresh).run()
        return 0

    return run_cli(_run, args)


if __name__ == "__main__":
    sys.exit(main())
