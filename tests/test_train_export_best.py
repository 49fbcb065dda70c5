"""``train.export: best``: the artifact gets the weights of the lowest validation loss, not the last step's.

The scenario: the session's tiny teacher fine-tuned further at a constant learning rate far too high for it, so
its validation loss gets worse after the first steps (the premise is asserted, not assumed). Real DeepSpeed, 2
ranks. Checked: which evaluation was exported (manifest), that the artifact re-scored with the project's own
perplexity code gives that evaluation's loss, that the consolidation check ran against the best weights' logits,
and that a run SIGKILLed after a best that no checkpoint covers resumes to the same artifact as the straight run.
"""

from __future__ import annotations

import json

import pytest
import torch

from fixtures.train import read_jsonl, tiny_args, train

EVAL_EVERY, STEPS = 1, 12
# the lr warms up to 0.1 over the 12 steps: small steps first, then steps far too large for the trained teacher
# (measured: val loss 6.37 -> 6.60 at step 3, the best after step 0 -> 7.36 at step 12)
ARGS = ["train.zero_stage=2", "train.micro_batch_size=8", "train.grad_accum_steps=1", "train.schedule=constant",
        "train.lr=0.1", f"train.warmup_steps={STEPS}", f"train.max_steps={STEPS}", f"train.eval_every={EVAL_EVERY}",
        "train.save_every=4", "train.keep_last=1", "train.eval_samples=48", "train.eval_batch_size=16",
        "train.export=best"]


def _args(tiny_teacher, tiny_dataset, base, *extra):
    return tiny_args(tiny_dataset, base / "train", base / "model", "model.source=pretrained",
                     f"model.path={tiny_teacher}", *ARGS, *extra)


def _best(evals: list[dict]) -> dict:
    return min((e for e in evals if e["step"] > 0), key=lambda e: (e["loss"], e["step"]))


@pytest.fixture(scope="module")
def best_run(tiny_teacher, tiny_dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("export_best")
    train(*_args(tiny_teacher, tiny_dataset, base))
    return base


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_the_artifact_is_the_best_evaluation_not_the_last(best_run, tiny_dataset):
    evals = [r for r in read_jsonl(best_run / "train" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == list(range(0, STEPS + 1, EVAL_EVERY))
    best = _best(evals)
    assert best["step"] < STEPS and evals[-1]["loss"] > best["loss"], evals  # the premise: it got worse late

    m = json.loads((best_run / "model" / "manifest.json").read_text())["metrics"]
    assert (m["export"], m["exported_step"]) == ("best", best["step"])
    assert m["val_ppl"] == pytest.approx(best["ppl"]) and m["last_val_ppl"] == pytest.approx(evals[-1]["ppl"])
    assert m["export_logits_max_abs_diff"] <= 1e-3  # consolidated best weights vs the engine's logits with them

    # the saved best: its record, its weights and probe logits, nothing of other steps
    kept = sorted(p.name for p in (best_run / "train" / "best").iterdir())
    tag = f"step{best['step']:08d}"
    assert kept == ["eval.json", f"{tag}.probe_logits.pt", f"{tag}.state_dict.pt"]

    # re-scored from the artifact alone with the project's perplexity code: the best evaluation's loss
    from personagpt.data.prepare import read_split
    from personagpt.evaluate import perplexity
    from personagpt.models import load_model

    model, tok = load_model(best_run / "model")
    r = perplexity(model, tok, read_split(tiny_dataset, "val")[:48], batch_size=16)
    assert r["loss"] == pytest.approx(best["loss"], rel=1e-4)
    assert r["loss"] < evals[-1]["loss"]


@pytest.mark.slow
def test_sigkill_after_an_uncheckpointed_best_resumes_to_the_same_artifact(best_run, tiny_teacher, tiny_dataset,
                                                                          tmp_path):
    evals = [r for r in read_jsonl(best_run / "train" / "metrics.jsonl") if r["kind"] == "eval"]
    kill_at = _best(evals)["step"]  # die right after saving the best ...
    assert kill_at >= 3, evals
    save_every = kill_at - 1  # ... with a checkpoint one step before it and none at it
    proc = train(*_args(tiny_teacher, tiny_dataset, tmp_path, f"train.save_every={save_every}",
                        f"train.debug_sigkill_at_step={kill_at}"), check=False)
    assert proc.returncode != 0
    record = tmp_path / "train" / "best" / "eval.json"
    assert json.loads(record.read_text())["step"] == kill_at
    crashed_at = record.stat().st_mtime_ns

    resumed = train(*_args(tiny_teacher, tiny_dataset, tmp_path, f"train.save_every={save_every}"), "--resume")
    assert f"(step {save_every}" in resumed.stdout
    assert record.stat().st_mtime_ns > crashed_at  # the crashed attempt's best was dropped and saved anew
    m = json.loads((tmp_path / "model" / "manifest.json").read_text())["metrics"]
    straight = json.loads((best_run / "model" / "manifest.json").read_text())["metrics"]
    assert m["exported_step"] == straight["exported_step"] == kill_at
    assert m["val_ppl"] == pytest.approx(straight["val_ppl"], rel=1e-6)
    a, b = _weights(tmp_path / "model"), _weights(best_run / "model")
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], rtol=1e-6, atol=1e-7) for k in a)
