"""What the export readers share: JSON loading with located errors, media placeholders, turn building."""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from personagpt.config.data import ExportConfig
from personagpt.data.readers import read_text
from personagpt.data.types import Conversation, Turn
from personagpt.errors import DataError


def load_json(path: Path) -> Any:
    """The parsed JSON of ``path``; a DataError naming the file, line and column when it is not valid JSON."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: column {e.colno}: invalid JSON: {e.msg}"
                        + (" (truncated file?)" if e.pos >= len(text.rstrip()) else "")) from None


_FRACTION = re.compile(r"(\.\d+)(?=[+-]\d\d:?\d\d$|Z$|$)")


def parse_iso(value: str) -> float:
    """An ISO-8601 time (offset or Z; no offset: UTC) -> epoch seconds. ValueError when it is not one."""
    if not isinstance(value, str):
        raise ValueError(value)
    v = value.strip().replace("Z", "+00:00")
    v = _FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], v)  # Python 3.10 wants 3 or 6 fraction digits
    t = dt.datetime.fromisoformat(v)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def media_text(kind: str, opts: ExportConfig) -> str | None:
    """The text standing for one media item of ``kind`` (None: media are dropped)."""
    if kind == "sticker" and opts.stickers == "drop":
        return None
    if opts.media == "drop" and kind != "sticker":
        return None
    return opts.media_placeholder.format(kind=kind)


def sticker_text(emoji: str | None, opts: ExportConfig) -> str | None:
    if opts.stickers == "drop":
        return None
    if opts.stickers == "emoji" and emoji:
        return emoji
    return opts.media_placeholder.format(kind="sticker")


class ChatBuilder:
    """Collects one chat's kept messages as turns (gaps from times) and counts what was dropped, by reason."""

    def __init__(self, conv_id: str, dropped: collections.Counter):
        self.conv = Conversation(id=conv_id, turns=[])
        self.dropped = dropped
        self._prev: float | None = None

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def add(self, speaker: str, parts: list[str | None], time: float, forwarded: bool, opts: ExportConfig) -> None:
        """A message of ``speaker``: ``parts`` (media placeholders, text) joined by spaces; None parts are gone."""
        if forwarded and opts.forwarded == "drop":
            return self.drop("forwarded")
        text = " ".join(p.strip() for p in parts if p and p.strip())
        if not text:
            return self.drop("empty_or_media_only")
        if forwarded and opts.forwarded == "tag":
            text = f"{opts.forwarded_tag} {text}"
        gap = max(0.0, time - self._prev) if self._prev is not None else 0.0
        self._prev = time
        self.conv.turns.append(Turn(speaker, text, gap, time=time))
