"""Typed config: unknown keys and wrong types are errors naming the file and the key; overrides work."""

from pathlib import Path

import pytest

from fixtures.artifacts import ROOT, personagpt
from personagpt.config import load_config, parse_overrides
from personagpt.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_validate(preset):
    cfg = load_config(preset)
    assert cfg.name == preset.stem


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, "data:\n  format: chitchat\n  persnoa: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "data.persnoa" in str(e.value) and "unknown key" in str(e.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        load_config(write(tmp_path, "trian: {}\n"))


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "data:\n  max_length: lots\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "data.max_length" in str(e.value) and "'lots'" in str(e.value)


def test_invalid_value_and_cross_field_rule(tmp_path):
    with pytest.raises(ConfigError, match=r"data.session_gap_seconds"):
        load_config(write(tmp_path, "data:\n  session_gap_seconds: -1\n"))
    with pytest.raises(ConfigError, match=r"data.path is required"):
        load_config(write(tmp_path, "data:\n  format: csv\n"))
    with pytest.raises(ConfigError, match=r"hidden_size.*divisible"):
        load_config(write(tmp_path, "model:\n  hidden_size: 10\n  num_attention_heads: 4\n"))


def test_overrides_typed_and_nested():
    cfg = load_config(ROOT / "configs" / "tiny.yaml",
                      ["data.max_length=128", "data.persona=alice", "model.tie_word_embeddings=false", "seed=7"])
    assert cfg.data.max_length == 128 and cfg.data.persona == "alice"
    assert cfg.model.tie_word_embeddings is False and cfg.seed == 7
    assert parse_overrides(["a.b=[1, 2]", "x=null"]) == [("a.b", [1, 2]), ("x", None)]


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"data.max_lenght: unknown key"):
        load_config(ROOT / "configs" / "tiny.yaml", ["data.max_lenght=3"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["data.max_length"])
    with pytest.raises(ConfigError, match="data.max_length"):
        load_config(None, ["data.max_length=abc"])


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_cli_config_errors_exit_2(tmp_path):
    p = write(tmp_path, "data:\n  bogus: 1\n")
    proc = personagpt("config", "show", "--config", str(p), check=False)
    assert proc.returncode == 2
    assert "data.bogus: unknown key" in proc.stderr and str(p) in proc.stderr
    ok = personagpt("config", "show", "--config", str(ROOT / "configs" / "tiny.yaml"), "data.max_length=99")
    assert "max_length: 99" in ok.stdout
