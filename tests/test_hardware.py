"""CPU capability detection (personagpt/hardware.py) and the quantization method ``auto`` picks from it, with the
flags injected: an AVX2-only CPU and AVX-512 CPUs (Zen 4/5 with avx512_bf16, Sapphire Rapids with AMX)."""

from __future__ import annotations

import pytest

from fixtures.artifacts import TINY
from personagpt import hardware
from personagpt.config import load_config
from personagpt.hardware import CpuCapability, auto_quantize_method, cpu_capability, read_cpuinfo_flags
from personagpt.pipeline.context import quantize_method

AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 fma avx avx2 bmi1 bmi2"
ZEN4 = AVX2 + " avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"
SPR = ZEN4 + " amx_bf16 amx_tile amx_int8"


def cpuinfo(tmp_path, flags: str):
    p = tmp_path / "cpuinfo"
    p.write_text("".join(f"processor\t: {i}\nmodel name\t: x\nflags\t\t: {flags}\n\n" for i in range(2)))
    return p


@pytest.mark.parametrize("flags, level, served", [
    (AVX2, "avx2", ("int8",)),
    (AVX2 + " avx512f", "avx512", ("int8", "gptq")),
    (ZEN4, "avx512_bf16", ("int8", "gptq")),
    (SPR, "amx", ("int8", "gptq")),
])
def test_flags_from_cpuinfo(tmp_path, flags, level, served):
    cap = cpu_capability(cpuinfo(tmp_path, flags))
    assert cap.level == level and cap.served_methods() == served
    assert cap.avx512 == ("avx512f" in flags)
    assert cap.source.endswith("cpuinfo")


def test_without_cpuinfo_torch_decides(tmp_path):
    import torch

    assert read_cpuinfo_flags(tmp_path / "missing") is None
    cap = cpu_capability(tmp_path / "missing")
    assert cap.source.startswith("torch")
    assert cap.avx512 == torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def test_auto_never_gives_gptq_to_a_cpu_without_avx512():
    assert auto_quantize_method("cpu", CpuCapability.from_flags(AVX2.split())) == "int8"
    for flags in (ZEN4, SPR):
        # both are served there; int8 measured faster under load (serve/bench.py, hardware.py's docstring)
        assert auto_quantize_method("cpu", CpuCapability.from_flags(flags.split())) == hardware.AVX512_CHOICE == "int8"
    assert auto_quantize_method("gpu") == "gptq"


def test_avx512_choice_is_a_method_served_there(monkeypatch):
    zen4 = CpuCapability.from_flags(ZEN4.split())
    monkeypatch.setattr(hardware, "AVX512_CHOICE", "gptq")
    assert auto_quantize_method("cpu", zen4) == "gptq"  # the switch a measurement would flip
    assert auto_quantize_method("cpu", CpuCapability.from_flags(AVX2.split())) == "int8"


@pytest.mark.parametrize("flags", [AVX2, SPR])
def test_pipeline_auto_uses_the_capability(flags):
    import torch

    cap = CpuCapability.from_flags(flags.split())
    assert quantize_method(load_config(TINY, []), cap) == ("gptq" if torch.cuda.is_available() else "int8")
    assert quantize_method(load_config(TINY, ["pipeline.quantize_method=onnx"]), cap) == "onnx"


def test_cpu_compute_dtype_keeps_bfloat16_only_where_the_cpu_has_it():
    from personagpt.hardware import cpu_compute_dtype

    avx2, zen4, spr = (CpuCapability.from_flags(f.split()) for f in (AVX2, ZEN4, SPR))
    assert cpu_compute_dtype("bfloat16", avx2) == "float32"  # AVX2 emulates bf16
    assert cpu_compute_dtype("bfloat16", zen4) == "bfloat16" and cpu_compute_dtype("bfloat16", spr) == "bfloat16"
    assert cpu_compute_dtype("float16", zen4) == "float32"
    assert cpu_compute_dtype("float32", avx2) == "float32"
