"""Where caches live: $PERSONAGPT_CACHE (default .cache/ in the checkout, ignored by git)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("PERSONAGPT_CACHE", ROOT / ".cache")).resolve()


def smollm2_dir() -> Path:
    return cache_dir() / "models" / "smollm2-135m-instruct"
