"""Measure a model the same way before and after quantization, and lay the numbers side by side.

Perplexity: ``personagpt.evaluate.perplexity`` on the same encoded validation samples (assistant tokens only).
Weight bytes: the weight files on disk. Decode tokens/s: greedy generation of a fixed number of new tokens on the
same prompts with the same batch size (``personagpt.evaluate.decode_throughput``, or its ONNX Runtime twin).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from personagpt.evaluate import decode_throughput, perplexity
from personagpt.models import load_model, weight_bytes


def log(msg: str) -> None:
    print(f"[quantize {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def torch_metrics(folder: Path, encoded: Sequence[dict], samples: Sequence[dict], q, device: torch.device,
                  dtype: torch.dtype, prepare: Callable | None = None) -> dict[str, Any]:
    """Load ``folder`` with transformers, optionally ``prepare(model)``, and measure it."""
    t0 = time.perf_counter()
    model, tok = load_model(folder, dtype=dtype, device=device)
    info = {"load_seconds": round(time.perf_counter() - t0, 2)}
    if prepare is not None:
        info.update(prepare(model) or {})
    ppl = perplexity(model, tok, samples, batch_size=q.eval_batch_size, encoded=encoded)
    dec = decode_throughput(model, tok, samples, max_new_tokens=q.decode_tokens, batch_size=q.decode_batch_size,
                            n_prompts=q.decode_prompts)
    del model
    return {**ppl, "decode_tokens_per_s": dec["decode_tokens_per_s"], "weight_bytes": weight_bytes(folder),
            "dtype": str(dtype).replace("torch.", ""), "runtime": f"torch {torch.__version__} ({device.type})", **info}


def relative(before: dict, after: dict, num_parameters: int) -> dict[str, float]:
    fp16 = 2 * num_parameters
    return {
        "ppl_increase_pct": 100.0 * (after["ppl"] / before["ppl"] - 1.0),
        "weight_bytes_vs_input": after["weight_bytes"] / before["weight_bytes"],
        "weight_bytes_vs_fp16": after["weight_bytes"] / fp16,
        "decode_speedup": after["decode_tokens_per_s"] / max(before["decode_tokens_per_s"], 1e-9),
    }


def table(rows: Sequence[dict]) -> str:
    """Markdown table; each row: label, ppl, ppl_increase_pct (None for the reference), weight_bytes,
    weight_bytes_vs_fp16, decode_tokens_per_s, optional weight_breakdown (quantize/sizes.py)."""
    head = "| model | val ppl | Δ ppl | weights on disk | × fp16 bytes | quantized layers × fp16 | decode tok/s |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        inc = "—" if r.get("ppl_increase_pct") is None else f"{r['ppl_increase_pct']:+.2f}%"
        parts = r.get("weight_breakdown")
        ql = f"{parts['quantized_layers_vs_fp16']:.2f}" if parts else "—"
        lines.append(f"| {r['label']} | {r['ppl']:.3f} | {inc} | {r['weight_bytes'] / 1e6:.2f} MB | "
                     f"{r['weight_bytes_vs_fp16']:.2f} | {ql} | {r['decode_tokens_per_s']:.1f} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: Path, title: str) -> None:
    """Bar charts of perplexity, weight bytes and decode speed per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, name, scale in ((axes[0], "ppl", "validation perplexity", 1),
                                 (axes[1], "weight_bytes", "weights on disk (MB)", 1e-6),
                                 (axes[2], "decode_tokens_per_s", "decode tokens/s", 1)):
        vals = [r[key] * scale for r in rows]
        bars = ax.bar(range(len(rows)), vals, color=["#777777"] + ["#3b75af"] * (len(rows) - 1))
        ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(name)
        for b, v in zip(bars, vals, strict=True):
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
