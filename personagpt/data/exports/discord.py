"""DiscordChatExporter's JSON export (``DiscordChatExporter.Cli export -f Json``, or the GUI's JSON format): one
file per channel, ``{"guild", "channel", "messages": [...]}``; ``data.path`` is one file or a folder of them.

- A message: ``{"id", "type", "timestamp", "content", "author": {"id", "name", "nickname", "isBot"},
  "attachments": [{"fileName"...}], "stickers": [...], "embeds": [...]}``. Only ``type`` Default and Reply are
  messages; the others (joins, pins, calls, thread and channel changes...) are dropped, and so are bots' messages
  (``author.isBot``).
- The speaker is ``author.id``; its display name the server ``nickname``, else ``name``.
- ``timestamp`` is ISO-8601 with an offset. Attachments and stickers become ``data.export.media_placeholder``
  (images photo, videos video, audio audio, other files file); embeds (link previews) are not text and are dropped.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from personagpt.config.data import ExportConfig
from personagpt.data.exports.common import ChatBuilder, load_json, media_text, parse_iso, sticker_text
from personagpt.data.types import Source
from personagpt.errors import DataError

MESSAGE_TYPES = ("Default", "Reply")
EXTENSIONS = {"photo": ("png", "jpg", "jpeg", "webp", "heic", "bmp"), "gif": ("gif",),
              "video": ("mp4", "mov", "webm", "mkv", "avi"), "audio": ("mp3", "ogg", "wav", "m4a", "flac", "opus")}


def attachment_kind(file_name: Any) -> str:
    ext = str(file_name or "").rsplit(".", 1)[-1].lower()
    return next((kind for kind, exts in EXTENSIONS.items() if ext in exts), "file")


def read_channel(path: Path, opts: ExportConfig, names: dict[str, str], dropped: collections.Counter):
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise DataError(f"{path}: key messages: not a DiscordChatExporter JSON export (expected an object with "
                        "guild, channel and a list of messages)")
    channel = data.get("channel") if isinstance(data.get("channel"), dict) else {}
    b = ChatBuilder(f"discord:{channel.get('id', path.stem)}", dropped)
    for i, m in enumerate(data["messages"]):
        where = f"{path}: message id {m.get('id', f'#{i}')}" if isinstance(m, dict) else f"{path}: message #{i}"
        if not isinstance(m, dict):
            raise DataError(f"{where}: expected a message object")
        if m.get("type") not in MESSAGE_TYPES:
            if m.get("type") is None:
                raise DataError(f"{where}: key type: missing")
            b.drop("other_type")
            continue
        author = m.get("author")
        if not isinstance(author, dict) or author.get("id") is None:
            raise DataError(f"{where}: key author: expected an object with an id")
        if author.get("isBot"):
            b.drop("bot")
            continue
        try:
            time = parse_iso(m.get("timestamp"))
        except (TypeError, ValueError):
            raise DataError(f"{where}: key timestamp: not an ISO-8601 time: {m.get('timestamp')!r}") from None
        content = m.get("content", "")
        if not isinstance(content, str):
            raise DataError(f"{where}: key content: must be a string, got {type(content).__name__}")
        speaker = str(author["id"])
        names.setdefault(speaker, str(author.get("nickname") or author.get("name") or speaker))
        parts: list[str | None] = [media_text(attachment_kind(a.get("fileName") if isinstance(a, dict) else None),
                                              opts) for a in m.get("attachments") or []]
        parts += [sticker_text(None, opts) for _ in m.get("stickers") or []]
        b.add(speaker, [*parts, content], time, False, opts)
    return b.conv


def read_discord(path: str | Path, opts: ExportConfig) -> Source:
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: folder has no .json channel exports")
    names: dict[str, str] = {}
    dropped: collections.Counter = collections.Counter()
    convs = [c for c in (read_channel(f, opts, names, dropped) for f in files) if c.turns]
    return Source(name=f"discord:{path}", conversations=convs, names=names,
                  stats={"channels": len(convs), "dropped": dict(sorted(dropped.items())),
                         "per_session_conversations": True})
