"""Before any load: is there an OpenAI-compatible server at the host, serving the model, answering a real
streamed chat completion? Every step is bounded by a timeout, so a bad host or a server that never answers is a
clear error within seconds, not a hung load test.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests

from loadtest.stream import StreamParser, chat_body
from personagpt.errors import ConfigError, PersonaGPTError


class ServerError(PersonaGPTError):
    """The host does not answer, or does not answer like an OpenAI-compatible server."""


def normalize_host(host: str | None) -> str:
    """``http://HOST:PORT`` without a trailing slash; error naming --host for anything else."""
    if not host:
        raise ConfigError("--host URL is required (e.g. --host http://127.0.0.1:8000)")
    parts = urlsplit(host.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--host {host!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    try:
        parts.port  # noqa: B018 - raises on a non-numeric or out-of-range port
    except ValueError as e:
        raise ConfigError(f"--host {host!r}: {e}") from None
    if parts.path.rstrip("/") not in ("", "/v1"):
        raise ConfigError(f"--host {host!r}: give the server's base URL, without a path")
    return f"{parts.scheme}://{parts.netloc}"


def _reason(e: BaseException) -> str:
    """The innermost OS-level reason of a connection error ("Connection refused", "Name or service not known")."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError) and x.strerror:
            return x.strerror
        todo += [a for a in getattr(x, "args", ()) if isinstance(a, BaseException)]
        todo += [y for y in (getattr(x, "reason", None), x.__cause__, x.__context__) if isinstance(y, BaseException)]
    text = str(e)
    return text.rsplit(": ", 1)[-1].rstrip(")'\"") if ": " in text else text


def _get(url: str, headers: dict, connect_s: float, read_s: float, what: str) -> requests.Response:
    try:
        return requests.get(url, headers=headers, timeout=(connect_s, read_s))
    except requests.exceptions.ConnectTimeout:
        raise ServerError(f"{what}: no connection within {connect_s:g} s (loadtest.connect_timeout_s)") from None
    except requests.exceptions.ConnectionError as e:
        if isinstance(e, requests.exceptions.ReadTimeout) or "timed out" in str(e).lower():
            raise ServerError(f"{what}: connected, but no answer within {read_s:g} s "
                              f"(loadtest.preflight_timeout_s)") from None
        raise ServerError(f"{what}: cannot connect ({_reason(e)}); is the server running there?") from None
    except requests.exceptions.Timeout:
        raise ServerError(f"{what}: connected, but no answer within {read_s:g} s (loadtest.preflight_timeout_s)") \
            from None


def check_server(host: str, api_key: str | None, api_key_env: str, model: str | None,
                 connect_s: float, read_s: float) -> dict[str, Any]:
    """GET /v1/models: the served model's name (the configured one must be served) and context length."""
    headers = auth_headers(api_key)
    what = f"--host {host}: GET /v1/models"
    r = _get(f"{host}/v1/models", headers, connect_s, read_s, what)
    if r.status_code in (401, 403):
        raise ServerError(f"{what} answered {r.status_code}: the API key was rejected "
                          f"({'$' + api_key_env + ' is not set' if not api_key else 'check $' + api_key_env})")
    if r.status_code != 200:
        raise ServerError(f"{what} answered HTTP {r.status_code}: {r.text[:200]!r}; not an OpenAI-compatible "
                          f"server?")
    try:
        models = [m for m in r.json()["data"] if isinstance(m, dict) and "id" in m]
    except (ValueError, KeyError, TypeError):
        raise ServerError(f"{what}: not an OpenAI model list: {r.text[:200]!r}") from None
    if not models:
        raise ServerError(f"{what}: the server lists no model")
    ids = [m["id"] for m in models]
    if model is None:
        model = ids[0]
    elif model not in ids:
        raise ConfigError(f"loadtest.model: {model!r} is not served by {host} (it serves {ids})")
    max_len = next((m.get("max_model_len") for m in models if m["id"] == model), None)
    return {"model": model, "served_models": ids, "max_model_len": max_len if isinstance(max_len, int) else None}


def check_lengths(server: dict[str, Any], max_input_tokens: int, max_tokens: int) -> None:
    max_len = server.get("max_model_len")
    if max_len is not None and max_input_tokens + max_tokens > max_len:
        raise ConfigError(f"loadtest.max_input_tokens ({max_input_tokens}) + loadtest.max_tokens ({max_tokens}) "
                          f"exceed the server's context length, max_model_len={max_len}")


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def probe_request(host: str, headers: dict, model: str, messages: list[dict], connect_s: float,
                  read_s: float) -> dict[str, Any]:
    """One streamed chat completion (2 tokens) with a real prompt, bounded by ``read_s`` in all. ``ignore_eos``:
    it checks that the server generates, not what the model says (a weak model may well answer EOS at once)."""
    what = f"--host {host}: POST /v1/chat/completions (check request)"
    body = chat_body(model, messages, 2, 0.0, True)
    t0 = time.perf_counter()
    try:
        with requests.post(f"{host}/v1/chat/completions", json=body, headers=headers, stream=True,
                           timeout=(connect_s, read_s)) as r:
            if r.status_code != 200:
                raise ServerError(f"{what} answered HTTP {r.status_code}: {r.text[:300]!r}")
            parser = StreamParser(start=t0)
            for line in r.iter_lines(chunk_size=None):
                if parser.feed(line, time.perf_counter()):
                    break
                if time.perf_counter() - t0 > read_s:
                    raise ServerError(f"{what}: not finished within {read_s:g} s (loadtest.preflight_timeout_s)")
            parser.close(time.perf_counter())
    except requests.exceptions.Timeout:
        raise ServerError(f"{what}: no answer within {read_s:g} s (loadtest.preflight_timeout_s)") from None
    except requests.exceptions.ConnectionError as e:
        raise ServerError(f"{what}: connection failed ({e})") from None
    m = parser.metrics(count_tokens=lambda _text: 0)  # tokens only matter when the server reports them
    if m["error"] is not None:
        raise ServerError(f"{what}: {m['error']}")
    return {"ttft_ms": round(m["ttft"] * 1000, 2), "e2e_ms": round(m["e2e"] * 1000, 2),
            "output_tokens": m["out"] if parser.usage else None, "usage_in_stream": parser.usage is not None}
