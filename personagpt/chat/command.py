"""The one command that opens a chat with the model a run served: what ``make demo`` prints at its end.

It reads the load-test stage's record (``runs/NAME/loadtest/done.json``: which artifact each served stage made),
so it names exactly the model that was served and load tested — the last one of ``pipeline.serve`` — with the run's
config and its ``serve.*`` overrides, so the chat serves it the same way. When that was the quality gate's choice,
the command names the pointer ``runs/NAME/promoted``, which follows the gate on later runs.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from personagpt.paths import RunLayout


def _short(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _short_link(path: Path) -> str:
    """Like :func:`_short`, without resolving the last component (a symlink such as ``promoted`` stays itself)."""
    path = Path(path).parent.resolve() / Path(path).name
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def chat_command(layout: RunLayout, config: str | Path | None = None, overrides: list[str] | None = None
                 ) -> str | None:
    """``personagpt chat --artifact DIR [--config FILE] [serve.k=v ...]``; None when the run served no model."""
    done = layout.loadtest_root / "done.json"
    try:
        models = json.loads(done.read_text()).get("models") or {}
    except (OSError, ValueError):
        return None
    served = [(stage, m["artifact"]) for stage, m in models.items() if isinstance(m, dict) and m.get("artifact")]
    if not served or not os.path.isdir(served[-1][1]):
        return None
    stage, artifact = served[-1]
    if stage == "promote" and layout.promoted.is_dir():
        artifact = layout.promoted
    argv = ["personagpt", "chat", "--artifact", _short_link(artifact)]
    if config is not None:
        argv += ["--config", _short(config)]
    argv += [o for o in overrides or [] if o.startswith("serve.")]
    return shlex.join(argv)
