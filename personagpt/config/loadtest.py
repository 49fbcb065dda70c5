"""``loadtest:`` — Locust load tests of an OpenAI-compatible server (``python loadtest/run.py --host URL``).

Prompts are real held-out conversations of a dataset artifact, sent as chat messages with streaming; every request
records time to first token (TTFT), time per output token after the first (ITL), end-to-end latency (E2E) and the
output tokens the server reports in its stream's ``usage``. Profiles:

- ``fixed``: ``users`` concurrent users (closed loop: each sends its next request when the last one finished).
- ``step``: a step ramp (Locust LoadTestShape): ``step.start_users``, ``+step.step_users`` every
  ``step.step_duration_s`` up to ``step.max_users``.
- ``poisson``: open loop, requests arrive as a Poisson process at ``poisson.rate`` requests/s, at most
  ``poisson.max_concurrency`` in flight (late arrivals wait and their queueing delay is recorded).
- ``sweep``: concurrency levels ``sweep.levels`` one after the other, stopping at the level where the server
  saturates (output tokens/s grew less than ``sweep.min_gain``, errors above the SLO, or an SLO p95 broken).

SLO thresholds (``slo:``) gate the exit code: non-zero when violated. null disables a check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from personagpt.config.base import Section


class SLOConfig(Section):
    ttft_p95_ms: float | None = Field(2000.0, gt=0, description="p95 time to first token must not exceed this; "
                                                                "also the per-request TTFT limit for goodput")
    itl_p95_ms: float | None = Field(200.0, gt=0, description="p95 time per output token (after the first)")
    e2e_p95_ms: float | None = Field(30000.0, gt=0, description="p95 end-to-end request latency")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="failed requests / all requests, at most")
    min_goodput: float | None = Field(
        None, ge=0, le=1, description="share of requests that succeeded and met every per-request limit above, "
                                      "at least")
    min_output_tokens_per_s: float | None = Field(None, gt=0, description="output throughput, at least")


class StepConfig(Section):
    start_users: int = Field(1, ge=1)
    step_users: int = Field(2, ge=1, description="users added at every step")
    step_duration_s: float = Field(20.0, gt=0)
    max_users: int = Field(8, ge=1, description="the last step holds this many users")
    spawn_rate: float | None = Field(None, gt=0, description="users started per second; default: at once")

    @model_validator(mode="after")
    def _order(self):
        if self.max_users < self.start_users:
            raise ValueError(f"max_users ({self.max_users}) must be >= start_users ({self.start_users})")
        return self


class PoissonConfig(Section):
    rate: float = Field(2.0, gt=0, description="target arrival rate, requests/s (Poisson process)")
    max_concurrency: int = Field(32, ge=1, description="requests in flight at most (the Locust users)")


class SweepConfig(Section):
    levels: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32], min_length=1,
                              description="concurrency levels (users), strictly increasing")
    level_duration_s: float = Field(20.0, gt=0, description="measured time at each level")
    warmup_s: float = Field(2.0, ge=0, description="start of each level not measured")
    min_gain: float = Field(0.1, ge=0, description="saturated when output tokens/s grew by less than this "
                                                   "fraction over the best lower level")
    stop_on_slo: bool = Field(True, description="also stop at the first level that breaks a p95 SLO or the "
                                                "error rate")

    @field_validator("levels")
    @classmethod
    def _increasing(cls, v):
        if any(x < 1 for x in v) or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"must be strictly increasing positive integers, got {v}")
        return v

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_s >= self.level_duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be < level_duration_s ({self.level_duration_s})")
        return self


class LoadtestConfig(Section):
    # what load
    profile: Literal["fixed", "step", "poisson", "sweep"] = "fixed"
    users: int = Field(4, ge=1, description="fixed profile: concurrent users")
    spawn_rate: float | None = Field(None, gt=0, description="fixed profile: users started per second; "
                                                             "default: all at once")
    duration_s: float = Field(60.0, gt=0, description="fixed/poisson: run time; step/sweep: upper bound")
    max_requests: int | None = Field(None, ge=1, description="stop after this many requests (per load "
                                                              "generator process)")
    step: StepConfig = Field(default_factory=StepConfig)
    poisson: PoissonConfig = Field(default_factory=PoissonConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    # what requests
    dataset: Path | None = Field(None, description="dataset artifact whose held-out split gives the prompts; "
                                                   "default runs/NAME/data")
    split: Literal["test", "val"] = Field("test", description="held-out split the prompts come from")
    num_prompts: int = Field(256, ge=1, description="distinct prompts at most (shuffled with the run's seed)")
    min_input_tokens: int = Field(1, ge=1, description="prompts shorter than this (chat template applied) "
                                                       "are skipped")
    max_input_tokens: int = Field(256, ge=1, description="older turns are dropped until a prompt fits")
    max_tokens: int = Field(64, ge=1, description="output length requested per request")
    ignore_eos: bool = Field(True, description="generate exactly max_tokens (comparable runs); vLLM and the "
                                               "baseline server both accept it")
    temperature: float = Field(0.0, ge=0)
    model: str | None = Field(None, description="served model name; default: the server's first /v1/models id")
    tokenizer: Path | None = Field(
        None, description="tokenizer folder for input lengths (and output tokens when a server sends no usage); "
                          "default: the dataset artifact's tokenizer/")
    api_key_env: str = Field("PERSONAGPT_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="environment variable holding the API key (unset: no key sent)")
    # bounds: nothing waits forever
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect, per request")
    request_timeout_s: float = Field(120.0, gt=0, description="a whole streamed request, at most")
    preflight_timeout_s: float = Field(60.0, gt=0, description="the check request sent before the run")
    stop_timeout_s: float = Field(30.0, ge=0, description="in-flight requests get this long after the end")
    # where
    out: Path | None = Field(None, description="results folder; default runs/NAME/loadtest/MODEL/PROFILE "
                                                    "(MODEL: the served model's id)")
    slo: SLOConfig = Field(default_factory=SLOConfig)

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_input_tokens > self.max_input_tokens:
            raise ValueError(f"min_input_tokens ({self.min_input_tokens}) must be <= max_input_tokens "
                             f"({self.max_input_tokens})")
        return self
