"""One chat session, the same for the terminal and the web page: send, retry, undo, new, settings, transcripts.

Rules: a failed or cut-off reply is not kept — its user message stays, unanswered, and ``/retry`` sends it again
(after the server came back, say); ``retry`` on an answered turn asks for a new reply to it; a new message sent
instead of ``/retry`` replaces the unanswered one (the conversation stays user, assistant, user, ...). The model
name and context length are asked from the server when first needed, so a session can start while the server is
down.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from personagpt.chat.client import ChatClient, ChatError, ServerInfo
from personagpt.chat.history import Fitted, History, Turn, now, policy

DEFAULT_MAX_TOKENS = 256


@dataclass
class Settings:
    temperature: float | None = None  # None: the server's default (the artifact's generation config)
    top_p: float | None = None
    max_tokens: int | None = None     # None: DEFAULT_MAX_TOKENS, at most a quarter of the served context

    def describe(self, max_tokens: int) -> str:
        def show(v):
            return "server default" if v is None else v

        return f"temperature={show(self.temperature)} top_p={show(self.top_p)} max_tokens={max_tokens}"


class Session:
    def __init__(self, client: ChatClient, model: str | None, system: str | None, counter_factory: Callable,
                 context: int | None = None, settings: Settings | None = None):
        self.client = client
        self.requested_model = model
        self.trained_system = system
        self.history = History(system)
        self.closed: list[History] = []          # earlier conversations of this session (/new), for /save
        self.settings = settings or Settings()
        self._info: ServerInfo | None = None
        self._context_override = context
        self.counter = counter_factory(self)
        self.last: Fitted | None = None
        self.id = now().replace(":", "").replace("+0000", "Z")

    # ----------------------------------------------------------------------------------------- server facts
    def info(self) -> ServerInfo:
        if self._info is None:
            self._info = self.client.info(self.requested_model)
        return self._info

    @property
    def model(self) -> str:
        return self.requested_model or self.info().model

    @property
    def context(self) -> int:
        if self._context_override:
            return self._context_override
        n = self.info().max_model_len
        if not n:
            raise ChatError("the server does not say its context length (max_model_len): pass --context N")
        return n

    def known_context(self) -> int | None:
        try:
            return self.context
        except ChatError:
            return None

    @property
    def max_tokens(self) -> int:
        if self.settings.max_tokens is not None:
            return self.settings.max_tokens
        ctx = self.known_context()
        return min(DEFAULT_MAX_TOKENS, ctx // 4) if ctx else DEFAULT_MAX_TOKENS

    def policy(self) -> str:
        return policy(self.counter.source, self.known_context(), self.max_tokens)

    # ------------------------------------------------------------------------------------------- chatting
    def send(self, text: str) -> Iterator[str]:
        """Add a user message and stream the reply to it."""
        if self.history.turns and self.history.turns[-1].reply is None:
            self.history.turns.pop()  # an unanswered message is replaced by the new one
        self.history.turns.append(Turn(text))
        return self._reply()

    def retry(self) -> Iterator[str]:
        """A new reply to the last message (or the first one, when the last attempt failed)."""
        if not self.history.turns:
            raise ChatError("nothing to retry")
        last = self.history.turns[-1]
        last.reply, last.reply_at = None, None
        return self._reply()

    def _reply(self) -> Iterator[str]:
        turn = self.history.turns[-1]
        try:
            fitted = self.history.fit(self.counter, self.context, self.max_tokens)
            self.last = fitted
            parts: list[str] = []
            for piece in self.client.stream(self.model, fitted.messages, self.max_tokens, self.settings.temperature,
                                            self.settings.top_p):
                parts.append(piece)
                yield piece
        except ChatError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure is one line; the history is as before the request
            raise self.client.explain(e) from None
        turn.reply, turn.reply_at = "".join(parts), now()

    def undo(self) -> Turn:
        """Remove the last turn (message and reply)."""
        if not self.history.turns:
            raise ChatError("nothing to undo")
        return self.history.turns.pop()

    def new(self, system: str | None = None) -> None:
        """Start a new conversation (the system prompt is kept unless ``system`` is given)."""
        if self.history.turns:
            self.closed.append(self.history)
        self.history = History(self.history.system if system is None else system)

    def set_system(self, text: str | None) -> None:
        self.history.system = text or None

    # ---------------------------------------------------------------------------------------- transcripts
    def transcript_lines(self) -> list[str]:
        convs = [*self.closed, self.history]
        return [json.dumps(h.transcript(f"chat-{self.id}-{i}"), ensure_ascii=False)
                for i, h in enumerate(convs, 1) if h.turns]

    def save(self, path: str | Path) -> tuple[Path, int]:
        """Every conversation of this session, one JSONL line each (``data.format: jsonl``), written atomically."""
        lines = self.transcript_lines()
        if not lines:
            raise ChatError("nothing to save yet")
        path = Path(path).expanduser()
        if path.is_dir():
            raise ChatError(f"{path}: is a folder; /save needs a file name, e.g. /save chat.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.resolve(), len(lines)
