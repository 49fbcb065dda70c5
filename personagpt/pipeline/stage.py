"""The one interface every pipeline stage has, and the stage that runs one entry-point command.

A stage has a ``name`` (what ``--stages`` and ``pipeline.serve`` say), the config ``sections`` and upstream
stages (``parents``) its fingerprint covers, the folder it writes (``output(ctx)``: an artifact or a results
folder), and ``run(ctx, resume, log)``, which does the work and writes everything it prints to ``log``.
``resume`` is true when the previous attempt of the same stage with the same fingerprint did not finish: a stage
that can continue (train/distill from their checkpoints) continues, any other stage simply runs again. A stage that
makes a model also names it (``model``: teacher, student, quantized), as the report and ``personagpt eval`` do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from personagpt import process_group
from personagpt.errors import StageFailed
from personagpt.paths import ROOT
from personagpt.pipeline.context import PY, Ctx, env_for_children

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

    def start_note(self, ctx: Ctx, resume: bool) -> str | None:
        """A line for the console before the stage runs (e.g. where it resumes), or None."""
        return None

    def discard_checkpoints(self, ctx: Ctx) -> None:
        """Before a fresh start: delete the checkpoints an earlier attempt left (none by default)."""

    def model_artifact(self, ctx: Ctx) -> Path:
        """The model artifact a model stage makes (what serving it serves): its output, unless it says otherwise."""
        return self.output(ctx)


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

    def start_note(self, ctx: Ctx, resume: bool) -> str | None:
        """What the console says before the stage runs: where it resumes, or which checkpoints a fresh start
        deletes (its config or inputs changed, or --force)."""
        ckpt = self.latest_checkpoint(ctx)
        if ckpt is None:
            return None
        if resume:
            return f"resuming from checkpoint {ckpt.path} (step {ckpt.step})"
        return (f"starting fresh: deleting the checkpoints in {ckpt.dir} (they were made with another config or "
                f"other inputs, or --force was given)")

    def discard_checkpoints(self, ctx: Ctx) -> None:
        """Delete the work folder's checkpoints. The runner does this before it records a fresh attempt, so a kill
        between that record and the command's own ``--fresh`` cleanup cannot leave checkpoints of another config
        that the next run, seeing an unfinished attempt with the same fingerprint, would resume."""
        ckpt = self.latest_checkpoint(ctx)
        if ckpt is not None:
            shutil.rmtree(ckpt.dir)

    def run(self, ctx: Ctx, resume: bool, log: Path) -> None:
        argv = self.command(ctx)
        if self.checkpoints:
            argv.append("--resume" if resume and self.latest_checkpoint(ctx) is not None else "--fresh")
        run_command(argv, log, grace=ctx.cfg.pipeline.stop_timeout_s, on_start=ctx.started)


def log_tail(log: Path, n: int = TAIL_LINES) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.is_file() else ""


def run_command(argv: list[str], log: Path, ok: tuple[int, ...] = (0,), grace: float = 60.0,
                on_start: Callable[[int], None] | None = None) -> int:
    """Run ``argv`` from the checkout with its output appended to ``log``, as its own process group led by the
    supervisor (personagpt/pipeline/supervisor.py: it dies with this process, and takes the group with it).
    ``on_start(pgid)`` hears the group's id. Any exception while waiting (an interrupt) stops the whole group,
    SIGKILL after ``grace`` s, before it propagates. An exit code outside ``ok`` is a StageFailed carrying the
    command and the tail of the log. Returns the exit code."""
    sup = [PY, "-m", "personagpt.pipeline.supervisor", "--parent", str(os.getpid()), "--grace", str(grace), "--"]
    with open(log, "a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        proc = subprocess.Popen([*sup, *argv], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ROOT, env=env_for_children(), start_new_session=True)
        try:
            if on_start is not None:
                on_start(proc.pid)
            rc = proc.wait()
        except BaseException:
            process_group.stop_group(proc.pid, 2 * grace + 10, proc)  # the supervisor's own grace first
            raise
    if rc not in ok:
        raise StageFailed(f"stage failed with exit code {rc}: {' '.join(argv[:6])} ...\n"
                          f"--- last lines of {log} ---\n{log_tail(log)}")
    return rc
