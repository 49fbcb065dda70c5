"""``export: best``: the artifact gets the weights of the evaluation with the lowest validation loss, not the last
step's (HF Trainer's ``load_best_model_at_end``). Small data overfits: on one H200 the GPU preset's teacher was at
val ppl 25.5 after 200 steps and 37.0 after 1000.

Rules:
- Every evaluation after step 0 that beats the best so far saves the engine's weights (a collective gather, as at
  export), the probe batch's logits and its eval record to ``<work_dir>/best/``; ``eval.json`` names the step and
  is replaced last, atomically, so a crash leaves the previous best or the new one. Ties keep the earlier step.
  The loss is all-reduced, so every rank takes the same decision.
- Step 0 (the starting model) is never the best: an artifact is always a trained model.
- A resumed run keeps ``best/`` only when it was saved at or before the step it resumes from (a crashed attempt's
  later best is discarded; the resumed steps reproduce it).
- The last step is always evaluated, so a finished run always has a best.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from personagpt.errors import ArtifactError
from personagpt.training.checkpoints import tag_for
from personagpt.training.export import gather_state_dict, probe_logits

FOLDER = "best"
RECORD = "eval.json"
WEIGHTS = "state_dict.pt"  # <step tag>.state_dict.pt
PROBE = "probe_logits.pt"


class BestWeights:
    """Tracks the best evaluation and keeps its weights on disk; ``consider`` is collective (call it on every
    rank after every evaluation)."""

    def __init__(self, work_dir: Path, engine, probe: dict[str, torch.Tensor], dist):
        self.dir, self.engine, self.probe, self.dist = Path(work_dir) / FOLDER, engine, probe, dist
        self.best_loss = float("inf")

    def restore(self, start_step: int) -> None:
        """Resume: a best saved after ``start_step`` (by a crashed attempt) is dropped; one saved before is the
        best so far."""
        rec = self.record()
        if rec is not None and rec["step"] > start_step:
            if self.dist.is_main:
                shutil.rmtree(self.dir, ignore_errors=True)
            rec = None
        self.best_loss = rec["loss"] if rec is not None else float("inf")

    def consider(self, rec: dict[str, Any]) -> bool:
        if rec["step"] == 0 or not rec["loss"] < self.best_loss:
            return False
        self.best_loss = rec["loss"]
        logits = probe_logits(self.engine.module, self.probe, self.dist.device)
        sd = gather_state_dict(self.engine, self.dist.is_main)
        if self.dist.is_main:
            self._write(sd, logits, rec)
        return True

    def _write(self, sd: dict[str, torch.Tensor], logits: torch.Tensor, rec: dict[str, Any]) -> None:
        """The step's files first, then ``eval.json`` (the commit point, replaced atomically), then the older
        step's files go: a crash anywhere leaves the previous best or the new one, complete."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = tag_for(rec["step"])
        for obj, name in ((sd, WEIGHTS), (logits, PROBE)):
            tmp = self.dir / f"{tag}.{name}.tmp"
            torch.save(obj, tmp)
            os.replace(tmp, self.dir / f"{tag}.{name}")
        tmp = self.dir / (RECORD + ".tmp")
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        os.replace(tmp, self.dir / RECORD)
        for p in self.dir.iterdir():
            if p.name != RECORD and not p.name.startswith(tag + "."):
                p.unlink(missing_ok=True)

    def record(self) -> dict[str, Any] | None:
        path = self.dir / RECORD
        return json.loads(path.read_text()) if path.is_file() else None

    def load(self) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
        """Rank 0 at export: the best weights, the engine's probe logits with them, and their eval record."""
        rec = self.record()
        if rec is None:
            raise ArtifactError(f"{self.dir}: no best evaluation saved (export: best was set after the run's last "
                                f"evaluation, or the folder was removed): rerun with --fresh")
        tag = tag_for(rec["step"])
        return (torch.load(self.dir / f"{tag}.{WEIGHTS}", weights_only=True),
                torch.load(self.dir / f"{tag}.{PROBE}", weights_only=True), rec)
