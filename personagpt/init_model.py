"""An untrained model artifact (from-scratch Llama + the dataset's tokenizer): the start of training from a
config, and a cheap real model for tests of serving and quantization."""

from __future__ import annotations

from pathlib import Path

import torch

from personagpt.artifacts import new_manifest, read_manifest, staging_dir, write_manifest
from personagpt.models import build_scratch_model, save_model_folder
from personagpt.tokenizer import load_tokenizer


def init_model_artifact(cfg, dataset_dir: str | Path, out: str | Path) -> Path:
    read_manifest(dataset_dir, kind="dataset")
    tok = load_tokenizer(Path(dataset_dir) / "tokenizer")
    torch.manual_seed(cfg.seed)
    model = build_scratch_model(cfg.model, tok)
    with staging_dir(out) as tmp:
        block = save_model_folder(model, tok, tmp)
        write_manifest(tmp, new_manifest("model", "model-init", config=cfg.to_dict(),
                                         parents={"dataset": dataset_dir}, model=block))
    return Path(out)
