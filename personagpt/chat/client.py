"""The chat client: streaming chat completions from an OpenAI-compatible server (vLLM, the baseline server, the
Kubernetes Service), through the ``openai`` package.

Rules: the API key comes from the same environment variable the server reads (``serve.api_key_env``, default
PERSONAGPT_API_KEY); no automatic retries (a person is waiting: the one-line error comes at once and ``/retry``
is theirs); every failure — unreachable server, a stream dropped mid-reply, a refused key, a prompt that does
not fit — becomes one :class:`ChatError` whose message is a single line, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0  # a CPU server may take minutes for a long reply; no token for this long = dropped


class ChatError(Exception):
    """One line for the person chatting; the session and its history are unchanged."""


@dataclass(frozen=True)
class ServerInfo:
    model: str
    max_model_len: int | None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ChatClient:
    def __init__(self, url: str, api_key: str | None, api_key_env: str = "PERSONAGPT_API_KEY"):
        self.url = url.rstrip("/").removesuffix("/v1")
        self.api_key_env = api_key_env
        self.api_key = api_key
        self.http = httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self.openai = openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key or "none", max_retries=0,
                                    http_client=self.http)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def explain(self, e: BaseException) -> ChatError:
        """Any failure of a request as a one-line ChatError."""
        if isinstance(e, ChatError):
            return e
        if isinstance(e, openai.AuthenticationError):
            how = (f"${self.api_key_env} is not set" if not self.api_key else f"${self.api_key_env} does not match")
            return ChatError(f"the server refused the API key (401): {how} the server's key")
        if isinstance(e, openai.BadRequestError):
            msg = _error_message(e)
            if "context length" in msg or "max_model_len" in msg or "maximum context" in msg:
                return ChatError(f"context overflow: {msg}")
            return ChatError(f"the server rejected the request (400): {msg}")
        if isinstance(e, openai.APIStatusError):
            return ChatError(f"the server answered {e.status_code}: {_error_message(e)}")
        if isinstance(e, openai.APITimeoutError):
            return ChatError(f"no answer from {self.url} within {READ_TIMEOUT_S:.0f} s")
        if isinstance(e, openai.APIConnectionError):
            return ChatError(f"server unreachable at {self.url} ({_one_line(e.__cause__ or e, 120)})")
        if isinstance(e, (httpx.HTTPError, openai.APIError)):
            return ChatError(f"the request to {self.url} failed ({type(e).__name__}: {_one_line(e, 120)})")
        return ChatError(f"{type(e).__name__}: {_one_line(e)}")

    def info(self, model: str | None = None) -> ServerInfo:
        """The served model (``model``, or the server's first) and its context length from /v1/models."""
        try:
            r = self.http.get(f"{self.url}/v1/models", headers=self.headers, timeout=CONNECT_TIMEOUT_S * 2)
        except httpx.HTTPError as e:
            raise ChatError(f"server unreachable at {self.url} ({_one_line(e, 120)})") from None
        if r.status_code == 401:
            raise self.explain(openai.AuthenticationError("401", response=r, body=None))
        if r.status_code != 200:
            raise ChatError(f"{self.url}/v1/models answered {r.status_code}: {_one_line(r.text, 200)}")
        cards = r.json().get("data") or []
        if not cards:
            raise ChatError(f"{self.url}/v1/models lists no model")
        card = next((c for c in cards if c.get("id") == model), None) if model else cards[0]
        if card is None:
            raise ChatError(f"the server does not serve model {model!r} (it serves: "
                            f"{', '.join(c.get('id', '?') for c in cards)})")
        return ServerInfo(model=card["id"], max_model_len=card.get("max_model_len"))

    def tokenize(self, model: str, messages: list[dict]) -> int:
        """Prompt tokens of ``messages`` rendered with the served chat template (vLLM's /tokenize)."""
        try:
            r = self.http.post(f"{self.url}/tokenize", headers=self.headers, timeout=CONNECT_TIMEOUT_S * 6,
                               json={"model": model, "messages": messages, "add_generation_prompt": True})
        except httpx.HTTPError as e:
            raise ChatError(f"server unreachable at {self.url} ({_one_line(e, 120)})") from None
        if r.status_code == 404:
            raise ChatError(f"{self.url} has no /tokenize route (the baseline server): pass --artifact DIR so that "
                            "its tokenizer counts the prompt")
        if r.status_code != 200:
            raise ChatError(f"{self.url}/tokenize answered {r.status_code}: {_one_line(r.text, 200)}")
        return int(r.json()["count"])

    def stream(self, model: str, messages: list[dict], max_tokens: int, temperature: float | None = None,
               top_p: float | None = None) -> Iterator[str]:
        """The reply's text pieces as they arrive. Raises ChatError (the reply so far is then incomplete)."""
        extra = {k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None}
        try:
            stream = self.openai.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                         stream=True, **extra)
        except (openai.OpenAIError, httpx.HTTPError) as e:
            raise self.explain(e) from None
        try:  # the server accepted the request: from here on a failure means the stream was cut off
            with stream:
                for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            yield choice.delta.content
        except (openai.APIConnectionError, httpx.HTTPError) as e:
            cause = e.__cause__ if isinstance(e, openai.APIConnectionError) and e.__cause__ else e
            raise ChatError(f"the connection to {self.url} dropped mid-reply ({_one_line(cause, 120)}); the "
                            "partial reply is not kept: /retry once the server is back") from None
        except openai.OpenAIError as e:
            raise self.explain(e) from None

    def close(self) -> None:
        self.http.close()


def _error_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return _one_line(inner["message"])
        if isinstance(inner, str):
            return _one_line(inner)
        if body.get("message"):
            return _one_line(body["message"])
    return _one_line(e.message)
