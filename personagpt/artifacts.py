"""Artifacts: the only thing stages exchange.

An artifact is a folder (a Hugging Face model folder, or a dataset folder) plus ``manifest.json``: what made
it (stage and command), from which parent artifact(s) (path and content hash), with which config, and its
measured metrics. Folders are written into a hidden temporary sibling and renamed into place at the end, so a
failed stage never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from personagpt import __version__
from personagpt.errors import ArtifactError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def git_commit() -> str | None:
    """The commit of the PersonaGPT checkout that is running (None outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10)
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def hash_files(folder: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> str:
    """sha256 over the relative paths and bytes of every file in ``folder`` (sorted), manifest excluded."""
    h = hashlib.sha256()
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name in exclude:
            continue
        h.update(str(p.relative_to(folder)).encode())
        h.update(b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def new_manifest(kind: str, stage: str, config: dict[str, Any] | None = None,
                 parents: dict[str, str | Path] | None = None, metrics: dict[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """A manifest dict. ``parents`` maps a role ("dataset", "teacher", "model") to an artifact folder; each
    parent's own content hash is recorded so a downstream stage can tell when its input changed."""
    parent_info = {}
    for role, path in (parents or {}).items():
        pm = read_manifest(path)
        parent_info[role] = {"path": str(Path(path).resolve()), "kind": pm.get("kind"),
                             "content_hash": pm.get("content_hash")}
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "stage": stage,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "personagpt_version": __version__,
        "git_commit": git_commit(),
        "host": {"hostname": socket.gethostname(), "python": platform.python_version(),
                 "machine": platform.machine()},
        "parents": parent_info,
        "config": config or {},
        "metrics": metrics or {},
        **extra,
    }


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` into ``folder`` with the folder's content hash filled in."""
    folder = Path(folder)
    manifest = dict(manifest)
    manifest["content_hash"] = hash_files(folder)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def read_json(path: str | Path) -> Any:
    """A JSON file of an artifact (manifest.json, config.json); ArtifactError naming the file when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: invalid JSON: {e}") from None


def read_manifest(folder: str | Path, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read an artifact's manifest; error naming the folder when it is not an artifact (of that kind)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: artifact folder does not exist")
    if not path.is_file():
        raise ArtifactError(f"{folder}: not an artifact (no {MANIFEST})")
    manifest = read_json(path)
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else kind
        if manifest.get("kind") not in kinds:
            raise ArtifactError(f"{folder}: artifact kind is {manifest.get('kind')!r}, expected {' or '.join(kinds)}")
    return manifest


@contextlib.contextmanager
def staging_dir(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``out``; on success it atomically becomes ``out``.

    On any exception the temporary folder is removed and ``out`` is left exactly as it was.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out}: already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(-.*)?$")


def recover_staging(folder: str | Path, say=print) -> list[str]:
    """Clean up after writers of :func:`staging_dir` that were killed (their pid is gone): a half-written
    temporary folder is removed; a previous artifact moved aside (``.NAME.old-PID``) goes back in place when the
    writer died before the new one replaced it, and is removed otherwise. Returns what was done."""
    from personagpt.process_group import pid_alive

    done = []
    folder = Path(folder)
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _STAGING.match(entry.name)
        if not m or not entry.is_dir() or pid_alive(int(m["pid"])):
            continue
        target = folder / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.replace(entry, target)
            done.append(f"restored {target} (its writer, pid {m['pid']}, was killed while replacing it)")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry.name}: the unfinished output of pid {m['pid']}, which was killed")
    for line in done:
        say(line)
    return done
