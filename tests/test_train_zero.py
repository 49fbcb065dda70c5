"""Teacher training on 2 CPU ranks through the real ``deepspeed`` launcher: ZeRO-2 (the session's tiny teacher) and
ZeRO-3 with optimizer + parameter offload and activation checkpointing.

Logit tolerance. The engine computes in fp32 on the CPU, and consolidation copies those exact fp32 weights (ZeRO-3
partitions are gathered, not re-derived), so the exported model holds bit-identical weights. The only freedom left
is summation order inside matmuls (the test process may use a different thread count than the ranks did, and
oneDNN picks blocking by shape and threads). fp32 rounding differences of that kind are ~1e-7 relative per dot
product; over a 4-layer model with logits of magnitude ~10 they stay below 1e-5 absolute. We allow 1e-4, and check
that the tolerance means something: the trained weights move the same logits by orders of magnitude more than it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures.train import TEACHER_ARGS, TEACHER_SAVE_EVERY, TEACHER_STEPS, read_jsonl, tiny_args, train

LOGIT_ATOL = 1e-4


def engine_vs_export(run_dir: Path, artifact: Path) -> tuple[float, torch.Tensor]:
    """Max |logit difference| between the engine (saved at the end of training) and the artifact loaded with
    plain transformers, on the same fixed batch of validation samples."""
    from transformers import AutoModelForCausalLM

    probe = torch.load(run_dir / "probe_logits.pt")
    model = AutoModelForCausalLM.from_pretrained(str(artifact), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    logits = logits * probe["attention_mask"][..., None]
    return float((logits - probe["logits"]).abs().max()), logits


def assert_learns(train_recs: list[dict], eval_recs: list[dict]) -> None:
    first = sum(r["loss"] for r in train_recs[:3]) / 3
    last = sum(r["loss"] for r in train_recs[-3:]) / 3
    assert last < first - 0.3, f"train loss did not decrease: first steps {first:.3f}, last steps {last:.3f}"
    assert eval_recs[0]["step"] == 0 and eval_recs[-1]["step"] == train_recs[-1]["step"]
    assert eval_recs[-1]["ppl"] < 0.8 * eval_recs[0]["ppl"], eval_recs


def test_zero2_teacher_learns_and_exports(tiny_teacher_run, tiny_dataset, tiny_model_artifact):
    run, art = tiny_teacher_run, tiny_teacher_run.artifact
    trains, evals = run.metrics("train"), run.metrics("eval")
    assert [r["step"] for r in trains] == list(range(1, TEACHER_STEPS + 1))
    assert [r["step"] for r in evals] == [0, TEACHER_SAVE_EVERY, TEACHER_STEPS]
    assert_learns(trains, evals)
    # warmup then cosine, as configured
    assert trains[0]["lr"] < trains[4]["lr"] and trains[-1]["lr"] < trains[6]["lr"]

    m = run.manifest()
    assert m["kind"] == "model" and m["stage"] == "train"
    assert Path(m["parents"]["dataset"]["path"]) == tiny_dataset.resolve()
    assert m["world_size"] == 2 and m["training"]["zero_stage"] == 2 and m["training"]["global_batch_size"] == 16
    assert m["metrics"]["val_ppl"] == pytest.approx(evals[-1]["ppl"])
    assert m["metrics"]["base_val_ppl"] == pytest.approx(evals[0]["ppl"])
    assert m["metrics"]["train_tokens_per_s"] > 0 and m["wall_time_s"] > 0 and m["tokens_per_s"] > 0
    assert m["git_commit"] and m["content_hash"]
    assert len(m["metrics"]["peak_memory_bytes_per_rank"]) == 2
    assert m["model"]["num_parameters"] > 100_000 and m["model"]["dtype"] == "float32"

    # Hugging Face folder: safetensors, tokenizer with the chat template, generation config ending turns
    from transformers import GenerationConfig

    from personagpt.models import eos_token_ids
    from personagpt.tokenizer import load_tokenizer

    assert (art / "model.safetensors").is_file() and not list(art.glob("*.bin"))
    tok = load_tokenizer(art)
    assert "<|im_start|>" in tok.chat_template
    gen = GenerationConfig.from_pretrained(str(art))
    assert sorted(gen.eos_token_id) == sorted(eos_token_ids(tok)) and tok.convert_tokens_to_ids("<|im_end|>") in \
        gen.eos_token_id
    assert (art / "training" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run.work_dir / "loss_curve.png").is_file()
    assert list((run.work_dir / "tensorboard").glob("events.out.tfevents.*"))

    # checkpoints: every 12 steps, keep the last 2, both complete
    ckpts = sorted(p.name for p in (run.work_dir / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["step00000012", "step00000024"]
    assert (run.work_dir / "checkpoints" / "latest").read_text() == "step00000024"
    state = json.loads((run.work_dir / "checkpoints" / "step00000024" / "trainer_state.json").read_text())
    assert state["step"] == 24 and state["world_size"] == 2

    # the consolidated artifact computes what the engine computed
    diff, logits = engine_vs_export(run.work_dir, art)
    assert diff <= LOGIT_ATOL, diff
    assert m["metrics"]["export_logits_max_abs_diff"] <= LOGIT_ATOL
    from transformers import AutoModelForCausalLM

    probe = torch.load(run.work_dir / "probe_logits.pt")
    init = AutoModelForCausalLM.from_pretrained(str(tiny_model_artifact), dtype=torch.float32).eval()
    with torch.no_grad():
        init_logits = init(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    moved = float((init_logits * probe["attention_mask"][..., None] - logits).abs().max())
    assert moved > 1000 * LOGIT_ATOL, f"training barely changed the logits ({moved})"


@pytest.mark.slow
def test_zero3_offload_matches_zero2_and_exports(tiny_dataset, tiny_teacher_run, tmp_path):
    """ZeRO-3 with parameters and optimizer states offloaded to the CPU and activation checkpointing: the same
    optimisation as ZeRO-2 (identical losses during warmup, where the schedule does not depend on the step count),
    partitioned parameters in the checkpoint, and a consolidated artifact equal to the engine."""
    steps = 8
    args = [a for a in TEACHER_ARGS if not a.startswith(("train.zero_stage", "train.max_steps", "train.eval_every",
                                                          "train.save_every"))]
    train(*tiny_args(tiny_dataset, tmp_path / "train", tmp_path / "teacher", *args, "train.zero_stage=3",
                     "train.offload_optimizer=true", "train.offload_param=true", "train.activation_checkpointing=true",
                     f"train.max_steps={steps}", "train.eval_every=0", "train.save_every=0"))
    recs = read_jsonl(tmp_path / "train" / "metrics.jsonl")
    trains = [r for r in recs if r["kind"] == "train"]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert len(trains) == steps and [e["step"] for e in evals] == [0, steps]
    assert_learns(trains, evals)
    zero2 = tiny_teacher_run.metrics("train")
    for a, b in zip(trains[:4], zero2[:4], strict=True):  # warmup steps 1-4 (warmup_steps=5)
        assert a["lr"] == pytest.approx(b["lr"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
    assert evals[0]["loss"] == pytest.approx(tiny_teacher_run.metrics("eval")[0]["loss"], rel=1e-6)

    ds = json.loads((tmp_path / "train" / "ds_config.json").read_text())["zero_optimization"]
    assert ds["stage"] == 3 and ds["offload_param"]["device"] == "cpu" and ds["offload_optimizer"]["device"] == "cpu"
    ckpt = tmp_path / "train" / "checkpoints" / f"step{steps:08d}"
    # ZeRO-3: each rank saved its own parameter partition
    assert {p.name for p in ckpt.glob("zero_pp_rank_*_mp_rank_00_model_states.pt")} == {
        "zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"}
    m = json.loads((tmp_path / "teacher" / "manifest.json").read_text())
    assert m["training"]["zero_stage"] == 3 and m["training"]["offload_param"] and m["training"][
        "activation_checkpointing"]
    diff, _ = engine_vs_export(tmp_path / "train", tmp_path / "teacher")
    assert diff <= LOGIT_ATOL, diff
    # weights of the consolidated ZeRO-3 model are whole tensors, not partitions
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "teacher" / "model.safetensors"))
    assert sd["model.layers.0.mlp.gate_proj.weight"].shape == (192, 64)
