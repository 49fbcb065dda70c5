"""LoRA fine-tuning of a pretrained checkpoint (the session's tiny teacher) under ``torchrun`` with ZeRO-1: the
adapters train, get merged into the base weights at the end, and the merged folder is a plain Hugging Face model
that loads and generates."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_zero import LOGIT_ATOL, engine_vs_export

from fixtures.artifacts import TINY, TINY_OVERRIDES
from fixtures.train import read_jsonl, train

TARGETS = ["q_proj", "v_proj", "up_proj"]


@pytest.mark.slow
def test_lora_merges_loads_and_generates(tiny_teacher, tiny_dataset, tmp_path):
    run_dir, out = tmp_path / "train", tmp_path / "lora"
    steps = 8
    train("--config", str(TINY), *TINY_OVERRIDES, "model.source=pretrained", f"model.path={tiny_teacher}",
          f"train.dataset={tiny_dataset}", f"train.work_dir={run_dir}", f"train.output_dir={out}",
          "train.zero_stage=1", "train.lora.enabled=true", "train.lora.r=8", "train.lora.alpha=32",
          f"train.lora.target_modules=[{','.join(TARGETS)}]", "train.lr=2e-2", "train.warmup_steps=1",
          "train.micro_batch_size=8", f"train.max_steps={steps}", "train.eval_every=0", "train.save_every=0",
          "train.eval_samples=48", launcher="torchrun", nproc=2)

    plan = json.loads((run_dir / "run.json").read_text())["plan"]
    assert plan["lora"] and plan["world_size"] == 2 and plan["zero_stage"] == 1
    assert 0 < plan["trainable_parameters"] < 0.2 * plan["num_parameters"]
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[-1]["loss"] < evals[0]["loss"], evals  # the adapters improve on the teacher they start from

    # merged: a plain model folder (no adapter files, no peft key names), same shapes as the base
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    from safetensors.torch import load_file

    merged, base = load_file(str(out / "model.safetensors")), load_file(str(tiny_teacher / "model.safetensors"))
    assert set(merged) == set(base) and all(merged[k].shape == base[k].shape for k in base)
    for k in base:  # exactly the targeted projections changed
        changed = not torch.equal(merged[k], base[k])
        assert changed == any(f".{t}." in k for t in TARGETS), k
    m = json.loads((out / "manifest.json").read_text())
    assert m["training"]["lora"] and m["parents"]["base_model"]["path"] == str(tiny_teacher.resolve())

    diff, _ = engine_vs_export(run_dir, out)  # merged weights compute what base + adapters computed
    assert diff <= LOGIT_ATOL, diff

    from personagpt.models import eos_token_ids, load_model

    model, tok = load_model(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "hey, how is it going?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=16, do_sample=False)
    new = gen[0, ids["input_ids"].shape[1]:]
    assert len(new) >= 1
    assert set(model.generation_config.eos_token_id) == set(eos_token_ids(tok))
