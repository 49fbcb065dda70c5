"""Block until an artifact exists on the shared volume: the init container that orders the pipeline's pods.

    python k8s/wait_for_artifact.py DIR --kind dataset|model [--timeout SECONDS] [--interval SECONDS]

Stages write an artifact into a temporary sibling folder and rename it into place when its manifest.json is
complete, so "DIR has a readable manifest of this kind" means the upstream stage finished. Exit codes: 0 ready;
1 timed out (the message names the folder); 2 DIR holds an artifact of another kind (a wiring mistake that
waiting cannot fix).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from personagpt.artifacts import MANIFEST, read_manifest
from personagpt.errors import ArtifactError


def wait_for(folder: Path, kind: str, timeout: float, interval: float) -> dict:
    """The manifest of ``folder`` once it is a ``kind`` artifact; TimeoutError after ``timeout`` seconds."""
    t0 = time.monotonic()
    last_note, state = -1.0, "folder missing"
    while True:
        if (folder / MANIFEST).is_file():
            try:
                manifest = read_manifest(folder)
            except ArtifactError as e:  # unreadable manifest: not published yet (or broken): keep waiting, report it
                state = str(e)
            else:
                if manifest.get("kind") != kind:
                    raise ArtifactError(f"{folder}: artifact kind is {manifest.get('kind')!r}, expected {kind!r}")
                return manifest
        elif folder.is_dir():
            state = f"no {MANIFEST} yet"
        waited = time.monotonic() - t0
        if waited >= timeout:
            raise TimeoutError(f"{folder}: no {kind} artifact after {waited:.0f} s ({state}); "
                               "is its upstream stage running?")
        if last_note < 0 or waited - last_note >= 60:
            print(f"wait_for_artifact: waiting for {kind} artifact {folder} ({state}, {waited:.0f} s)", flush=True)
            last_note = waited
        time.sleep(min(interval, max(0.0, timeout - waited)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="artifact folder to wait for")
    ap.add_argument("--kind", required=True, choices=["dataset", "model"], help="expected manifest kind")
    ap.add_argument("--timeout", type=float, default=86400.0, help="seconds before giving up (default: a day)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    args = ap.parse_args(argv)
    try:
        manifest = wait_for(args.folder, args.kind, args.timeout, args.interval)
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ArtifactError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wait_for_artifact: {args.folder} is ready ({manifest.get('kind')} from stage "
          f"{manifest.get('stage')}, content hash {str(manifest.get('content_hash'))[:12]})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
