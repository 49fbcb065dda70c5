"""int8 W8A8 (llm-compressor, compressed-tensors) on the tiny model: int8 weights per channel on disk, per-token
int8 activations when it runs, perplexity within 1%, loads in transformers and generates."""

from __future__ import annotations

import json

import pytest
import torch

from personagpt.artifacts import read_manifest
from personagpt.data.prepare import read_split
from personagpt.evaluate import perplexity
from personagpt.models import load_model
from personagpt.template import prompt_messages
from quantize.int8 import w8a8_layers


def test_int8_checkpoint_format(int8_artifact, quant_teacher):
    m = read_manifest(int8_artifact, kind="model")
    q = m["model"]["quantization"]
    assert (q["method"], q["format"], q["scheme"], q["bits"]) == ("int8", "compressed-tensors", "W8A8", 8)
    assert m["parents"]["model"]["content_hash"] == read_manifest(quant_teacher)["content_hash"]
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (int8_artifact / name).is_file(), name
    qc = json.loads((int8_artifact / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "int-quantized"
    assert qc["ignore"] == ["lm_head"]
    (group,) = qc["config_groups"].values()
    w, a = group["weights"], group["input_activations"]
    assert (w["num_bits"], w["type"], w["strategy"], w["symmetric"], w["dynamic"]) == (8, "int", "channel", True, False)
    assert (a["num_bits"], a["type"], a["strategy"], a["dynamic"]) == (8, "int", "token", True)
    from safetensors import safe_open

    with safe_open(str(int8_artifact / "model.safetensors"), "pt") as f:
        w = f.get_tensor("model.layers.0.mlp.down_proj.weight")
        s = f.get_tensor("model.layers.0.mlp.down_proj.weight_scale")
    assert w.dtype == torch.int8 and w.shape == (64, 192) and s.shape == (64, 1)
    assert w.abs().max().item() == 127  # symmetric per-channel: each row's largest weight maps to +-127


def test_int8_loads_and_quantizes_activations(int8_artifact, tiny_dataset):
    model, tok = load_model(int8_artifact)
    val = read_split(tiny_dataset, "val")
    ids = tok.apply_chat_template(prompt_messages(val[1]["messages"]), add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    assert w8a8_layers(model) == model.config.num_hidden_layers * 7
    with torch.no_grad():
        w8a8 = model(**ids).logits
        for mod in model.modules():
            if getattr(mod, "quantization_scheme", None) is not None:
                mod.quantization_enabled = False  # int8 weights (decompressed), float activations
        weights_only = model(**ids).logits
        for mod in model.modules():
            if getattr(mod, "quantization_scheme", None) is not None:
                mod.quantization_enabled = True
    # per-token activation rounding is active: the served (W8A8) arithmetic is what gets measured
    assert 1e-5 < (w8a8 - weights_only).abs().max().item() < 1.0
    out = model.generate(**ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    m = read_manifest(int8_artifact)
    ev = m["metrics"]["eval"]
    ppl = perplexity(model, tok, val[: ev["samples"]], ev["max_length"], label_turns=ev["label_turns"])
    assert ppl["ppl"] == pytest.approx(m["metrics"]["after"]["ppl"], rel=1e-4)
    assert m["metrics"]["after"]["w8a8_layers"] == model.config.num_hidden_layers * 7


def test_int8_perplexity_and_size(int8_artifact):
    """Bound: at most +1% perplexity (the issue's goal for W8A8). int8 keeps 255 levels per output channel and per
    token; SmoothQuant moves activation outliers into the weights first. Measured here: ~+0.0x%. A model whose
    weights or activation scales were wrong would not come near it."""
    m = read_manifest(int8_artifact)["metrics"]
    before, after = m["before"], m["after"]
    assert before["tokens"] == after["tokens"] > 1000
    assert after["ppl"] <= before["ppl"] * 1.01, m["ppl_increase_pct"]
    assert after["ppl"] != before["ppl"]  # quantization happened
    # int8 linears + the fp32 embedding/lm_head table (40% of this tiny model's parameters)
    assert after["weight_bytes"] < 0.60 * before["weight_bytes"]


def test_int8_unquantized_tensors_in_bfloat16(int8_artifact):
    """quantize.dtype auto: everything that is not an int8 Linear (the tied embedding/head table, norms) is stored
    in bfloat16, read from the safetensors header; the int8 Linears keep fp32 scales. The manifest's bytes are the
    bytes on disk."""
    from quantize.sizes import _tensors

    tensors = _tensors(int8_artifact)
    assert tensors["model.embed_tokens.weight"][0] == "BF16" and "lm_head.weight" not in tensors  # tied: stored once
    floats = {n: d for n, (d, _, _) in tensors.items() if d.startswith(("F", "BF"))}
    assert {d for n, d in floats.items() if not n.endswith("_scale")} == {"BF16"}
    assert {d for n, (d, _, _) in tensors.items() if n.endswith("proj.weight")} == {"I8"}
    m = read_manifest(int8_artifact)
    assert m["model"]["quantization"]["unquantized_dtype"] == "bfloat16"
    assert m["metrics"]["after"]["weight_bytes"] == sum(p.stat().st_size for p in int8_artifact.glob("*.safetensors"))


@pytest.mark.parametrize("method, key", [("int8", "lm_head"), ("int8", "embedding"), ("gptq", "embedding"),
                                         ("gptq", "lm_head")])
def test_unsupported_components_are_refused(method, key, quant_teacher, tiny_dataset, tmp_path):
    from fixtures.quantize import quantize_cli

    out = tmp_path / "q"
    proc = quantize_cli(f"method={method}", f"model={quant_teacher}", f"dataset={tiny_dataset}", f"output_dir={out}",
                        f"{key}=true", check=False)
    assert proc.returncode == 2 and f"quantize.{key}" in proc.stderr and not out.exists()
