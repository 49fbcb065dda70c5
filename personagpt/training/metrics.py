"""Training metrics: one JSON line per record (``metrics.jsonl``), TensorBoard scalars, and a loss-curve PNG.

Records carry ``kind`` (``train`` | ``eval``) and ``step``. On resume, records after the resumed step (written by
the run that was killed) are dropped, so the file and the curve describe exactly the run that produced the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by SIGKILL
                continue
    return out


class MetricsLogger:
    """Rank 0 only. ``resume_step``: keep earlier records up to and including that step."""

    def __init__(self, work_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(work_dir) / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._f = open(self.path, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(work_dir) / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        if self.tb is not None:
            kind, step = record.get("kind", "train"), record["step"]
            for k, v in record.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def plot_loss_curve(records: list[dict[str, Any]], out: str | Path, title: str = "training") -> Path:
    """Train loss per step and validation loss at each evaluation, with the learning rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, alpha=0.8, label="train loss")
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", lw=2, label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens, nats)")
    ax.grid(alpha=0.3)
    if train and "lr" in train[0]:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in train], [r["lr"] for r in train], color="gray", ls="--", lw=0.8, label="lr")
        ax2.set_ylabel("learning rate")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right")
    else:
        ax.legend(loc="upper right")
    if evals:
        first, last = evals[0], evals[-1]
        ax.set_title(f"{title}: val ppl {first['ppl']:.2f} (step {first['step']}) -> {last['ppl']:.2f} "
                     f"(step {last['step']})")
    else:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
