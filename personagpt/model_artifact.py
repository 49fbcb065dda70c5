"""One check of "is this a model artifact": :func:`open_model_artifact` returns its typed facts or raises an
``ArtifactError`` naming the config key (when given) and the path.

A model artifact is a Hugging Face folder with ``manifest.json`` (kind ``model``, a ``model`` block), a
``config.json``, tokenizer files and weights (``*.safetensors``, or an ONNX graph when the manifest's
``model.quantization.format`` is ``onnx``). The manifest is the truth about quantization: a config.json that claims
a ``quantization_config`` the manifest does not is refused (a stale entry, e.g. from a GGUF conversion, would make
vLLM treat plain weights as quantized). Standard library only: the serving entry reads artifacts without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personagpt.artifacts import read_json, read_manifest
from personagpt.errors import ArtifactError

WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
FLOAT_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelArtifact:
    path: Path
    manifest: dict[str, Any]
    hf_config: dict[str, Any]
    quantization: dict[str, Any] | None  # the manifest's model.quantization (None: plain float weights)
    dtype: str                           # activation dtype: the weights' float dtype, or config.json's when quantized
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def chat_template_file(self) -> Path | None:
        p = self.path / "chat_template.jinja"
        return p if p.is_file() else None

    @property
    def quantization_method(self) -> str | None:
        return (self.quantization or {}).get("method")

    @property
    def dataset(self) -> Path | None:
        """The dataset artifact this model descends from (its own parent, or its model parent's), if recorded."""
        parents = self.manifest.get("parents") or {}
        if "dataset" in parents:
            return Path(parents["dataset"]["path"])
        for role in ("model", "teacher", "base_model"):
            path = (parents.get(role) or {}).get("path")
            if path and Path(path).is_dir():
                try:
                    return open_model_artifact(path).dataset
                except ArtifactError:
                    return None
        return None


def open_model_artifact(path: str | Path, key: str | None = None) -> ModelArtifact:
    """The model artifact at ``path``; errors are prefixed with ``key`` (the config key that named it)."""
    path = Path(path).expanduser().resolve()
    where = f"{key}: {path}" if key else str(path)
    if not path.is_dir():
        raise ArtifactError(f"{where}: model artifact folder does not exist")
    try:
        manifest = read_manifest(path, kind="model")
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise ArtifactError("model artifact has no config.json")
        hf = read_json(cfg_path)
        block = manifest.get("model")
        if not isinstance(block, dict):
            raise ArtifactError("manifest.json has no 'model' block")
        quant = block.get("quantization")
        if quant is not None and not isinstance(quant, dict):
            raise ArtifactError("manifest.json: model.quantization must be null or an object")
        _check_files(path, quant)
        _check_quantization_claims(hf, quant)
        return _facts(path, manifest, hf, block, quant)
    except ArtifactError as e:
        msg = str(e).removeprefix(f"{path}: ").removeprefix(f"{path / 'config.json'}: ")
        raise ArtifactError(f"{where}: {msg}") from None


def _check_files(path: Path, quant: dict | None) -> None:
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ArtifactError("no tokenizer files (tokenizer.json / tokenizer_config.json)")
    onnx = bool(quant) and quant.get("format") == "onnx"
    if not onnx and not any(p for g in WEIGHT_GLOBS for p in path.glob(g)):
        raise ArtifactError("model artifact has no weights (*.safetensors)")


def _check_quantization_claims(hf: dict, quant: dict | None) -> None:
    if quant is None and "quantization_config" in hf:
        method = (hf["quantization_config"] or {}).get("quant_method")
        raise ArtifactError(f"config.json: has a quantization_config (quant_method {method!r}) but the manifest says "
                            "the model is not quantized; a stale entry (e.g. left by a GGUF conversion) makes vLLM "
                            "treat the weights as quantized — remove it from config.json")


def _facts(path: Path, manifest: dict, hf: dict, block: dict, quant: dict | None) -> ModelArtifact:
    text = hf.get("text_config") or hf  # multimodal configs nest the language model's
    try:
        hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
        layers = int(text["num_hidden_layers"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"config.json: missing or invalid {e}") from None
    max_pos = int(block.get("max_position_embeddings") or text.get("max_position_embeddings") or 0)
    if max_pos <= 0:
        raise ArtifactError("unknown context length (model.max_position_embeddings)")
    dtype = str(block.get("dtype") or "")
    if dtype not in FLOAT_DTYPES:  # quantized weights: the activation dtype is the config's
        dtype = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
        dtype = dtype if dtype in FLOAT_DTYPES else "float32"
    return ModelArtifact(path=path, manifest=manifest, hf_config=hf, quantization=quant, dtype=dtype,
                         num_layers=layers, hidden_size=hidden, num_heads=heads,
                         num_kv_heads=int(text.get("num_key_value_heads") or heads),
                         head_dim=int(text.get("head_dim") or hidden // heads), max_position_embeddings=max_pos)
