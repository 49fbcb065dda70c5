"""``pipeline:`` — what ``personagpt run`` (and ``make demo``) runs: data -> teacher -> student -> quantized ->
vLLM -> Locust -> report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from personagpt.config.base import Section

MODELS = ("teacher", "student", "quantized")


class PipelineConfig(Section):
    ranks: int | None = Field(None, ge=1, description="DeepSpeed ranks for train and distill; default: every GPU, "
                                                      "or 2 on a CPU-only machine")
    quantize_method: Literal["auto", "gptq", "int8", "onnx"] = Field(
        "auto", description="auto: gptq on GPUs, int8 W8A8 on CPUs (what vLLM serves there)")
    serve: list[Literal["teacher", "student", "quantized"]] = Field(
        default_factory=lambda: ["quantized"], description="models served with vLLM and load tested, one at a time")
    serve_port: int = Field(0, ge=0, le=65535, description="0: a free port")
    sample_questions: int = Field(3, ge=0, description="held-out questions every model answers in the report")
    sample_max_tokens: int = Field(48, ge=1)
