"""Run the stages in order, each as its own process; skip the ones whose inputs and config are unchanged.

A stage's fingerprint hashes the config sections that define it and the content hashes of its parents'
artifacts. ``runs/NAME/pipeline.json`` records, per stage, the fingerprint its artifact was made with; a stage is
skipped when the fingerprint is the same and its artifact (manifest and content hash) is still there. Changing a
key therefore reruns that stage, whose new artifact changes the fingerprints of everything downstream.
A failing stage stops the run with that stage's error; earlier artifacts stay as they were (stages write through
staging folders, so a failed stage leaves none behind).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from personagpt.artifacts import hash_files, read_manifest
from personagpt.errors import ArtifactError, PersonaGPTError
from personagpt.pipeline.stages import STAGES, Ctx, Stage, env_for_children

console = Console(highlight=False)


class StageFailed(PersonaGPTError):
    exit_code = 1


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
    def __init__(self, ctx: Ctx, force: bool = False, only: list[str] | None = None):
        self.ctx, self.force, self.only = ctx, force, only
        self.state_path = ctx.layout.state
        self.state: dict[str, dict] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.timings: dict[str, dict] = {}

    def save_state(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=2) + "\n")

    def up_to_date(self, stage: Stage, fp: str) -> bool:
        rec = self.state.get(stage.name, {})
        return (not self.force and rec.get("fingerprint") == fp and rec.get("status") == "done"
                and rec.get("output_hash") is not None and rec.get("output_hash") == output_hash(stage, self.ctx))

    def run(self) -> dict[str, dict]:
        from personagpt.pipeline.loadtest_stage import run_loadtest_stage

        ctx = self.ctx
        ctx.layout.log("any").parent.mkdir(parents=True, exist_ok=True)
        n = len(STAGES)
        t_all = time.time()
        for i, stage in enumerate(STAGES, 1):
            fp = fingerprint(stage, ctx, self.state)
            label = f"[{i}/{n}] {stage.name:<9}"
            if (self.only and stage.name not in self.only) or self.up_to_date(stage, fp):
                why = "not selected" if self.only and stage.name not in self.only else "up to date"
                console.print(f"{label} [dim]skipped ({why}): {stage.output(ctx)}[/dim]")
                self.timings[stage.name] = {"status": "skipped", "seconds": 0.0}
                continue
            rec = self.state.get(stage.name, {})
            resume = rec.get("fingerprint") == fp and rec.get("status") == "failed" and not self.force
            self.state[stage.name] = {"fingerprint": fp, "status": "running", "started": time.time()}
            self.save_state()
            log = ctx.layout.log(stage.name)
            t0 = time.time()
            try:
                if stage.command is None:
                    with console.status(f"{label} running (log {log})"):
                        run_loadtest_stage(ctx, log)
                else:
                    self._run_process(label, stage.command(ctx, resume and stage.name in ("train", "distill")
                                                            and self._has_checkpoints(stage)), log)
            except BaseException:
                self.state[stage.name].update(status="failed", seconds=round(time.time() - t0, 1))
                self.save_state()
                raise
            dt = time.time() - t0
            self.state[stage.name].update(status="done", seconds=round(dt, 1), output_hash=output_hash(stage, ctx))
            self.save_state()
            self.timings[stage.name] = {"status": "ran", "seconds": round(dt, 1)}
            console.print(f"{label} [green]done[/green] in {dt:.1f} s -> {stage.output(ctx)}")
        console.print(f"pipeline finished in {time.time() - t_all:.1f} s")
        return self.timings

    def _has_checkpoints(self, stage: Stage) -> bool:
        ck = self.ctx.layout.work(stage.name) / "checkpoints"
        return ck.is_dir() and any(ck.iterdir())

    def _run_process(self, label: str, argv: list[str], log: Path) -> None:
        from personagpt.paths import ROOT

        with open(log, "w") as f:
            f.write("$ " + " ".join(argv) + "\n")
            f.flush()
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env_for_children())
            with console.status(f"{label} running (log {log})") as status:
                while proc.poll() is None:
                    time.sleep(1.0)
                    status.update(f"{label} running {_last_line(log)[:100]}")
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            raise StageFailed(f"stage failed with exit code {proc.returncode}: {' '.join(argv[:6])} ...\n"
                              f"--- last lines of {log} ---\n{tail}")


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            chunk = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in chunk.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""
