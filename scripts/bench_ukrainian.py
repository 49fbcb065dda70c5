"""Tokens per character and perplexity of the package models (SmolLM2-135M-Instruct, Gemma-3-270m) on held-out
Ukrainian prose: the test split of the ``ua-gec`` corpus (CC-BY-4.0; split by author; no stage trains on it).

    python scripts/bench_ukrainian.py                      # 60 documents x 400 characters, both models (~5 min)
    python scripts/bench_ukrainian.py --docs 20 --models gemma3 --json runs/bench/ukrainian.json

Rules:
- The same text for every model: the corrected (``target``) text of the first ``--docs`` test documents in doc-id
  order (ua-gec lists each document once per annotator: de-duplicated by doc id), whitespace collapsed, cut to at
  most ``--chars`` characters at a word boundary.
- Each document is scored alone, after the model's document-start token (``<bos>`` for Gemma, ``<|endoftext|>``
  for SmolLM2), with the shared evaluation code (personagpt/evaluate.py); every text token is scored.
- Token perplexity depends on the tokenizer; bits per character (summed loss / characters / ln 2) does not, so it
  is the column that compares models.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

START_TOKENS = ("<bos>", "<|endoftext|>")


def ukrainian_texts(n_docs: int, max_chars: int) -> list[str]:
    from ua_gec import Corpus

    seen: dict[str, str] = {}
    for doc in Corpus(partition="test"):
        seen.setdefault(doc.doc_id, doc.target)
    texts = []
    for doc_id in sorted(seen)[:n_docs]:
        text = " ".join(seen[doc_id].split())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0]
        texts.append(text)
    return texts


def start_token_id(tok) -> int:
    vocab = tok.get_vocab()
    for t in START_TOKENS:
        if t in vocab:
            return vocab[t]
    raise SystemExit(f"no document-start token ({', '.join(START_TOKENS)}) in the tokenizer")


def measure(source: str, texts: list[str], batch_size: int) -> dict:
    import torch

    from personagpt.evaluate import perplexity
    from personagpt.gguf_models import converted_dir
    from personagpt.models import load_model
    from personagpt.template import IGNORE_INDEX

    model, tok = load_model(converted_dir(source))
    start = start_token_id(tok)
    encoded = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        encoded.append({"input_ids": [start, *ids], "labels": [IGNORE_INDEX, *ids]})
    t0 = time.time()
    with torch.no_grad():
        res = perplexity(model, tok, [], batch_size=batch_size, encoded=encoded)
    chars = sum(len(t) for t in texts)
    return {"model": source, "docs": len(texts), "chars": chars, "tokens": res["tokens"],
            "tokens_per_char": res["tokens"] / chars, "ppl": res["ppl"],
            "bits_per_char": res["loss"] * res["tokens"] / chars / math.log(2), "seconds": round(time.time() - t0, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| model | docs | characters | tokens | tokens/char | token perplexity | bits/char |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['docs']} | {r['chars']} | {r['tokens']} | {r['tokens_per_char']:.3f} | "
                     f"{r['ppl']:.1f} | {r['bits_per_char']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3"], choices=["smollm2", "gemma3"])
    ap.add_argument("--docs", type=int, default=60, help="ua-gec test documents (166 unique)")
    ap.add_argument("--chars", type=int, default=400, help="characters per document, at most")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    a = ap.parse_args(argv)
    texts = ukrainian_texts(a.docs, a.chars)
    rows = [measure(m, texts, a.batch_size) for m in a.models]
    print(table(rows))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
