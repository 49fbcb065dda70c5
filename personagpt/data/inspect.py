"""``personagpt data inspect``: who speaks in a source, so that a user can pick ``data.persona``.

Per speaker: id, display name, messages, first and last message time (UTC), sessions (split at
``data.session_gap_seconds``) and conversations they take part in; plus the source's totals and what its reader
dropped. Nothing is written and no message text is shown.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

from personagpt.config import Config
from personagpt.data.readers import read_source
from personagpt.data.samples import split_sessions


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def inspect_source(cfg: Config) -> dict[str, Any]:
    d = cfg.data
    source = read_source(d.format, d.path, d.export)
    msgs: collections.Counter = collections.Counter()
    sessions: collections.Counter = collections.Counter()
    convs: collections.Counter = collections.Counter()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    n_sessions = 0
    for conv in source.conversations:
        for s in conv.turns:
            msgs[s.speaker] += 1
            if s.time is not None:
                first[s.speaker] = min(first.get(s.speaker, s.time), s.time)
                last[s.speaker] = max(last.get(s.speaker, s.time), s.time)
        for spk in {t.speaker for t in conv.turns}:
            convs[spk] += 1
        for sess in split_sessions(conv.turns, d.session_gap_seconds, False):
            n_sessions += 1
            for spk in {t.speaker for t in sess}:
                sessions[spk] += 1
    speakers = [{"id": spk, "name": source.names.get(spk, spk), "messages": n, "first": _iso(first.get(spk)),
                 "last": _iso(last.get(spk)), "sessions": sessions[spk], "conversations": convs[spk]}
                for spk, n in sorted(msgs.items(), key=lambda kv: (-kv[1], kv[0]))]
    times = [t for t in (*first.values(), *last.values())]
    return {"source": source.name, "messages": sum(msgs.values()), "conversations": len(source.conversations),
            "sessions": n_sessions, "first": _iso(min(times)) if times else None,
            "last": _iso(max(times)) if times else None, "speakers": speakers,
            "dropped": source.stats.get("dropped", {}),
            **({"date_order": source.stats["date_order"]} if "date_order" in source.stats else {})}


def print_inspect(summary: dict[str, Any], limit: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    span = f", {summary['first']} .. {summary['last']} UTC" if summary["first"] else ""
    print(f"{summary['source']}: {summary['messages']} messages, {summary['conversations']} conversations, "
          f"{summary['sessions']} sessions{span}")
    table = Table()
    for col, justify in (("id", "left"), ("name", "left"), ("messages", "right"), ("sessions", "right"),
                         ("conversations", "right"), ("first", "left"), ("last", "left")):
        table.add_column(col, justify=justify, no_wrap=col in ("id", "name"))
    for s in summary["speakers"][:limit]:
        table.add_row(s["id"], s["name"], str(s["messages"]), str(s["sessions"]), str(s["conversations"]),
                      s["first"] or "", s["last"] or "")
    console = Console()
    if not console.is_terminal:  # piped or logged: no terminal width to fit, keep rows on one line
        console = Console(width=160)
    console.print(table)
    if summary["dropped"]:
        console.print("dropped: " + ", ".join(f"{k} {v}" for k, v in summary["dropped"].items()))
    if "date_order" in summary:
        console.print(f"dates read {summary['date_order']}")
    console.print("pick one with data.persona=ID or data.persona=NAME")
