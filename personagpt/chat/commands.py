"""Slash commands, shared by the terminal and the web page. :func:`run_command` returns what to print, or a
:class:`Reply` whose pieces the front end streams (``/retry``); unknown commands and bad values are one-line
errors (ChatError), never a change to the session."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from personagpt.chat.client import ChatError
from personagpt.chat.session import Session

HELP = """commands:
  /new              start a new conversation (the system prompt stays)
  /undo             remove the last message and its reply
  /retry            a new reply to the last message (also after an error, once the server is back)
  /history          the conversation, what is sent, and the truncation policy
  /system TEXT      set the system prompt (/system with no text: none; /system --trained: the trained one)
  /set k=v ...      temperature=0.7 top_p=0.9 max_tokens=128 (value 'default': the server's default)
  /save FILE        write this session's conversations as JSONL (data.format: jsonl reads it)
  /help             this list
  /exit             leave (Ctrl-D too)"""

SETTABLE = {"temperature": (float, 0.0, 2.0), "top_p": (float, 1e-6, 1.0), "max_tokens": (int, 1, None)}


class Exit(Exception):
    """/exit"""


@dataclass
class Reply:
    pieces: Iterator[str]


def is_command(line: str) -> bool:
    return line.startswith("/")


def run_command(session: Session, line: str) -> str | Reply:
    name, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if name == "/help":
        return HELP
    if name in ("/exit", "/quit"):
        raise Exit()
    if name == "/new":
        session.new()
        return "new conversation" + (f" (system prompt: {session.history.system!r})" if session.history.system else "")
    if name == "/undo":
        t = session.undo()
        return f"removed: {t.user[:60]!r}" + (" and its reply" if t.reply is not None else "")
    if name == "/retry":
        return Reply(session.retry())
    if name == "/history":
        return history_text(session)
    if name == "/system":
        if rest == "--trained":
            session.set_system(session.trained_system)
        else:
            session.set_system(rest)
        return f"system prompt: {session.history.system!r}" if session.history.system else "system prompt: none"
    if name == "/set":
        return set_values(session, rest)
    if name == "/save":
        if not rest:
            raise ChatError("/save needs a file name, e.g. /save chat.jsonl")
        path, n = session.save(shlex.split(rest)[0])
        return f"saved {n} conversation(s) to {path} (personagpt data prepare data.format=jsonl data.path={path})"
    raise ChatError(f"unknown command {name} (/help lists them)")


def set_values(session: Session, text: str) -> str:
    if not text:
        return session.settings.describe(session.max_tokens)
    updates = {}
    for item in text.split():
        key, eq, raw = item.partition("=")
        if not eq or key not in SETTABLE:
            raise ChatError(f"/set {item}: expected key=value with key one of {', '.join(SETTABLE)}")
        kind, lo, hi = SETTABLE[key]
        if raw == "default":
            updates[key] = None
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise ChatError(f"/set {key}: {raw!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < lo or (hi is not None and value > hi):
            raise ChatError(f"/set {key}: must be between {lo} and {hi if hi is not None else 'the context'}, "
                            f"got {raw}")
        updates[key] = value
    for key, value in updates.items():
        setattr(session.settings, key, value)
    return session.settings.describe(session.max_tokens)


def history_text(session: Session) -> str:
    h = session.history
    lines = [session.policy(), f"system prompt: {h.system!r}" if h.system else "system prompt: none"]
    dropped = session.last.dropped if session.last else 0
    if session.last:
        lines.append(f"last prompt: {session.last.prompt_tokens} tokens, {dropped} oldest turn(s) not sent")
    for i, t in enumerate(h.turns, 1):
        mark = " [not sent: dropped]" if i <= dropped else ""
        lines.append(f"{i}. you: {t.user}{mark}")
        lines.append(f"   persona: {t.reply}" if t.reply is not None else "   persona: (no reply yet: /retry)")
    if not h.turns:
        lines.append("(no messages yet)")
    return "\n".join(lines)
