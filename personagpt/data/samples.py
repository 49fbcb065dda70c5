"""Sessions, persona selection, context windows, splits and de-duplication."""

from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import dataclass

from personagpt.data.types import Conversation, Source, Turn
from personagpt.errors import DataError


def choose_persona(source: Source, persona: str) -> str:
    """``most_active``: the speaker with the most turns (ties by name); else a speaker id (a Telegram id also
    without its ``user`` prefix) or a display name (exact, else ignoring case) that names exactly one speaker."""
    counts = collections.Counter(t.speaker for c in source.conversations for t in c.turns)
    if not counts:
        raise DataError(f"{source.name}: no conversation turns found")
    if persona == "most_active":
        if source.default_persona is not None:
            return source.default_persona
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    if persona in counts:
        return persona
    if f"user{persona}" in counts:
        return f"user{persona}"
    for same in (lambda a, b: a == b, lambda a, b: a.casefold() == b.casefold()):
        ids = sorted(s for s in counts if same(source.names.get(s, s), persona))
        if len(ids) == 1:
            return ids[0]
        if len(ids) > 1:
            raise DataError(f"data.persona: display name {persona!r} is ambiguous in {source.name}: speakers "
                            f"{', '.join(ids)}; give an id (personagpt data inspect lists them)")
    top = ", ".join(f"{s} ({n})" if s not in source.names else f"{s} {source.names[s]!r} ({n})"
                    for s, n in counts.most_common(5))
    raise DataError(f"data.persona: unknown persona {persona!r} in {source.name}; most active speakers: {top}")


def split_sessions(turns: list[Turn], gap_seconds: float, merge_consecutive: bool) -> list[list[Turn]]:
    """Split at gaps longer than ``gap_seconds``; join consecutive messages of one speaker into one turn."""
    sessions: list[list[Turn]] = []
    for t in turns:
        if not sessions or t.gap > gap_seconds:
            sessions.append([Turn(t.speaker, t.text, t.gap, t.context, t.time)])
            continue
        cur = sessions[-1]
        if merge_consecutive and cur[-1].speaker == t.speaker:
            cur[-1] = Turn(t.speaker, cur[-1].text + "\n" + t.text, cur[-1].gap, cur[-1].context, cur[-1].time)
        else:
            cur.append(Turn(t.speaker, t.text, t.gap, t.context, t.time))
    return sessions


def sessions_as_conversations(convs: list[Conversation], gap_seconds: float) -> list[Conversation]:
    """Every session its own conversation (the unit of the split), named by its conversation and start time
    (stable when messages are added), or ``sessionN`` without times (a CSV without conversation ids)."""
    out = []
    for conv in convs:
        for i, s in enumerate(split_sessions(conv.turns, gap_seconds, False)):
            sid = f"{conv.id}@{int(s[0].time)}" if s[0].time is not None else f"session{i}"
            out.append(Conversation(id=sid, turns=s, system=conv.system))
    return out


def split_of(conv_id: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split by conversation id: a conversation keeps its split when data is added."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{conv_id}".encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


@dataclass
class Candidate:
    """A persona reply with its whole session context (before fitting to max_length)."""

    conversation_id: str
    session: int
    turn: int
    system: str | None
    context: list[dict]  # previous turns as chat messages, oldest first
    reply: dict

    def messages(self, n_context: int) -> list[dict]:
        ctx = self.context[len(self.context) - n_context:] if n_context else []
        while ctx and ctx[0]["role"] == "assistant":  # a sample starts with the user's side
            ctx = ctx[1:]
        sys_msg = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msg + ctx + [self.reply]


def candidates(conv: Conversation, persona: str, gap_seconds: float, merge_consecutive: bool,
               max_context_turns: int, system_prompt: str | None, min_answer_chars: int) -> list[Candidate]:
    out = []
    system = system_prompt if system_prompt is not None else conv.system
    for s_idx, session in enumerate(split_sessions(conv.turns, gap_seconds, merge_consecutive)):
        msgs = []
        for t_idx, t in enumerate(session):
            role = "assistant" if t.speaker == persona else "user"
            content = t.text
            if t_idx == 0 and t.context and role == "user":
                content = t.context + "\n" + content
            msg = {"role": role, "content": content}
            if role == "assistant" and any(m["role"] == "user" for m in msgs) and len(content) >= min_answer_chars:
                ctx = msgs[-max_context_turns:] if max_context_turns else []
                if any(m["role"] == "user" for m in ctx):
                    out.append(Candidate(conv.id, s_idx, t_idx, system, list(ctx), msg))
            msgs.append(msg)
    return out


def sample_key(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
