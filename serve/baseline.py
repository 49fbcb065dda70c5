"""Baseline server: the OpenAI routes served by plain Hugging Face ``generate``, one request at a time.

This is what one writes without vLLM — no paged KV cache, no batching: requests queue on a lock. Same artifact,
same chat template, same routes as vLLM (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` with
SSE streaming, ``/health``, ``/metrics``), so load tests and clients can compare the two directly.
Standard library HTTP server; runs in the main environment:

    python -m serve.baseline --artifact DIR --port 8001 [--served-model-name NAME]
(normally started by ``serve/run.py ... serve.engine=baseline``).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class Engine:
    """Model + tokenizer + one lock: generation is strictly one request at a time."""

    def __init__(self, artifact: Path, name: str, dtype: str, max_model_len: int, device: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from personagpt.models import eos_token_ids

        self.torch = torch
        self.name = name
        self.max_model_len = max_model_len
        self.tok = AutoTokenizer.from_pretrained(str(artifact))
        template = artifact / "chat_template.jinja"
        if not self.tok.chat_template and template.is_file():
            self.tok.chat_template = template.read_text()
        dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.model = AutoModelForCausalLM.from_pretrained(str(artifact), dtype=dt).to(device).eval()
        self.device = device
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else eos_token_ids(self.tok)
        self.eos = [eos] if isinstance(eos, int) else list(eos)
        self.pad = gen.pad_token_id if gen.pad_token_id is not None else (self.tok.pad_token_id or self.eos[0])
        self.lock = threading.Lock()
        self.stats = {"requests_total": 0, "request_errors_total": 0, "prompt_tokens_total": 0,
                      "generation_tokens_total": 0, "num_requests_running": 0, "num_requests_waiting": 0}
        self.stats_lock = threading.Lock()
        self.created = int(time.time())

    def count(self, **inc: int) -> None:
        with self.stats_lock:
            for k, v in inc.items():
                self.stats[k] += v

    # ------------------------------------------------------------------------------------------------ prompts
    def encode_prompt(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            if any(t < 0 or t >= len(self.tok) for t in prompt):
                raise RequestError(400, "prompt token id out of range", "prompt")
            return list(prompt)
        if not isinstance(prompt, str) or not prompt:
            raise RequestError(400, "prompt must be a non-empty string or a list of token ids", "prompt")
        return self.tok(prompt, add_special_tokens=True)["input_ids"]

    def encode_messages(self, messages: Any) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        clean = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise RequestError(400, f"messages[{i}] must be an object with a role", f"messages.{i}")
            content = m.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                try:
                    content = "".join(p["text"] for p in content if p.get("type") == "text")
                except (TypeError, KeyError, AttributeError):
                    raise RequestError(400, f"messages[{i}].content: only text parts are supported",
                                       f"messages.{i}.content") from None
            if not isinstance(content, str):
                raise RequestError(400, f"messages[{i}].content must be a string", f"messages.{i}.content")
            clean.append({"role": m["role"], "content": content})
        text = self.tok.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    # -------------------------------------------------------------------------------------------- parameters
    def params(self, body: dict, prompt_len: int) -> dict:
        def num(key, lo=None, hi=None, default=None, kind=float):
            v = body.get(key, default)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
                raise RequestError(400, f"{key} must be a{'n integer' if kind is int else ' number'}", key)
            if lo is not None and v < lo:
                raise RequestError(400, f"{key} must be >= {lo}, got {v}", key)
            if hi is not None and v > hi:
                raise RequestError(400, f"{key} must be <= {hi}, got {v}", key)
            return v

        if prompt_len >= self.max_model_len:
            raise RequestError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                                    f"your prompt contains {prompt_len} input tokens.", "input_tokens")
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = num(key, lo=1, kind=int)
        if max_tokens is None:
            max_tokens = self.max_model_len - prompt_len
        elif max_tokens > self.max_model_len:
            raise RequestError(400, f"{key}={max_tokens} cannot be greater than max_model_len={self.max_model_len}",
                               key)
        elif prompt_len + max_tokens > self.max_model_len:
            raise RequestError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                                    f"you requested {max_tokens} output tokens and your prompt contains "
                                    f"{prompt_len} input tokens.", key)
        n = num("n", lo=1, default=1, kind=int)
        if n != 1:
            raise RequestError(400, "the baseline server generates one choice per request (n=1)", "n")
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
            raise RequestError(400, "stop must be a string or a list of non-empty strings", "stop")
        stream_opts = body.get("stream_options") or {}
        if not isinstance(stream_opts, dict):
            raise RequestError(400, "stream_options must be an object", "stream_options")
        if not isinstance(body.get("stream", False), bool):
            raise RequestError(400, "stream must be a boolean", "stream")
        return {"max_tokens": max_tokens, "temperature": num("temperature", lo=0, default=1.0),
                "top_p": num("top_p", lo=1e-9, hi=1, default=1.0), "seed": num("seed", kind=int),
                "stop": stop or [], "ignore_eos": bool(body.get("ignore_eos", False)),
                "stream": body.get("stream", False), "include_usage": bool(stream_opts.get("include_usage"))}

    # -------------------------------------------------------------------------------------------- generation
    def _generate_kwargs(self, ids: list[int], p: dict, cancel: threading.Event | None = None) -> dict:
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):  # the client went away: stop generating for it
            def __call__(self, input_ids, scores, **kwargs):
                return self.torch.full((input_ids.shape[0],), cancel.is_set(), dtype=self.torch.bool,
                                       device=input_ids.device)

        Cancelled.torch = self.torch

        sample = p["temperature"] > 0
        gc = GenerationConfig(max_new_tokens=p["max_tokens"], do_sample=sample, eos_token_id=self.eos,
                              pad_token_id=self.pad, bos_token_id=self.model.generation_config.bos_token_id,
                              min_new_tokens=p["max_tokens"] if p["ignore_eos"] else 0,
                              **({"temperature": p["temperature"], "top_p": p["top_p"], "top_k": 0} if sample else {}))
        x = self.torch.tensor([ids], device=self.device)
        kw = {"input_ids": x, "attention_mask": self.torch.ones_like(x), "generation_config": gc}
        if p["stop"]:
            kw.update(stop_strings=p["stop"], tokenizer=self.tok)
        if cancel is not None:
            kw["stopping_criteria"] = StoppingCriteriaList([Cancelled()])
        return kw

    def _finish(self, new_ids: list[int], p: dict) -> tuple[str, str]:
        """(text, finish_reason) of generated ids: EOS dropped, cut before the first stop string."""
        hit_eos = bool(new_ids) and new_ids[-1] in self.eos and not p["ignore_eos"]
        text = self.tok.decode(new_ids[:-1] if hit_eos else new_ids, skip_special_tokens=True)
        for s in p["stop"]:
            if s in text:
                return text[:text.index(s)], "stop"
        return text, "stop" if hit_eos else "length"

    def generate(self, ids: list[int], p: dict) -> tuple[str, str, int]:
        """Whole completion: (text, finish_reason, completion_tokens). Holds the engine lock."""
        self.count(num_requests_waiting=1)
        with self.lock:
            self.count(num_requests_waiting=-1, num_requests_running=1)
            try:
                if p["seed"] is not None:
                    self.torch.manual_seed(p["seed"])
                with self.torch.inference_mode():
                    out = self.model.generate(**self._generate_kwargs(ids, p))
            finally:
                self.count(num_requests_running=-1)
        new = out[0, len(ids):].tolist()
        text, reason = self._finish(new, p)
        self.count(prompt_tokens_total=len(ids), generation_tokens_total=len(new))
        return text, reason, len(new)

    def stream(self, ids: list[int], p: dict) -> Iterator[tuple[str, str | None, int]]:
        """Yields (text delta, None, 0) while generating, then ("", finish_reason, completion_tokens)."""
        from transformers import TextIteratorStreamer

        self.count(num_requests_waiting=1)
        with self.lock:
            self.count(num_requests_waiting=-1, num_requests_running=1)
            cancel, worker = threading.Event(), None
            result: dict[str, Any] = {}
            try:
                streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True, timeout=600)

                def run():
                    try:
                        if p["seed"] is not None:
                            self.torch.manual_seed(p["seed"])
                        with self.torch.inference_mode():
                            result["out"] = self.model.generate(**self._generate_kwargs(ids, p, cancel),
                                                                 streamer=streamer)
                    except BaseException as e:  # noqa: BLE001 - re-raised in the request thread
                        result["error"] = e
                        streamer.end()

                worker = threading.Thread(target=run, daemon=True)
                worker.start()
                full, sent_len, stopped = "", 0, False
                for piece in streamer:
                    if stopped or not piece:
                        continue
                    full += piece
                    cut = min((full.index(s) for s in p["stop"] if s in full), default=None)
                    if cut is not None:
                        limit, stopped = cut, True
                    else:  # hold back a tail that could be the start of a stop string
                        hold = max((k for s in p["stop"] for k in range(1, len(s)) if full.endswith(s[:k])),
                                   default=0)
                        limit = len(full) - hold
                    if limit > sent_len:
                        yield full[sent_len:limit], None, 0
                        sent_len = limit
                sent = full[:sent_len]
            finally:  # also when the client disconnected mid-stream (GeneratorExit at a yield)
                cancel.set()
                if worker is not None:
                    worker.join()
                self.count(num_requests_running=-1)
        if "error" in result:
            raise result["error"]
        new = result["out"][0, len(ids):].tolist()
        text, reason = self._finish(new, p)
        if len(text) > len(sent) and text.startswith(sent):
            yield text[len(sent):], None, 0
        self.count(prompt_tokens_total=len(ids), generation_tokens_total=len(new))
        yield "", reason, len(new)


def make_handler(engine: Engine, api_key: str | None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "personagpt-baseline"

        def log_message(self, fmt, *args):  # one access-log line per request, like uvicorn
            sys.stderr.write(f"INFO:     {self.client_address[0]} - {fmt % args}\n")

        # ------------------------------------------------------------------------------------------- replies
        def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, e: RequestError) -> None:
            engine.count(request_errors_total=1)
            self._send(e.status, {"error": {"message": e.message, "type": e.kind, "param": e.param,
                                            "code": e.status}})

        def _authorized(self) -> bool:
            if not api_key or not self.path.startswith("/v1"):
                return True
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), api_key.encode()):
                return True
            engine.count(request_errors_total=1)
            self._send(401, {"error": "Unauthorized"})
            return False

        # ------------------------------------------------------------------------------------------- routes
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if not self._authorized():
                return
            if path == "/health":
                self._send(200, b"", "text/plain")
            elif path == "/v1/models":
                self._send(200, {"object": "list", "data": [{
                    "id": engine.name, "object": "model", "created": engine.created, "owned_by": "personagpt-baseline",
                    "max_model_len": engine.max_model_len}]})
            elif path == "/metrics":
                with engine.stats_lock:
                    lines = []
                    for k, v in engine.stats.items():
                        kind = "counter" if k.endswith("_total") else "gauge"
                        lines += [f"# TYPE baseline:{k} {kind}", f'baseline:{k}{{model_name="{engine.name}"}} {v}']
                self._send(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")
            else:
                self._error(RequestError(404, f"no route GET {path}", kind="NotFoundError"))

        def do_POST(self):
            path = self.path.split("?", 1)[0]
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            raw = self.rfile.read(length) if length > 0 else b""
            if not self._authorized():
                return
            if path not in ("/v1/completions", "/v1/chat/completions"):
                return self._error(RequestError(404, f"no route POST {path}", kind="NotFoundError"))
            engine.count(requests_total=1)
            try:
                try:
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as e:
                    raise RequestError(400, f"JSON decode error: {e}", "body") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "request body must be a JSON object", "body")
                model = body.get("model")
                if model is not None and model != engine.name:
                    raise RequestError(404, f"The model `{model}` does not exist.", "model", "NotFoundError")
                chat = path == "/v1/chat/completions"
                if chat:
                    if "messages" not in body:
                        raise RequestError(400, "messages: Field required", "messages")
                    ids = engine.encode_messages(body["messages"])
                else:
                    if "prompt" not in body:
                        raise RequestError(400, "prompt: Field required", "prompt")
                    ids = engine.encode_prompt(body["prompt"])
                p = engine.params(body, len(ids))
            except RequestError as e:
                return self._error(e)
            rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
            try:
                if p["stream"]:
                    self._stream(rid, chat, ids, p)
                else:
                    self._complete(rid, chat, ids, p)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as e:  # noqa: BLE001 - a failed generation must not kill the server
                engine.count(request_errors_total=1)
                if not getattr(self, "_streaming", False):
                    self._send(500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "InternalServerError",
                                               "param": None, "code": 500}})
                else:
                    self.close_connection = True

        def _usage(self, prompt: int, completion: int) -> dict:
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

        def _complete(self, rid: str, chat: bool, ids: list[int], p: dict) -> None:
            text, reason, n = engine.generate(ids, p)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": reason} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": reason})
            self._send(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": int(time.time()), "model": engine.name, "choices": [choice],
                             "usage": self._usage(len(ids), n)})

        def _stream(self, rid: str, chat: bool, ids: list[int], p: dict) -> None:
            created = int(time.time())
            obj = "chat.completion.chunk" if chat else "text_completion"

            def chunk(text: str | None, reason: str | None, first: bool = False) -> dict:
                if chat:
                    delta = ({"role": "assistant", "content": ""} if first
                             else {} if text is None else {"content": text})
                    c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
                else:
                    c = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
                return {"id": rid, "object": obj, "created": created, "model": engine.name, "choices": [c]}

            def send(event: dict | str) -> None:
                data = event if isinstance(event, str) else json.dumps(event)
                payload = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()

            gen = engine.stream(ids, p)
            first_piece = next(gen)  # waits for the lock and the first token: errors still become a 500
            self._streaming = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if chat:
                send(chunk(None, None, first=True))
            n = 0
            for text, reason, count in _chain(first_piece, gen):
                if reason is None:
                    send(chunk(text, None))
                else:
                    n = count
                    send(chunk(None if chat else "", reason))
            if p["include_usage"]:
                send({"id": rid, "object": obj, "created": created, "model": engine.name, "choices": [],
                      "usage": self._usage(len(ids), n)})
            send("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def _chain(first, rest):
    yield first
    yield from rest


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Baseline OpenAI-compatible server (Hugging Face generate)")
    ap.add_argument("--artifact", required=True, type=Path)
    ap.add_argument("--served-model-name")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--max-model-len", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--api-key-env", default="PERSONAGPT_API_KEY")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    config = json.loads((args.artifact / "config.json").read_text())
    max_len = args.max_model_len or int(config.get("max_position_embeddings") or 2048)
    engine = Engine(args.artifact.resolve(), args.served_model_name or args.artifact.resolve().name, args.dtype,
                    max_len, args.device)
    api_key = os.environ.get(args.api_key_env) or None
    server = Server((args.host, args.port), make_handler(engine, api_key))

    def shutdown(signum, frame):
        print(f"INFO:     signal {signum}: shutting down", file=sys.stderr, flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"INFO:     baseline server for {args.artifact} ({engine.name}, {args.dtype}, max_model_len {max_len}) "
          f"loaded in {time.monotonic() - t0:.1f} s; listening on http://{args.host}:{args.port}"
          f"{' (API key required)' if api_key else ''}", file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    print("INFO:     baseline server stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
