"""Teacher training with DeepSpeed ZeRO.

    deepspeed --num_gpus 2 train/run.py --config configs/tiny.yaml [key=value ...] [--resume | --fresh]
    torchrun --nproc_per_node 2 train/run.py --config ...
    python train/run.py --config ...                      (one process)

Reads a dataset artifact (``train.dataset``, or prepares one from ``data:`` into ``<run_dir>/data``), trains the
``model:`` (a tiny Llama from scratch, or a local Hugging Face checkpoint such as the converted SmolLM2) with the
``train:`` settings, and writes the teacher model artifact to ``train.output_dir`` (default runs/NAME/teacher).
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
    ap = argparse.ArgumentParser(prog="train/run.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", "-c", type=Path, required=True, help="YAML config (configs/*.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.zero_stage=3")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    g.add_argument("--fresh", action="store_true", help="delete earlier checkpoints/metrics in train.run_dir first")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from personagpt.cli import run_cli

    args = parse_args(argv)

    def _run(a) -> int:
        from personagpt.config import load_config

        cfg = load_config(a.config, a.overrides)  # config errors exit before torch is imported
        from personagpt.training.job import TrainingJob

        TrainingJob(cfg, resume=a.resume, fresh=a.fresh).run()
        return 0

    return run_cli(_run, args)


if __name__ == "__main__":
    sys.exit(main())
