"""One chat template renders every sample; labels cover only assistant (persona) tokens.

The template is the model's own (it travels inside every model artifact's tokenizer files); the from-scratch
tokenizer gets ChatML. Assistant spans are found by rendering message prefixes with the same template, so any
template whose rendering of a conversation prefix is a prefix of the full rendering works (ChatML, Llama-3,
SmolLM2, Qwen2...). Token ids are exactly ``tokenizer.apply_chat_template(messages)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from personagpt.errors import PersonaGPTError

IGNORE_INDEX = -100

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

Message = dict[str, str]


def render(tokenizer, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(tokenizer, messages: Sequence[Message],
                         label_turns: str = "last") -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of the assistant turns to train on.

    A span covers the assistant's content and its end-of-turn marker, not the generation prompt before it and not
    trailing whitespace after it."""
    text = render(tokenizer, messages)
    idxs = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if label_turns == "last":
        idxs = idxs[-1:]
    spans = []
    for i in idxs:
        prefix = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        if not text.startswith(upto) or not upto.startswith(prefix):
            raise PersonaGPTError(
                "chat template is not prefix-stable (rendering the first turns is not a prefix of rendering the "
                "whole conversation), so assistant tokens cannot be located; use a ChatML-style template")
        block = upto[len(prefix):]
        spans.append((len(prefix), len(prefix) + len(block.rstrip())))
    return text, spans


def encode_sample(tokenizer, messages: Sequence[Message], label_turns: str = "last",
                  max_length: int | None = None) -> dict[str, Any]:
    """``input_ids`` of the rendered conversation and ``labels`` with everything but assistant tokens masked."""
    text, spans = assistant_char_spans(tokenizer, messages, label_turns)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for k, (start, _end) in enumerate(offsets):
        for s, e in spans:
            if s <= start < e:
                labels[k] = ids[k]
                break
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def prompt_messages(messages: Sequence[Message]) -> list[Message]:
    """The messages before the final assistant turn: what a user sends to get that reply."""
    msgs = list(messages)
    if msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    return msgs
