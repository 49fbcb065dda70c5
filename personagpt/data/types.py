"""The one in-memory form every source is read into."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Turn:
    speaker: str
    text: str
    gap: float = 0.0  # seconds since the previous turn of the conversation (0 for the first)
    context: str = ""  # free-text context preceding this turn (CSV Context column); used at a session start
    time: float | None = None  # when it was sent (epoch seconds, UTC), where the source says so


@dataclass
class Conversation:
    id: str
    turns: list[Turn]
    system: str | None = None  # a system message found in the source (jsonl), if any


@dataclass
class Source:
    """What a reader returns: conversations plus facts about the source for the manifest."""

    name: str
    conversations: list[Conversation]
    default_persona: str | None = None  # used for persona=most_active when the source has no speaker ids
    stats: dict = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # speaker id -> display name, where they differ (exports)
