"""Start a training command, or resume it when its run already has a checkpoint: what a restarted pod needs.

    python k8s/resume_or_start.py --work-dir WORK_DIR -- deepspeed ... train/run.py --config FILE [key=value ...]

train/run.py and distill/run.py refuse ``--resume`` when there is no checkpoint yet, and refuse to start over a
run folder that holds checkpoints without it (both exit 2: the user must choose). A Kubernetes Job cannot
choose per attempt — the same command runs on the first start and after every restart — so this wrapper
decides with the training engine's own rule (personagpt.training.checkpoints.latest_checkpoint on
WORK_DIR/checkpoints): a complete checkpoint exists -> the command gets ``--resume``; none -> it starts fresh.
It then replaces itself with the command (exec: signals go straight to the launcher).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from personagpt.training.checkpoints import latest_checkpoint


def plan(work_dir: Path, command: list[str]) -> tuple[list[str], str]:
    """(the command to exec, what was decided)."""
    if "--resume" in command or "--fresh" in command:
        raise SystemExit("error: the wrapped command must not choose --resume/--fresh itself")
    latest = latest_checkpoint(work_dir / "checkpoints")
    if latest is None:
        return command, f"no complete checkpoint in {work_dir / 'checkpoints'}: starting"
    return [*command, "--resume"], f"resuming from {latest.path} (step {latest.step})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, required=True,
                    help="the stage's work folder (train.work_dir / distill.work_dir)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given (after --)")
    command, decision = plan(args.work_dir, command)
    print(f"resume_or_start: {decision}", flush=True)
    exe = shutil.which(command[0])
    if exe is None:
        print(f"error: {command[0]}: command not found", file=sys.stderr)
        return 127
    os.execv(exe, command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
