"""Telegram Desktop's JSON export (Settings -> Advanced -> Export Telegram data / a chat's "Export chat history",
format JSON): ``result.json``.

- A single chat: ``{"name", "type", "id", "messages": [...]}``; a whole account: ``{"chats": {"list": [chat...]},
  "left_chats": {"list": [...]}, "personal_information": ...}`` (read: the chats; never the personal information).
- A message: ``{"id", "type", "date", "date_unixtime", "from", "from_id", "text", "text_entities", ...}``.
  ``type: "service"`` (joins, calls, pins...) is dropped. The time is ``date_unixtime`` (UTC; a string of epoch
  seconds), else ``date`` (local time without a zone, read as UTC).
- ``text`` is a string or a list of strings and ``{"type", "text"}`` entities (links, bold, mentions...); the
  visible text is their concatenation (a ``text_link``'s hidden ``href`` is not kept). ``text_entities`` (always a
  list) is used when ``text`` is absent.
- The speaker is ``from_id`` (``user123``, ``channel123``: prefixed), its display name ``from``, which is null for a
  deleted account ("Deleted Account").
- Media: ``photo``, ``media_type`` (sticker, animation, video_file, video_message, voice_message, audio_file) or a
  bare ``file``, ``contact_information``, ``location_information``, ``poll``: ``data.export.media_placeholder``;
  a sticker is its ``sticker_emoji``. ``forwarded_from``: ``data.export.forwarded``.
"""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path
from typing import Any

from personagpt.config.data import ExportConfig
from personagpt.data.exports.common import ChatBuilder, load_json, media_text, sticker_text
from personagpt.data.types import Source
from personagpt.errors import DataError

MEDIA_TYPES = {"animation": "gif", "video_file": "video", "video_message": "video_message", "voice_message": "voice",
               "audio_file": "audio", "sticker": "sticker"}
DELETED = "Deleted Account"


def flatten_text(value: Any, where: str) -> str:
    """``text``: a string, or a list of strings and ``{"type", "text"}`` entities -> the visible text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        out = []
        for i, part in enumerate(value):
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                raise DataError(f"{where}: key text[{i}]: expected a string or a {{type, text}} entity")
        return "".join(out)
    raise DataError(f"{where}: key text: expected a string or a list, got {type(value).__name__}")


def message_time(m: dict, where: str) -> float:
    raw = m.get("date_unixtime")
    if raw is not None:
        try:
            return float(int(raw))
        except (TypeError, ValueError):
            raise DataError(f"{where}: key date_unixtime: not epoch seconds: {raw!r}") from None
    raw = m.get("date")
    try:
        return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.timezone.utc).timestamp()
    except (TypeError, ValueError):
        raise DataError(f"{where}: key date: not a date (and no date_unixtime): {raw!r}") from None


def media_parts(m: dict, opts: ExportConfig) -> list[str | None]:
    kind = None
    if "photo" in m:
        kind = "photo"
    elif m.get("media_type") == "sticker":
        return [sticker_text(m.get("sticker_emoji"), opts)]
    elif m.get("media_type") is not None:
        kind = MEDIA_TYPES.get(m["media_type"], "file")
    elif "file" in m:
        kind = "file"
    elif "contact_information" in m:
        kind = "contact"
    elif "location_information" in m:
        kind = "location"
    elif "poll" in m:
        kind = "poll"
    return [media_text(kind, opts)] if kind else []


def read_chat(chat: Any, where: str, opts: ExportConfig, names: dict[str, str], dropped: collections.Counter):
    if not isinstance(chat, dict) or not isinstance(chat.get("messages"), list):
        raise DataError(f"{where}: key messages: expected a chat object with a list of messages")
    chat_id = str(chat.get("id", where.rsplit(" ", 1)[-1]))
    b = ChatBuilder(f"telegram:{chat_id}", dropped)
    for i, m in enumerate(chat["messages"]):
        mwhere = f"{where}: message id {m.get('id', f'#{i}')}" if isinstance(m, dict) else f"{where}: message #{i}"
        if not isinstance(m, dict):
            raise DataError(f"{mwhere}: expected a message object")
        mtype = m.get("type")
        if mtype != "message":
            if mtype is None:
                raise DataError(f"{mwhere}: key type: missing")
            b.drop(str(mtype) if mtype == "service" else "other_type")
            continue
        time = message_time(m, mwhere)
        speaker = m.get("from_id")
        name = m.get("from")
        if speaker is None:
            speaker = f"name:{name}" if name else "unknown"
        speaker = str(speaker)
        names.setdefault(speaker, str(name) if name else DELETED)
        text = flatten_text(m["text"], mwhere) if "text" in m else flatten_text(m.get("text_entities", ""), mwhere)
        b.add(speaker, [*media_parts(m, opts), text], time, "forwarded_from" in m, opts)
    return b.conv


def read_telegram(path: str | Path, opts: ExportConfig) -> Source:
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a Telegram export object (a chat, or an account with chats.list)")
    names: dict[str, str] = {}
    dropped: collections.Counter = collections.Counter()
    convs = []
    if "messages" in data:
        convs.append(read_chat(data, f"{path}: chat {data.get('id', '?')}", opts, names, dropped))
    elif isinstance(data.get("chats"), dict):
        for key in ("chats", "left_chats"):
            section = data.get(key) or {}
            chats = section.get("list", []) if isinstance(section, dict) else None
            if not isinstance(chats, list):
                raise DataError(f"{path}: key {key}.list: expected a list of chats")
            for i, chat in enumerate(chats):
                cid = chat.get("id", f"#{i}") if isinstance(chat, dict) else f"#{i}"
                convs.append(read_chat(chat, f"{path}: {key}.list[{i}] (chat {cid})", opts, names, dropped))
    else:
        raise DataError(f"{path}: not a Telegram export: no messages (single chat) and no chats.list (account)")
    convs = [c for c in convs if c.turns]
    return Source(name=f"telegram:{path}", conversations=convs, names=names,
                  stats={"chats": len(convs), "dropped": dict(sorted(dropped.items())),
                         "per_session_conversations": True})
