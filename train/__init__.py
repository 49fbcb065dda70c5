"""The train stage: teacher training with DeepSpeed ZeRO (entry: ``deepspeed train/run.py``; benchmark:
``python train/bench.py``)."""
