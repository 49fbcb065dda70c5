"""``pipeline:`` — what ``personagpt run`` (and ``make demo``) runs: data -> teacher -> student -> quantized ->
vLLM -> Locust -> report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from personagpt.config.base import Section

# pipeline.serve names stages, like --stages; these are the models they make (the old vocabulary of the key)
MODEL_OF_STAGE = {"train": "teacher", "distill": "student", "quantize": "quantized", "promote": "promoted"}


class PipelineConfig(Section):
    ranks: int | None = Field(None, ge=1, description="DeepSpeed ranks for train and distill; default: every GPU, "
                                                      "or 2 on a CPU-only machine")
    quantize_method: Literal["auto", "gptq", "int8", "onnx"] = Field(
        "auto", description="auto: gptq on GPUs, int8 W8A8 on CPUs (what vLLM serves on every CPU; on AVX-512 CPUs "
                            "it also serves gptq, which measured slower under load there and costs more perplexity: "
                            "personagpt/hardware.py)")
    serve: list[Literal["train", "distill", "quantize", "promote"]] = Field(
        default_factory=lambda: ["promote"], description="stages whose models are served with vLLM and load "
                                                         "tested, one at a time (train: the teacher, distill: the "
                                                         "student, quantize: the quantized student, promote: the "
                                                         "model the quality gate chose)")
    min_quality_retained: float = Field(
        0.8, ge=0.0, description="quality gate: the quantized student is served only if it keeps this share of "
                                 "the teacher's quality (teacher ppl / its ppl, as report.md chains it; a student can "
                                 "exceed 1.0); else the quantized teacher is")
    serve_port: int = Field(0, ge=0, le=65535, description="0: a free port")
    sample_questions: int = Field(3, ge=0, description="held-out questions every model answers in the report")
    sample_max_tokens: int = Field(48, ge=1)
    stop_timeout_s: float = Field(60.0, gt=0, description="on SIGINT/SIGTERM/SIGHUP: seconds a stage's processes "
                                                           "get to stop after SIGTERM before they are SIGKILLed")

    @field_validator("serve", mode="before")
    @classmethod
    def _stage_names(cls, v):
        stage_of = {m: s for s, m in MODEL_OF_STAGE.items()}
        for item in v if isinstance(v, list) else []:
            if item in stage_of:
                raise ValueError(f"{item!r} names a model; pipeline.serve names the stage that makes it, as "
                                 f"--stages does: {stage_of[item]!r}")
        return v
