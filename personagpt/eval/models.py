"""Model names of ``eval.models`` / ``--models`` -> folders, through the run layout.

``base``: the ``model:`` section's source (smollm2: the cached SmolLM2 folder; pretrained: ``model.path``; scratch
has no pretrained base). ``teacher``, ``student``: runs/NAME/teacher, runs/NAME/student. ``quantized``: the
quantized artifact the pipeline makes (runs/NAME/quantized-METHOD, METHOD from ``pipeline.quantize_method``).
Anything else must be a Hugging Face model folder. Every name is checked before anything is loaded or written.
"""

from __future__ import annotations

from pathlib import Path

from personagpt.config.eval import MODEL_NAMES
from personagpt.errors import ArtifactError, ConfigError
from personagpt.paths import RunLayout


def base_model(cfg) -> Path:
    if cfg.model.source == "scratch":
        raise ConfigError("eval.models: base: model.source is scratch, so there is no pretrained base model "
                          "(drop base from eval.models / --models)")
    if cfg.model.source == "pretrained":
        return Path(cfg.model.path)
    from personagpt.paths import smollm2_dir
    from personagpt.smollm2 import convert

    return convert(smollm2_dir())  # reuses the converted folder the data stage made


def model_path(cfg, layout: RunLayout, name: str) -> Path:
    from personagpt.pipeline.context import quantize_method

    if name == "base":
        return base_model(cfg)
    if name in ("teacher", "student"):
        return getattr(layout, name)
    if name == "quantized":
        return layout.quantized(quantize_method(cfg))
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(f"eval.models: unknown model {name!r} (one of {', '.join(MODEL_NAMES)}, or a Hugging "
                          "Face model folder)")
    return path


def check_model(name: str, path: Path) -> str:
    """The dtype to load ``path`` in; an ArtifactError naming ``eval.models: NAME`` and the path otherwise."""
    from personagpt.model_artifact import open_model_artifact

    key = f"eval.models: {name}"
    path = path.resolve()
    if (path / "manifest.json").is_file():
        art = open_model_artifact(path, key=key)
        if art.quantization_method == "onnx":
            raise ArtifactError(f"{key}: {path}: an ONNX artifact cannot be scored with transformers; serve it and "
                                "evaluate the endpoint with --url")
        return art.dtype
    if not path.is_dir():
        raise ArtifactError(f"{key}: {path}: model artifact folder does not exist (has its stage run?)")
    if not (path / "config.json").is_file():
        raise ArtifactError(f"{key}: {path}: not a Hugging Face model folder (no config.json)")
    return "float32"


def resolve(cfg, layout: RunLayout, names: list[str]) -> dict[str, tuple[Path, str]]:
    """name -> (folder, dtype) for every name, or the first error."""
    out = {}
    for name in names:
        path = model_path(cfg, layout, name)
        out[name] = (path.resolve(), check_model(name, path))
    return out
