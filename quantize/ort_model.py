"""Run an exported causal LM with ONNX Runtime: greedy generation with the KV cache, perplexity and decode tokens/s
computed exactly as ``personagpt.evaluate`` does for torch models (same encoding, batching, loss and timing)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from personagpt.evaluate import collate, token_losses
from personagpt.template import prompt_messages
from quantize.onnx_export import ONNX_FILE, io_names


def pick_providers(provider: str = "auto") -> list[str]:
    """CUDA when asked for (or auto) and onnxruntime-gpu sees a GPU; the CPU provider always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "cuda" and "CUDAExecutionProvider" not in available:
        from personagpt.errors import ConfigError

        raise ConfigError("quantize.onnx.provider: cuda requested but this onnxruntime has no CUDAExecutionProvider "
                          "(install onnxruntime-gpu on a machine with an NVIDIA GPU)")
    if provider in ("auto", "cuda") and "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtCausalLM:
    def __init__(self, folder: str | Path, provider: str = "auto", onnx_file: str = ONNX_FILE):
        import onnxruntime as ort

        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        self.num_layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        self.kv_heads = int(cfg.get("num_key_value_heads") or heads)
        self.head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()  # the same threads torch gets: a fair comparison
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / onnx_file), opts, providers=pick_providers(provider))
        self.provider = self.session.get_providers()[0]
        self.input_names, self.output_names = io_names(self.num_layers)
        self.kv_dtype = np.float32

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.kv_heads, 0, self.head_dim), self.kv_dtype) for _ in range(2 * self.num_layers)]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64),
                "position_ids": position_ids.astype(np.int64)}
        feed.update(zip(self.input_names[3:], past, strict=True))
        out = self.session.run(None, feed)
        return out[0], out[1:]

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Full-sequence logits of right-padded batches (positions 0..n-1, as transformers uses), empty cache."""
        b, n = input_ids.shape
        pos = np.broadcast_to(np.arange(n, dtype=np.int64), (b, n))
        return self.forward(input_ids, attention_mask, pos, self.empty_past(b))[0]

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                 eos_ids: Sequence[int] = (), stop_at_eos: bool = True) -> list[list[int]]:
        """Greedy decoding of left-padded ``prompts`` with the KV cache. Returns the new tokens of each prompt (up
        to and including its first EOS when ``stop_at_eos``)."""
        b = len(prompts)
        n = max(len(p) for p in prompts)
        ids = np.full((b, n), pad_id, np.int64)
        mask = np.zeros((b, n), np.int64)
        for i, p in enumerate(prompts):
            ids[i, n - len(p):] = p
            mask[i, n - len(p):] = 1
        pos = np.clip(mask.cumsum(-1) - 1, 0, None)
        past = self.empty_past(b)
        out: list[list[int]] = [[] for _ in range(b)]
        done = np.zeros(b, bool)
        eos = set(int(e) for e in eos_ids)
        step_ids = ids
        for _ in range(max_new_tokens):
            logits, past = self.forward(step_ids, mask, pos, past)
            nxt = logits[:, -1].argmax(-1)
            for i in range(b):
                if not done[i]:
                    out[i].append(int(nxt[i]))
                    if stop_at_eos and int(nxt[i]) in eos:
                        done[i] = True
            if done.all():
                break
            step_ids = nxt[:, None].astype(np.int64)
            pos = pos[:, -1:] + 1
            mask = np.concatenate([mask, np.ones((b, 1), np.int64)], axis=1)
        return out

    def perplexity(self, pad_id: int, encoded: Sequence[dict], batch_size: int = 8) -> dict[str, Any]:
        """Same as ``personagpt.evaluate.perplexity`` on pre-encoded samples, with ORT logits."""
        total, count = 0.0, 0
        for i in range(0, len(encoded), batch_size):
            batch = collate(encoded[i:i + batch_size], pad_id)
            logits = self.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
            loss, n = token_losses(torch.from_numpy(logits), batch["labels"])
            total += loss.item()
            count += int(n.item())
        mean = total / max(count, 1)
        return {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": count}

    def decode_throughput(self, tokenizer, samples: Sequence[dict], max_new_tokens: int = 32, batch_size: int = 4,
                          n_prompts: int = 8) -> dict[str, Any]:
        """Same prompts, batching and rule (exactly ``max_new_tokens`` per sequence) as
        ``personagpt.evaluate.decode_throughput``."""
        prompts = [tokenizer.apply_chat_template(prompt_messages(s["messages"]), tokenize=True,
                                                 add_generation_prompt=True, return_dict=True)["input_ids"]
                   for s in samples[:n_prompts]]
        generated, seconds = 0, 0.0
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            t0 = time.perf_counter()
            out = self.generate(chunk, max_new_tokens, tokenizer.pad_token_id, stop_at_eos=False)
            seconds += time.perf_counter() - t0
            generated += sum(len(o) for o in out)
        return {"decode_tokens_per_s": generated / max(seconds, 1e-9), "generated_tokens": generated,
                "batch_size": batch_size, "max_new_tokens": max_new_tokens}
