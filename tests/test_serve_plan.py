"""Which vLLM / baseline command line an artifact + ``serve:`` config gives (no server started: fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from personagpt.config import load_config
from personagpt.errors import ArtifactError, ConfigError, PersonaGPTError
from serve import plan


def make_artifact(root: Path, *, heads=2, kv_heads=1, hidden=64, layers=4, max_pos=512, dtype="float32",
                  quantization=None, quant_config=None, template=True, name="model") -> Path:
    """A model artifact's metadata files (weights are an empty file: the plan never reads them)."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "num_hidden_layers": layers,
           "max_position_embeddings": max_pos, "dtype": dtype if dtype != "int8" else "float32"}
    if quant_config:
        cfg["quantization_config"] = quant_config
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "tokenizer.json").write_text("{}")
    (d / "tokenizer_config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"")
    if template:
        (d / "chat_template.jinja").write_text("{{ messages }}")
    (d / "manifest.json").write_text(json.dumps({"kind": "model", "metrics": {}, "config": {}, "model": {
        "architecture": "LlamaForCausalLM", "num_parameters": 1, "weight_bytes": 1, "dtype": dtype,
        "max_position_embeddings": max_pos, "quantization": quantization}}))
    return d


def serve_cfg(*overrides: str):
    return load_config(None, list(overrides)).serve


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def launch(art, *overrides, device="cpu"):
    return plan.build_launch(art, serve_cfg("serve.port=8123", *overrides), device=device, python="/venv/bin/python")


def test_cpu_command_from_manifest(tmp_path):
    art = make_artifact(tmp_path)
    ln = launch(art, "serve.kv_cache_gib=2", "serve.max_num_seqs=8", "serve.served_model_name=sam")
    a = ln.argv
    assert a[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag(a, "--model") == str(art.resolve())
    assert flag(a, "--served-model-name") == "sam" and ln.model == "sam"
    assert flag(a, "--dtype") == "float32"            # the artifact's dtype on CPU
    assert flag(a, "--max-model-len") == "512"        # the model's context
    assert flag(a, "--port") == "8123" and flag(a, "--host") == "127.0.0.1"
    assert flag(a, "--max-num-seqs") == "8"
    assert flag(a, "--chat-template") == str(art.resolve() / "chat_template.jinja")
    assert "--enable-prefix-caching" in a and "--enable-chunked-prefill" in a
    assert "--quantization" not in a and "--gpu-memory-utilization" not in a
    assert ln.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TMPDIR"):
        assert key in ln.env
    assert "--api-key" not in a  # the key travels by environment only
    assert ln.url == "http://127.0.0.1:8123"


def test_default_model_name_is_the_folder(tmp_path):
    assert launch(make_artifact(tmp_path, name="sam-int8")).model == "sam-int8"


def test_toggles_and_extra_args(tmp_path):
    a = launch(make_artifact(tmp_path), "serve.enable_prefix_caching=false", "serve.enable_chunked_prefill=false",
               "serve.enforce_eager=true", "serve.max_num_batched_tokens=1024",
               "serve.extra_args=[--seed, '7']").argv
    assert "--no-enable-prefix-caching" in a and "--no-enable-chunked-prefill" in a and "--enforce-eager" in a
    assert flag(a, "--max-num-batched-tokens") == "1024"
    assert a[-2:] == ["--seed", "7"]


def test_gpu_command(tmp_path):
    ln = launch(make_artifact(tmp_path), "serve.gpu_memory_utilization=0.5", device="gpu")
    assert flag(ln.argv, "--gpu-memory-utilization") == "0.5"
    assert flag(ln.argv, "--dtype") == "auto"  # vLLM serves fp32 checkpoints in bf16/fp16 on GPUs
    assert "VLLM_CPU_KVCACHE_SPACE" not in ln.env


@pytest.mark.parametrize("avx512, activations", [(False, "float32"), (True, "bfloat16")])
def test_int8_compressed_tensors(tmp_path, monkeypatch, avx512, activations):
    art = make_artifact(tmp_path, dtype="int8", quantization={"method": "int8", "format": "compressed-tensors"},
                        quant_config={"quant_method": "compressed-tensors"})
    monkeypatch.setattr(plan, "cpu_has_avx512", lambda: avx512)
    a = launch(art).argv
    assert flag(a, "--quantization") == "compressed-tensors"
    # AVX2: the config's float dtype, not the weights' int8; AVX-512: vllm-cpu's oneDNN int8 kernel needs bf16
    assert flag(a, "--dtype") == activations


def test_gptq_on_gpu_lets_vllm_pick_kernel_in_fp16(tmp_path):
    art = make_artifact(tmp_path, quantization={"method": "gptq", "format": "gptq"},
                        quant_config={"quant_method": "gptq", "bits": 4})
    a = launch(art, device="gpu").argv
    assert "--quantization" not in a  # vLLM picks gptq_marlin / exllama from quantization_config
    assert flag(a, "--dtype") == "float16"
    with pytest.raises(ConfigError, match="serve.dtype"):
        launch(art, "serve.dtype=float32", device="gpu")


def test_gptq_on_avx2_cpu_is_refused(tmp_path, monkeypatch):
    art = make_artifact(tmp_path, quantization={"method": "gptq", "format": "gptq"},
                        quant_config={"quant_method": "gptq", "bits": 4})
    monkeypatch.setattr(plan, "cpu_has_avx512", lambda: False)
    with pytest.raises(ArtifactError, match="GPTQ.*AVX-512"):
        launch(art)


def test_onnx_is_refused(tmp_path):
    art = make_artifact(tmp_path, quantization={"method": "onnx", "format": "onnx"})
    with pytest.raises(ArtifactError, match="ONNX"):
        launch(art)
    with pytest.raises(ArtifactError, match="ONNX"):
        launch(art, "serve.engine=baseline")


def test_quantized_manifest_without_quantization_config(tmp_path):
    art = make_artifact(tmp_path, quantization={"method": "int8", "format": "compressed-tensors"})
    with pytest.raises(ArtifactError, match="quantization_config"):
        launch(art)


def test_stale_quantization_config_is_a_clear_error(tmp_path):
    art = make_artifact(tmp_path, quant_config={"quant_method": "gguf", "gguf_file": "x.gguf"})
    with pytest.raises(ArtifactError, match="config.json: has a quantization_config .*gguf"):
        launch(art)


def test_unsupported_cpu_head_size_is_a_clear_error(tmp_path):
    art = make_artifact(tmp_path, heads=4, kv_heads=2)  # head_dim 16: vllm-cpu crashes at the first request
    with pytest.raises(ArtifactError, match="head_dim 16"):
        launch(art)
    assert launch(art, device="gpu").engine == "vllm"
    assert launch(art, "serve.engine=baseline").engine == "baseline"


def test_context_length(tmp_path):
    art = make_artifact(tmp_path, max_pos=4096, layers=30, kv_heads=3, heads=9, hidden=576)  # SmolLM2-135M shape
    assert flag(launch(art, "serve.max_model_len=1024").argv, "--max-model-len") == "1024"
    with pytest.raises(ConfigError, match="serve.max_model_len.*exceeds"):
        launch(art, "serve.max_model_len=8192")
    # 2 * 30 layers * 3 kv heads * 64 dims * 4 bytes = 46,080 bytes/token: 0.05 GiB holds 1,164 -> 1,152 (blocks of 128)
    ln = launch(art, "serve.kv_cache_gib=0.05")
    assert flag(ln.argv, "--max-model-len") == "1152" and ln.notes
    with pytest.raises(ConfigError, match="serve.max_model_len.*KV cache"):
        launch(art, "serve.kv_cache_gib=0.05", "serve.max_model_len=2048")


def test_baseline_command(tmp_path):
    art = make_artifact(tmp_path)
    ln = launch(art, "serve.engine=baseline", "serve.api_key_env=MY_KEY")
    assert ln.argv[1:3] == ["-m", "serve.baseline"]
    assert flag(ln.argv, "--dtype") == "float32" and flag(ln.argv, "--max-model-len") == "512"
    assert flag(ln.argv, "--api-key-env") == "MY_KEY"


@pytest.mark.parametrize("setup,match", [
    (lambda d: (d / "manifest.json").unlink(), "not an artifact"),
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "safetensors"),
    (lambda d: (d / "manifest.json").write_text("{broken"), "invalid JSON"),
    (lambda d: (d / "manifest.json").write_text('{"kind": "dataset"}'), "expected model"),
])
def test_bad_artifacts(tmp_path, setup, match):
    art = make_artifact(tmp_path)
    setup(art)
    with pytest.raises(ArtifactError, match=match) as e:
        launch(art)
    assert str(art) in str(e.value)


def test_missing_vllm_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(plan.VLLM_PYTHON_ENV, str(tmp_path / "nope" / "python"))
    with pytest.raises(PersonaGPTError, match="make setup-serve"):
        plan.build_launch(make_artifact(tmp_path), serve_cfg("serve.port=8123"), device="cpu")


@pytest.mark.parametrize("override,key", [
    ("serve.port=70000", "serve.port"), ("serve.kv_cache_gib=0", "serve.kv_cache_gib"),
    ("serve.engine=tgi", "serve.engine"), ("serve.max_model_len=4", "serve.max_model_len"),
    ("serve.gpu_memory_utilization=1.5", "serve.gpu_memory_utilization"), ("serve.colour=red", "serve.colour"),
    ("serve.api_key_env=not-a-var", "serve.api_key_env"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        serve_cfg(override)
