"""Shared test setup. Expensive artifacts are built once per session (see fixtures/)."""

import os

# Offline, quiet, one OpenMP thread per process (2-core machines): the same defaults the Makefile exports.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ["fixtures.artifacts", "fixtures.serve", "fixtures.k8s", "fixtures.loadtest", "fixtures.quantize",
                  "fixtures.pipeline", "fixtures.train"]
