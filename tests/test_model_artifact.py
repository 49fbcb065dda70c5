"""open_model_artifact: the one check every stage uses to read a model artifact (typed facts, or an error naming
the config key and the path)."""

import json
import shutil

import pytest

from personagpt.errors import ArtifactError
from personagpt.model_artifact import open_model_artifact


def test_facts_of_a_real_artifact(tiny_model_artifact, tiny_dataset):
    art = open_model_artifact(tiny_model_artifact, "quantize.model")
    hf = json.loads((tiny_model_artifact / "config.json").read_text())
    assert art.path == tiny_model_artifact.resolve() and art.name == tiny_model_artifact.name
    assert (art.num_layers, art.hidden_size, art.num_heads) == (hf["num_hidden_layers"], hf["hidden_size"],
                                                                 hf["num_attention_heads"])
    assert art.head_dim == hf["hidden_size"] // hf["num_attention_heads"]
    assert art.num_kv_heads == hf["num_key_value_heads"]
    assert art.quantization is None and art.quantization_method is None and art.dtype == "float32"
    assert art.dataset == tiny_dataset.resolve()  # lineage: the dataset it was made from


@pytest.mark.parametrize("damage, message", [
    (lambda d: shutil.rmtree(d), "model artifact folder does not exist"),
    (lambda d: (d / "manifest.json").unlink(), "not an artifact (no manifest.json)"),
    (lambda d: (d / "config.json").unlink(), "model artifact has no config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "has no weights"),
    (lambda d: (d / "tokenizer.json").unlink() or (d / "tokenizer_config.json").unlink(), "no tokenizer files"),
])
def test_errors_name_the_key_and_the_path(tiny_model_artifact, tmp_path, damage, message):
    art = tmp_path / "model"
    shutil.copytree(tiny_model_artifact, art)
    damage(art)
    with pytest.raises(ArtifactError) as e:
        open_model_artifact(art, "distill.teacher")
    assert str(e.value).startswith(f"distill.teacher: {art}: ") and message in str(e.value), str(e.value)
