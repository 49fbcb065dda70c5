"""Replies to held-out contexts: Hugging Face ``generate`` in left-padded batches, or an OpenAI-compatible chat
endpoint (``--url``). Greedy, or sampled with a fixed seed (``torch.manual_seed`` before the first batch; the
endpoint gets ``seed`` per request). Decode speed: generated tokens (EOS included, padding not) per second of
``generate``, at the eval's batch size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from personagpt.errors import PersonaGPTError


@dataclass(frozen=True)
class Decoding:
    do_sample: bool
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    @property
    def label(self) -> str:
        if not self.do_sample:
            return "greedy"
        parts = [f"T={self.temperature:g}"]
        if self.top_p < 1:
            parts.append(f"top_p={self.top_p:g}")
        if self.repetition_penalty != 1:
            parts.append(f"rep={self.repetition_penalty:g}")
        return " ".join(parts)

    @classmethod
    def parse(cls, spec: str) -> Decoding:
        """``greedy`` or ``T=0.7[,top_p=0.9][,rep=1.1]`` (the labels the tables use, commas for spaces)."""
        if spec.strip() == "greedy":
            return GREEDY
        keys = {"T": "temperature", "top_p": "top_p", "rep": "repetition_penalty"}
        kw: dict[str, float] = {}
        for part in spec.replace(" ", ",").split(","):
            k, _, v = part.partition("=")
            try:
                kw[keys[k.strip()]] = float(v)
            except (KeyError, ValueError):
                raise PersonaGPTError(f"--decoding {spec!r}: expected greedy or T=0.7,top_p=0.9,rep=1.1") from None
        if kw.get("temperature", 1.0) <= 0 or not 0 < kw.get("top_p", 1.0) <= 1 or kw.get("repetition_penalty",
                                                                                         1.0) < 1:
            raise PersonaGPTError(f"--decoding {spec!r}: needs T > 0, 0 < top_p <= 1, rep >= 1")
        return cls(True, **kw)

    def hf_kwargs(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None,
                    "repetition_penalty": self.repetition_penalty}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None,
                "repetition_penalty": self.repetition_penalty}




GREEDY = Decoding(do_sample=False)


class HFGenerator:
    def __init__(self, model, tokenizer, batch_size: int, max_new_tokens: int):
        from personagpt.models import eos_token_ids

        self.model, self.tok, self.batch_size, self.max_new_tokens = model, tokenizer, batch_size, max_new_tokens
        self.eos = eos_token_ids(tokenizer)
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, contexts: Sequence[list[dict]], decoding: Decoding, seed: int) -> tuple[list[str], dict]:
        torch.manual_seed(seed)
        prompts = [self.tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in contexts]
        side, self.tok.padding_side = self.tok.padding_side, "left"
        texts, tokens, seconds = [], 0, 0.0
        try:
            for i in range(0, len(prompts), self.batch_size):
                enc = self.tok(prompts[i:i + self.batch_size], return_tensors="pt", padding=True,
                               add_special_tokens=False).to(self.device)
                t0 = time.perf_counter()
                out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, eos_token_id=self.eos,
                                          pad_token_id=self.tok.pad_token_id, **decoding.hf_kwargs())
                seconds += time.perf_counter() - t0
                new = out[:, enc["input_ids"].shape[1]:]
                for row in new.tolist():
                    n = next((j + 1 for j, t in enumerate(row) if t in self.eos), len(row))
                    tokens += n
                    texts.append(self.tok.decode(row[:n], skip_special_tokens=True).strip())
        finally:
            self.tok.padding_side = side
        return texts, {"generated_tokens": tokens, "seconds": round(seconds, 2),
                       "decode_tokens_per_s": tokens / max(seconds, 1e-9), "batch_size": self.batch_size}


class EndpointGenerator:
    """An OpenAI-compatible server's ``/v1/chat/completions``, one request per context."""

    def __init__(self, url: str, model: str | None, api_key: str | None, max_new_tokens: int, timeout_s: float):
        self.url, self.api_key = url.rstrip("/"), api_key
        self.max_new_tokens, self.timeout_s = max_new_tokens, timeout_s
        self.model = model or self.check()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def check(self) -> str:
        """The served model's id; an endpoint that does not answer is an error naming --url."""
        import requests

        try:
            r = requests.get(f"{self.url}/v1/models", headers=self.headers, timeout=min(10.0, self.timeout_s))
            r.raise_for_status()
            return r.json()["data"][0]["id"]
        except (requests.RequestException, ValueError, KeyError, IndexError) as e:
            raise PersonaGPTError(f"--url {self.url}: the endpoint does not answer GET /v1/models ({e})") from None

    def __call__(self, contexts: Sequence[list[dict]], decoding: Decoding, seed: int) -> tuple[list[str], dict]:
        import requests

        texts, tokens, t0 = [], 0, time.perf_counter()
        for i, messages in enumerate(contexts):
            body = {"model": self.model, "messages": messages, "max_tokens": self.max_new_tokens, "seed": seed + i,
                    "temperature": decoding.temperature if decoding.do_sample else 0.0,
                    "top_p": decoding.top_p if decoding.do_sample else 1.0}
            if decoding.repetition_penalty != 1:
                body["repetition_penalty"] = decoding.repetition_penalty
            try:
                r = requests.post(f"{self.url}/v1/chat/completions", headers=self.headers, json=body,
                                  timeout=self.timeout_s)
                r.raise_for_status()
                data = r.json()
            except (requests.RequestException, ValueError) as e:
                raise PersonaGPTError(f"--url {self.url}: chat completion failed ({e})") from None
            texts.append((data["choices"][0]["message"]["content"] or "").strip())
            tokens += int((data.get("usage") or {}).get("completion_tokens") or 0)
        seconds = time.perf_counter() - t0
        return texts, {"generated_tokens": tokens, "seconds": round(seconds, 2),
                       "decode_tokens_per_s": tokens / max(seconds, 1e-9), "batch_size": 1}
