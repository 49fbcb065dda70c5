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

import sys

from personagpt.training.env import prepare_process_env  # before torch: OpenMP thread count

prepare_process_env()


def job_class():
    from distill.job import DistillJob

    return DistillJob


def main(argv=None) -> int:
    from personagpt.training.entry import job_main

    return job_main("distill/run.py", __doc__, "distill.loss=jsd", "distill", job_class, argv)


if __name__ == "__main__":
    sys.exit(main())
