"""Training machinery shared by the teacher (train/run.py) and distillation stages: DeepSpeed config from the typed
``train:`` section, engine setup, a deterministic resumable data order, the step loop with a pluggable loss,
evaluation, checkpoints (keep-last-K, resume after SIGKILL or on another world size), consolidation into a model
artifact, metrics (JSONL, TensorBoard, PNG).

Import :mod:`personagpt.training.env` and call ``prepare_process_env()`` before torch is imported."""
