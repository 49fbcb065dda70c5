"""Print the pinned requirements of one pyproject extra (or `base`), one per line.

Every version pin lives in pyproject.toml; the Makefile uses this to install groups that cannot be
installed as ordinary extras (--no-deps packages, the separate vLLM serving environment).
"""
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: pins.py EXTRA|base", file=sys.stderr)
        return 2
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = sys.argv[1]
    groups = project.get("optional-dependencies", {})
    if name == "base":
        reqs = project["dependencies"]
    elif name in groups:
        reqs = groups[name]
    else:
        print(f"pins.py: no extra named {name!r} in pyproject.toml (have: {', '.join(groups)})", file=sys.stderr)
        return 2
    print("\n".join(reqs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
