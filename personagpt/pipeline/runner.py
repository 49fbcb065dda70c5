"""Run the stages in order; skip the ones whose inputs and config are unchanged.

A stage's fingerprint hashes the config sections that define it and the content hashes of its parents'
outputs. ``runs/NAME/pipeline.json`` records, per stage, the fingerprint its output was made with and its status;
a stage is skipped when the fingerprint is the same, its status is ``done`` and its output (manifest and content
hash) is still there. Changing a key therefore reruns that stage, whose new output changes the fingerprints of
everything downstream. A stage whose last attempt with the same fingerprint did not finish is run with
``resume=True`` (train/distill continue from their checkpoints). A failing stage stops the run with that stage's
error; earlier artifacts stay as they were (stages write through staging folders, so a failed stage leaves none).

Crash safety (README "Survives crashes and signals"):
- A stage's status is ``running`` while it runs, then ``done``, ``failed`` or ``interrupted``. A stage whose record
  is ``running`` (the runner was killed), ``failed`` or ``interrupted`` with the same fingerprint resumes; only
  ``--force`` or a changed fingerprint starts it fresh, and the console says so before checkpoints are deleted.
  The runner deletes them before it records the fresh attempt: a run killed right after that record then finds
  no checkpoint of the old config to resume.
- Every stage process runs in its own process group under the supervisor, which dies with the runner and takes
  the group with it. SIGINT/SIGTERM/SIGHUP stop the stage in flight as a whole (see interrupt.py); the record
  says ``interrupted`` and the runner exits 130/143/129.
- ``pipeline.json`` is replaced atomically; before the first stage, the unfinished outputs of killed writers
  are cleaned up (artifacts.recover_staging) and any process group a killed runner left is stopped.
- The caller holds the run folder's lock (lock.py) around :meth:`Pipeline.run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from personagpt import process_group
from personagpt.artifacts import hash_files, read_manifest, recover_staging
from personagpt.errors import ArtifactError
from personagpt.pipeline.context import Ctx
from personagpt.pipeline.interrupt import Interrupted
from personagpt.pipeline.stage import Stage

RESUMABLE = ("running", "failed", "interrupted")  # the last attempt did not finish

console = Console(highlight=False, soft_wrap=True)  # no wrapping: logs and tests read whole lines


def _section(cfg_dict: dict, dotted: str) -> Any:
    node: Any = cfg_dict
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def output_hash(stage: Stage, ctx: Ctx) -> str | None:
    """Content hash of a stage's output: an artifact's manifest hash, or the hash of a results folder."""
    out = stage.output(ctx)
    if not out.is_dir():
        return None
    try:
        return read_manifest(out)["content_hash"]
    except (ArtifactError, KeyError):
        return hash_files(out) if (out / "done.json").is_file() else None


def fingerprint(stage: Stage, ctx: Ctx, state: dict) -> str:
    cfg = ctx.cfg.to_dict()
    blob = {"stage": stage.name, "sections": {s: _section(cfg, s) for s in stage.sections},
            "parents": {p: state.get(p, {}).get("output_hash") for p in stage.parents}}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


class Pipeline:
    def __init__(self, ctx: Ctx, stages: list[Stage], force: bool = False, only: list[str] | None = None):
        self.ctx, self.stages, self.force, self.only = ctx, stages, force, only
        self.state_path = ctx.layout.state
        self.state: dict[str, dict] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.timings: dict[str, dict] = {}

    def save_state(self) -> None:
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(json.dumps(self.state, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def up_to_date(self, stage: Stage, fp: str) -> bool:
        rec = self.state.get(stage.name, {})
        return (not self.force and rec.get("fingerprint") == fp and rec.get("status") == "done"
                and rec.get("output_hash") is not None and rec.get("output_hash") == output_hash(stage, self.ctx))

    def resumable(self, stage: Stage, fp: str) -> bool:
        """The last attempt of this stage, with this fingerprint, did not finish."""
        rec = self.state.get(stage.name, {})
        return not self.force and rec.get("fingerprint") == fp and rec.get("status") in RESUMABLE

    def recover(self) -> None:
        """After a killed runner: stop what is left of its stage's process groups, clean up half-written outputs."""
        for name, rec in self.state.items():
            if rec.get("status") != "running":
                continue
            for pgid in rec.get("process_groups", []):
                if _ours(pgid) and process_group.group_members(pgid):
                    console.print(f"stopping process group {pgid} left by the killed run of stage {name}")
                    process_group.stop_group(pgid, 2 * self.ctx.cfg.pipeline.stop_timeout_s)
        recover_staging(self.ctx.layout.root, say=console.print)

    def run(self) -> dict[str, dict]:
        ctx = self.ctx
        ctx.layout.log("any").parent.mkdir(parents=True, exist_ok=True)
        self.recover()
        t_all = time.time()
        for i, stage in enumerate(self.stages, 1):
            label = f"[{i}/{len(self.stages)}] {stage.name:<9}"
            fp = fingerprint(stage, ctx, self.state)
            if (self.only and stage.name not in self.only) or self.up_to_date(stage, fp):
                why = "not selected" if self.only and stage.name not in self.only else "up to date"
                console.print(f"{label} [dim]skipped ({why}): {stage.output(ctx)}[/dim]")
                self.timings[stage.name] = {"status": "skipped", "seconds": 0.0}
                continue
            dt = self._run_stage(stage, fp, label)
            self.timings[stage.name] = {"status": "ran", "seconds": round(dt, 1)}
            console.print(f"{label} [green]done[/green] in {dt:.1f} s -> {stage.output(ctx)}")
        console.print(f"pipeline finished in {time.time() - t_all:.1f} s")
        return self.timings

    def _run_stage(self, stage: Stage, fp: str, label: str) -> float:
        resume = self.resumable(stage, fp)
        note = stage.start_note(self.ctx, resume)
        if note:
            console.print(f"{label} {note}")
        if not resume:  # before the attempt is recorded: a kill right after it must not resume another config's
            stage.discard_checkpoints(self.ctx)
        rec = {"fingerprint": fp, "status": "running", "started": time.time(), "process_groups": []}
        self.state[stage.name] = rec
        self.save_state()
        log = self.ctx.layout.log(stage.name)
        with open(log, "a") as f:  # a resumed stage keeps the log of its earlier attempts
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {stage.name} "
                    f"{'resumed' if resume else 'started'} by pid {os.getpid()} ===\n")

        def started(pgid: int) -> None:
            rec["process_groups"].append(pgid)
            self.save_state()

        self.ctx.on_start = started
        t0 = time.time()
        try:
            with _progress(label, log):
                stage.run(self.ctx, resume, log)
        except Interrupted as e:
            rec.update(status="interrupted", signal=signal.Signals(e.signum).name, seconds=round(time.time() - t0, 1))
            self.save_state()
            console.print(f"{label} [yellow]interrupted[/yellow] by {rec['signal']}: its processes are stopped; "
                          f"run the same command again to resume")
            raise
        except BaseException:
            rec.update(status="failed", seconds=round(time.time() - t0, 1))
            self.save_state()
            raise
        finally:
            self.ctx.on_start = None
        dt = time.time() - t0
        self.state[stage.name].update(status="done", seconds=round(dt, 1), output_hash=output_hash(stage, self.ctx))
        self.save_state()
        return dt


def _ours(pgid: int) -> bool:
    """Whether group ``pgid`` is still one this project started: its leader (a supervisor or serve/run.py) is alive,
    or gone while members are left (the kernel does not reuse a pid that is still a group's id)."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True
    return b"personagpt.pipeline.supervisor" in cmdline or b"serve/run.py" in cmdline


class _progress:
    """A console status line showing the stage's latest log line while it runs."""

    def __init__(self, label: str, log):
        self.label, self.log, self.stop = label, log, threading.Event()

    def __enter__(self):
        self.status = console.status(f"{self.label} running (log {self.log})")
        self.status.__enter__()
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()
        return self

    def _follow(self) -> None:
        while not self.stop.wait(1.0):
            self.status.update(f"{self.label} running {_last_line(self.log)[:100]}")

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.status.__exit__(*exc)


def _last_line(path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            chunk = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in chunk.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""
