"""Multi-turn memory and its truncation policy.

The policy (also what ``/history`` prints): the system prompt is always kept; the oldest turns (a user message
and its reply, together) are dropped first, until the prompt — rendered with the model's chat template, generation
prompt included — plus ``max_tokens`` fits the served context. Tokens are counted with the artifact's own tokenizer
and chat template, or by the server's ``/tokenize`` (vLLM) when there is no artifact: never words. Dropped turns
stay in the transcript (``/save`` writes everything); they are only no longer sent. When even the system prompt
and the newest message alone do not fit, nothing is sent and the error says by how much.

The system prompt the model was trained with comes from the artifact's lineage: the dataset manifest's
``data.system_prompt`` (:func:`trained_system_prompt`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from personagpt.chat.client import ChatError

Messages = list[dict[str, str]]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Turn:
    user: str
    reply: str | None = None  # None: not answered yet (the request failed or was cut off; /retry sends it again)
    user_at: str = field(default_factory=now)
    reply_at: str | None = None


def trained_system_prompt(artifact: str | Path) -> str | None:
    """``data.system_prompt`` of the dataset artifact the model artifact descends from (None when it had none)."""
    from personagpt.artifacts import read_manifest
    from personagpt.model_artifact import open_model_artifact

    dataset = open_model_artifact(artifact).dataset
    if dataset is None or not dataset.is_dir():
        return None
    return ((read_manifest(dataset, kind="dataset").get("config") or {}).get("data") or {}).get("system_prompt")


class TokenizerCounter:
    """Prompt tokens with the artifact's tokenizer and chat template — exactly what the server will see."""

    def __init__(self, artifact: str | Path):
        from personagpt.tokenizer import load_tokenizer

        self.source = f"the artifact's tokenizer and chat template ({artifact})"
        self.tok = load_tokenizer(artifact)

    def __call__(self, messages: Messages) -> int:
        from personagpt.template import render

        return len(self.tok(render(self.tok, messages, add_generation_prompt=True), add_special_tokens=False)
                   ["input_ids"])


class ServerCounter:
    """Prompt tokens from the server's own ``/tokenize`` (vLLM), chat template and generation prompt included."""

    def __init__(self, client, model: Callable[[], str]):
        self.client, self.model = client, model
        self.source = f"the server's /tokenize ({client.url})"

    def __call__(self, messages: Messages) -> int:
        return self.client.tokenize(self.model(), messages)


@dataclass
class Fitted:
    messages: Messages   # what is sent
    prompt_tokens: int
    dropped: int         # oldest turns left out


class History:
    """One conversation: the system prompt and its turns."""

    def __init__(self, system: str | None):
        self.system = system
        self.turns: list[Turn] = []
        self.started = now()

    def messages(self, turns: list[Turn] | None = None) -> Messages:
        """System prompt (if any), then every turn; an unanswered last turn ends with its user message."""
        out: Messages = [{"role": "system", "content": self.system}] if self.system else []
        for t in self.turns if turns is None else turns:
            out.append({"role": "user", "content": t.user})
            if t.reply is not None:
                out.append({"role": "assistant", "content": t.reply})
        return out

    def fit(self, count: Callable[[Messages], int], context: int, max_tokens: int) -> Fitted:
        """The newest turns that fit with the system prompt into ``context - max_tokens`` tokens."""
        budget = context - max_tokens
        if budget <= 0:
            raise ChatError(f"context overflow: max_tokens={max_tokens} leaves no room for a prompt in the served "
                            f"context of {context} tokens (/set max_tokens=...)")
        if not self.turns:
            raise ChatError("nothing to send")
        newest_only = count(self.messages(self.turns[-1:]))
        if newest_only > budget:
            raise ChatError(f"context overflow: the system prompt and this message alone are {newest_only} tokens; "
                            f"with max_tokens={max_tokens} the served context ({context}) holds {budget} "
                            f"(shorten the message, /system, or /set max_tokens=...)")
        # Most turns fit most of the time: try everything first, then drop from the oldest.
        for start in range(len(self.turns)):
            kept = self.turns[start:]
            n = newest_only if len(kept) == 1 else count(self.messages(kept))
            if n <= budget:
                return Fitted(self.messages(kept), n, start)
        raise AssertionError("unreachable: the newest turn alone fits")

    def transcript(self, conv_id: str) -> dict:
        """The whole conversation (nothing dropped) as one line of ``data.format: jsonl`` input."""
        msgs: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        for t in self.turns:
            msgs.append({"role": "user", "content": t.user, "timestamp": t.user_at})
            if t.reply is not None:
                msgs.append({"role": "assistant", "content": t.reply, "timestamp": t.reply_at})
        return {"id": conv_id, "messages": msgs}


def policy(counter_source: str, context: int | None, max_tokens: int) -> str:
    ctx = f"{context} tokens" if context else "unknown until the server answers"
    return (f"truncation: the system prompt is always kept; the oldest turns (a message and its reply together) "
            f"are dropped first so that the prompt plus max_tokens ({max_tokens}) fits the served context ({ctx}). "
            f"Tokens counted with {counter_source}. Dropped turns stay in /save's transcript.")
