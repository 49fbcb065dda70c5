"""The one interface every pipeline stage has, and the stage that runs one entry-point command.

A stage has a ``name`` (what ``--stages`` and ``pipeline.serve`` say), the config ``sections`` and upstream
stages (``parents``) its fingerprint covers, the folder it writes (``output(ctx)``: an artifact or a results
folder), and ``run(ctx, resume, log)``, which does the work and writes everything it prints to ``log``.
``resume`` is true when the previous attempt of the same stage with the same fingerprint did not finish: a stage
that can continue (train/distill from their checkpoints) continues, any other stage simply runs again. A stage that
makes a model also names it (``model``: teacher, student, quantized), as the report and ``personagpt eval`` do.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from personagpt.errors import StageFailed
from personagpt.paths import ROOT
from personagpt.pipeline.context import Ctx, env_for_children

TAIL_LINES = 25


class Stage:
    name: str
    sections: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    model: str | None = None

    def output(self, ctx: Ctx) -> Path:
        raise NotImplementedError

    def run(self, ctx: Ctx, resume: bool, log: Path) -> None:
        raise NotImplementedError


class CommandStage(Stage):
    """One process through the stage's real entry point, exactly as a user or a Kubernetes Job would start it.
    ``checkpoints``: the command takes ``--resume`` / ``--fresh`` (train/run.py, distill/run.py); it resumes when
    asked to and its work folder holds a complete checkpoint."""

    def __init__(self, name: str, output: Callable[[Ctx], Path], sections: tuple[str, ...], parents: tuple[str, ...],
                 command: Callable[[Ctx], list[str]], model: str | None = None, checkpoints: bool = False):
        self.name, self._output, self.sections, self.parents = name, output, sections, parents
        self.command, self.model, self.checkpoints = command, model, checkpoints

    def output(self, ctx: Ctx) -> Path:
        return self._output(ctx)

    def latest_checkpoint(self, ctx: Ctx):
        from personagpt.training.checkpoints import latest_checkpoint

        return latest_checkpoint(ctx.layout.work(self.name) / "checkpoints") if self.checkpoints else None

    def run(self, ctx: Ctx, resume: bool, log: Path) -> None:
        argv = self.command(ctx)
        if self.checkpoints:
            argv.append("--resume" if resume and self.latest_checkpoint(ctx) is not None else "--fresh")
        run_command(argv, log)


def log_tail(log: Path, n: int = TAIL_LINES) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.is_file() else ""


def run_command(argv: list[str], log: Path, ok: tuple[int, ...] = (0,)) -> int:
    """Run ``argv`` from the checkout with its output appended to ``log``; an exit code outside ``ok`` is a
    StageFailed carrying the command and the tail of the log. Returns the exit code."""
    with open(log, "a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                            env=env_for_children()).returncode
    if rc not in ok:
        raise StageFailed(f"stage failed with exit code {rc}: {' '.join(argv[:6])} ...\n"
                          f"--- last lines of {log} ---\n{log_tail(log)}")
    return rc
