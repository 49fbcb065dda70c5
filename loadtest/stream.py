"""One streamed OpenAI chat completion, measured: request body, SSE parsing, and the per-request metrics.

Independent of the HTTP client: the Locust user (geventhttpclient) and the pre-flight check (requests) feed it
the raw lines of the response body as they arrive, with the time each arrived.

Definitions (the same as vLLM's benchmark client, ``vllm bench serve``):
- TTFT: from sending the request to the first chunk that carries generated text.
- E2E: from sending the request to the end of the stream.
- output tokens: ``usage.completion_tokens`` of the stream's final usage chunk (requested with
  ``stream_options.include_usage``); only when a server sends no usage, the served tokenizer counts the text.
- ITL (time per output token, vLLM's TPOT): ``(E2E - TTFT) / (output tokens - 1)``. Chunks are not tokens (a
  server may send several tokens, or a partial word, per chunk), so the gap between chunks is not used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def chat_body(model: str, messages: list[dict], max_tokens: int, temperature: float, ignore_eos: bool) -> dict:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
            "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    return body


@dataclass
class StreamParser:
    """Feed it the lines of an ``text/event-stream`` body; it keeps times relative to ``start``.

    TTFT is the first chunk with text. A model may generate tokens that have no text (special tokens the server
    skips, e.g. a weak model repeating its end-of-turn token under ``ignore_eos``): vLLM still streams one chunk
    per such token with empty content. Those count as generated output when the stream has no text at all and the
    server reports ``completion_tokens`` > 0; the first of them is then the first token.
    """

    start: float
    first_token: float | None = None
    last_token: float | None = None
    first_silent: float | None = None  # first token chunk without text (delta.content == "", no role)
    end: float | None = None
    chunks: int = 0
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    error: str | None = None
    done: bool = False

    def feed(self, line: bytes | str, now: float) -> bool:
        """One line of the body. True once the stream is finished (``[DONE]`` or an error event)."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        line = line.strip()
        if not line or line.startswith(":"):  # event separator, SSE comment / keep-alive
            return False
        if not line.startswith("data:"):
            return False  # "event:", "id:", "retry:" fields carry nothing we measure
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done, self.end = True, now
            return True
        try:
            data = json.loads(payload)
        except ValueError:
            self.error, self.end = f"invalid JSON in stream: {payload[:200]!r}", now
            return True
        if not isinstance(data, dict):
            self.error, self.end = f"unexpected stream event: {payload[:200]!r}", now
            return True
        if "error" in data:  # vLLM reports errors raised mid-stream as an event
            err = data["error"]
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)[:500]
            self.end = now
            return True
        if data.get("usage"):
            self.usage = data["usage"]
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content is None:
                content = choice.get("text")  # /v1/completions chunks
            if content:
                if self.first_token is None:
                    self.first_token = now
                self.last_token = now
                self.chunks += 1
                self.text.append(content)
            elif content == "" and "role" not in delta and not choice.get("finish_reason") \
                    and self.first_silent is None:
                self.first_silent = now
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return False

    def close(self, now: float) -> None:
        """The connection ended. A stream without ``[DONE]`` or without any text is an error."""
        if self.end is None:
            self.end = now
        if self.error is None and not self.done:
            self.error = "stream ended without [DONE]"
        if self.error is None and self.first_token is None:
            generated = (self.usage or {}).get("completion_tokens")
            if isinstance(generated, int) and generated > 0:  # tokens without text: output all the same
                self.first_token = self.first_silent if self.first_silent is not None else self.end
            else:
                self.error = "stream finished without generating any text"

    def output_tokens(self, count_tokens: Callable[[str], int] | None = None) -> int | None:
        if self.usage and isinstance(self.usage.get("completion_tokens"), int):
            return self.usage["completion_tokens"]
        if count_tokens is not None:
            return count_tokens("".join(self.text))
        return None

    def metrics(self, count_tokens: Callable[[str], int] | None = None) -> dict[str, Any]:
        """Seconds: ttft, e2e, itl; tokens: out (output), in (prompt, from usage); error (None when ok)."""
        out = self.output_tokens(count_tokens)
        err = self.error
        if err is None and out is None:
            err = "server sent no usage and no tokenizer is configured to count output tokens"
        ttft = None if self.first_token is None else self.first_token - self.start
        e2e = None if self.end is None else self.end - self.start
        itl = None
        if err is None and out is not None and out > 1 and ttft is not None and e2e is not None:
            itl = (e2e - ttft) / (out - 1)
        prompt = (self.usage or {}).get("prompt_tokens")
        return {"ttft": ttft, "e2e": e2e, "itl": itl, "out": out or 0, "in": prompt, "chunks": self.chunks,
                "finish_reason": self.finish_reason, "error": err}
