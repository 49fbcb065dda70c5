"""Readers of the input formats (chitchat, csv, jsonl here; the chat exports in personagpt/data/exports/).
Errors name the file, the line/row and the column/key."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path

from personagpt.data.types import Conversation, Source, Turn
from personagpt.errors import DataError

CSV_REQUIRED = ("Context", "question", "answer", "time_diff_seconds")
CSV_OPTIONAL = ("conversation_id", "speaker")
CSV_USER = "user"
CSV_PERSONA = "persona"


def read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def _parse_gap(where: str, value) -> float:
    """``where`` names the file, row/line and column/key, e.g. ``f.csv: row 3: column time_diff_seconds``."""
    if isinstance(value, bool):
        raise DataError(f"{where}: not a number: {value!r}")
    try:
        gap = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: not a number: {value!r}") from None
    if math.isnan(gap) or math.isinf(gap) or gap < 0:
        raise DataError(f"{where}: must be a finite number >= 0, got {value!r}")
    return gap


def read_csv(path: str | Path) -> Source:
    """PersonaGPT CSV: one exchange per row — ``question`` (the other side) then ``answer`` (the persona).

    ``time_diff_seconds`` is the gap before the row's question. Rows of one ``conversation_id`` (or of the whole
    file, without that column) are consecutive turns. ``speaker`` names who answered (persona selection); without
    it every answer belongs to one persona. ``Context`` is free text preceding the exchange: it is prepended to the
    first question of a session (later rows already have the earlier rows as structured context).
    Row numbers count the header as row 1, as a spreadsheet shows them.
    """
    path = Path(path)
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (expected a header with columns {', '.join(CSV_REQUIRED)})") from None
    except csv.Error as e:
        raise DataError(f"{path}: row 1: malformed CSV: {e}") from None
    header = [h.strip() for h in header]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header has: {', '.join(header)})")
    idx = {name: header.index(name) for name in (*CSV_REQUIRED, *CSV_OPTIONAL) if name in header}
    has_conv, has_speaker = "conversation_id" in idx, "speaker" in idx
    convs: dict[str, Conversation] = {}
    row_no = 1
    skipped_empty = 0
    try:
        for row_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: row {row_no}: expected {len(header)} fields, got {len(row)}")
            question, answer = row[idx["question"]].strip(), row[idx["answer"]].strip()
            gap = _parse_gap(f"{path}: row {row_no}: column time_diff_seconds", row[idx["time_diff_seconds"]].strip())
            conv_id = row[idx["conversation_id"]].strip() if has_conv else "csv"
            if has_conv and not conv_id:
                raise DataError(f"{path}: row {row_no}: column conversation_id: empty")
            speaker = row[idx["speaker"]].strip() if has_speaker else CSV_PERSONA
            if has_speaker and not speaker:
                raise DataError(f"{path}: row {row_no}: column speaker: empty")
            if not answer:
                skipped_empty += 1
                continue
            conv = convs.setdefault(conv_id, Conversation(id=conv_id, turns=[]))
            context = row[idx["Context"]].strip()
            if question:
                conv.turns.append(Turn(CSV_USER, question, gap, context=context))
            conv.turns.append(Turn(speaker, answer, 0.0 if question else gap))
    except csv.Error as e:
        raise DataError(f"{path}: row {row_no + 1}: malformed CSV: {e}") from None
    return Source(name=f"csv:{path}", conversations=list(convs.values()),
                  default_persona=None if has_speaker else CSV_PERSONA,
                  stats={"skipped_empty_answers": skipped_empty, "per_session_conversations": not has_conv})


def _parse_timestamp(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def read_jsonl(path: str | Path) -> Source:
    """One conversation per line: ``{"messages": [{"role", "content", "name"?, "timestamp"?|"time_diff_seconds"?}],
    "id"?}`` (OpenAI chat format). The speaker of a turn is its ``name``, else its ``role``; a system message
    becomes the conversation's system prompt."""
    path = Path(path)
    text = read_text(path)
    convs: list[Conversation] = []
    any_names = False
    seen_ids: set[str] = set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
            raise DataError(f"{where}: key messages: expected an object with a list of messages")
        conv_id = str(obj.get("id", obj.get("conversation_id", f"line{line_no}")))
        if conv_id in seen_ids:
            raise DataError(f"{where}: key id: duplicate conversation id {conv_id!r}")
        seen_ids.add(conv_id)
        conv = Conversation(id=conv_id, turns=[])
        prev_ts = None
        for i, m in enumerate(obj["messages"]):
            mwhere = f"{where}: messages[{i}]"
            if not isinstance(m, dict):
                raise DataError(f"{mwhere}: expected an object with role and content")
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "user", "assistant"):
                raise DataError(f"{mwhere}: key role: must be system, user or assistant, got {role!r}")
            if not isinstance(content, str):
                raise DataError(f"{mwhere}: key content: must be a string, got {type(content).__name__}")
            if role == "system":
                conv.system = content
                continue
            if "time_diff_seconds" in m:
                gap = _parse_gap(f"{mwhere}: key time_diff_seconds", m["time_diff_seconds"])
            else:
                ts = _parse_timestamp(m.get("timestamp"))
                if m.get("timestamp") is not None and ts is None:
                    raise DataError(f"{mwhere}: key timestamp: not an ISO-8601 time or epoch seconds: "
                                    f"{m['timestamp']!r}")
                gap = max(0.0, ts - prev_ts) if ts is not None and prev_ts is not None else 0.0
                prev_ts = ts if ts is not None else prev_ts
            name = m.get("name")
            if name is not None:
                any_names = True
            if content.strip():
                conv.turns.append(Turn(str(name) if name is not None else role, content.strip(), gap))
        convs.append(conv)
    return Source(name=f"jsonl:{path}", conversations=convs, default_persona=None if any_names else "assistant")


def read_chitchat() -> Source:
    """The real ``chitchat-dataset`` package: 7,168 human–human chats with sender ids and timestamps."""
    try:
        import chitchat_dataset
    except ImportError as e:  # pragma: no cover - installed by make setup
        raise DataError(f"data.format chitchat needs the chitchat-dataset package ({e}); run make setup") from None
    convs = []
    for conv_id, conv in chitchat_dataset.Dataset().items():
        turns: list[Turn] = []
        prev_ts = None
        for group in conv["messages"]:
            for msg in group:
                ts = _parse_timestamp(msg["timestamp"])
                gap = max(0.0, ts - prev_ts) if ts is not None and prev_ts is not None else 0.0
                prev_ts = ts
                turns.append(Turn(msg["sender"], msg["text"].strip(), gap))
        convs.append(Conversation(id=conv_id, turns=[t for t in turns if t.text]))
    return Source(name="chitchat-dataset", conversations=convs)


def read_source(fmt: str, path: Path | None, export=None) -> Source:
    """The conversations of ``path`` in format ``fmt``; ``export`` (data.export) configures the chat exports."""
    if fmt in ("telegram", "whatsapp", "discord"):
        import importlib

        from personagpt.config.data import ExportConfig

        reader = getattr(importlib.import_module(f"personagpt.data.exports.{fmt}"), f"read_{fmt}")
        return reader(path, export or ExportConfig())
    if fmt == "chitchat":
        return read_chitchat()
    if fmt == "csv":
        return read_csv(path)
    if fmt == "jsonl":
        return read_jsonl(path)
    raise DataError(f"data.format: unknown format {fmt!r}")
