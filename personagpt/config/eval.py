"""``eval:`` — persona-fidelity evaluation (``personagpt eval``, the pipeline's eval stage).

Every model named in ``models`` answers the same held-out contexts of the dataset artifact's ``split``: hits@1 of
``candidates`` by mean log-likelihood per token on ``ranking_contexts`` contexts, replies generated greedily and
with ``sampling`` on ``contexts`` contexts (authorship share and style statistics), perplexity on ``ppl_samples``
samples. Every figure gets a 95% bootstrap interval over ``bootstrap_resamples`` resamples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from personagpt.config.base import Section

MODEL_NAMES = ("base", "teacher", "student", "quantized")


class SamplingConfig(Section):
    temperature: float = Field(0.7, gt=0, description="sampled replies: softmax temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="sampled replies: nucleus sampling mass (1: off)")
    repetition_penalty: float = Field(1.0, ge=1, description="sampled replies: penalty on tokens already present "
                                                             "(1: off)")


class EvalConfig(Section):
    models: list[str] = Field(
        default_factory=lambda: list(MODEL_NAMES), min_length=1,
        description="models to evaluate: base (the model: section's source), teacher, student, quantized (the "
                    "quantized artifact of pipeline.quantize_method), or a Hugging Face folder")
    split: Literal["val", "test"] = Field("test", description="held-out split of the dataset artifact")
    dataset: Path | None = Field(None, description="dataset artifact; default runs/NAME/data")
    contexts: int = Field(200, ge=2, description="held-out contexts each model answers (authorship, style); at "
                                                 "most the split's size")
    ranking_contexts: int = Field(100, ge=2, description="held-out contexts scored for hits@1 (at most the split's "
                                                         "size)")
    candidates: int = Field(20, ge=2, description="N of hits@1 of N: the real reply and N-1 distractors per pool")
    max_reply_tokens: int = Field(48, ge=1, description="candidate replies are scored on their first this many "
                                                        "tokens")
    max_new_tokens: int = Field(40, ge=1, description="tokens generated per reply at most")
    batch_size: int = Field(8, ge=1, description="generation batch size and candidates scored per forward pass")
    ppl_samples: int | None = Field(200, ge=1, description="split samples for perplexity (null: the whole split)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    classifier_max_per_class: int = Field(4000, ge=10, description="train-split replies per class (persona, "
                                                                   "others) the authorship classifier learns from")
    bootstrap_resamples: int = Field(1000, ge=100, description="bootstrap resamples per interval")
    seed: int = Field(0, description="seed of context choice, distractors, sampling and bootstrap")
    endpoint_timeout_s: float = Field(60.0, gt=0, description="--url: seconds one request may take")

    @field_validator("models")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"names a model twice: {v}")
        return v
