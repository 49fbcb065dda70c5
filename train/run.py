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

import sys

from personagpt.training.env import prepare_process_env  # before torch: OpenMP thread count

prepare_process_env()


def job_class():
    from personagpt.training.job import TrainingJob

    return TrainingJob


def main(argv=None) -> int:
    from personagpt.training.entry import job_main

    return job_main("train/run.py", __doc__, "train.zero_stage=3", "train", job_class, argv)


if __name__ == "__main__":
    sys.exit(main())
