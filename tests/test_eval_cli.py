"""``personagpt eval`` as a user runs it: a real run on the tiny preset's artifacts (files, figures, intervals), and
bad input (unknown model name, missing artifact, no base for a scratch model, an endpoint that does not answer,
too few samples for N): exit 2, a message naming the key or path, nothing written."""

from __future__ import annotations

import json
import os

import pytest

from fixtures.artifacts import TINY, personagpt
from personagpt.network import free_port

SMALL = ["eval.contexts=12", "eval.ranking_contexts=6", "eval.candidates=5", "eval.max_new_tokens=8",
         "eval.ppl_samples=16", "eval.bootstrap_resamples=200", "eval.classifier_max_per_class=500"]


@pytest.fixture()
def run_dir(tmp_path, tiny_dataset, tiny_model_artifact):
    """A run folder holding the tiny dataset and a model artifact as its teacher (no student, no quantized)."""
    (tmp_path / "data").symlink_to(tiny_dataset)
    (tmp_path / "teacher").symlink_to(tiny_model_artifact)
    return tmp_path


def evaluate(run_dir, *args, check=False):
    """key=value overrides first (argparse takes the positional overrides in one run), then the options."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    options = [a for a in args if a not in overrides]
    return personagpt("eval", "--config", str(TINY), *SMALL, *overrides, "--run-dir", str(run_dir), *options,
                      check=check)


def nothing_written(run_dir):
    assert not (run_dir / "eval").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".eval.")]


def test_eval_writes_every_figure_with_its_interval(run_dir):
    proc = evaluate(run_dir, "--models", "teacher", check=True)
    out = run_dir / "eval"
    assert sorted(p.name for p in out.iterdir()) == ["done.json", "eval.md", "models.png", "reference.json",
                                                     "teacher.json"]
    r = json.loads((out / "teacher.json").read_text())
    assert r["hits_at_1"]["n"] == 5 and r["hits_at_1"]["chance"] == 0.2 and r["hits_at_1"]["contexts"] == 6
    for m in (r["hits_at_1"]["others"], r["hits_at_1"]["same_persona"], r["generation"]["greedy"]["authorship"],
              r["generation"]["T=0.7"]["style"]["distinct_2"]):
        assert m["low"] <= m["value"] <= m["high"]
    assert set(r["generation"]) == {"greedy", "T=0.7"} and len(r["generation"]["greedy"]["replies"]) == 12
    assert r["ppl"]["ppl"] > 1 and r["weight_bytes"] > 0 and r["generation"]["greedy"]["speed"]["decode_tokens_per_s"]
    ref = json.loads((out / "reference.json").read_text())
    assert 0 <= ref["authorship_ceiling"]["value"] <= 1 and ref["classifier"]["chance"] == 0.5
    md = (out / "eval.md").read_text()
    assert "| teacher |" in md and "| *real persona* |" in md and "hits@1 of 5" in md
    assert json.loads(proc.stdout.strip().splitlines()[-1])["models"] == ["teacher"]


@pytest.mark.parametrize("args, message", [
    (["--models", "teacher,bogus"], "eval.models: unknown model 'bogus'"),
    (["--models", "student"], "eval.models: student: "),
    (["--models", "base"], "eval.models: base: model.source is scratch"),
    (["--models", "teacher", "eval.candidates=100000"], "eval.candidates: "),
    (["--models", "teacher", "eval.dataset=/nonexistent"], "eval.dataset: /nonexistent"),
])
def test_bad_input_exit_2_nothing_written(run_dir, args, message):
    proc = evaluate(run_dir, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    nothing_written(run_dir)


def test_endpoint_that_does_not_answer(run_dir):
    url = f"http://127.0.0.1:{free_port()}"
    proc = personagpt("eval", "--config", str(TINY), "--run-dir", str(run_dir), "--models", "endpoint", "--url", url,
                      *SMALL, check=False, env={**os.environ, "PERSONAGPT_API_KEY": ""})
    assert proc.returncode == 2 and f"--url {url}: the endpoint does not answer" in proc.stderr, proc.stderr[-2000:]
    nothing_written(run_dir)


def test_artifacts_carry_the_measured_decoding_defaults(tiny_model_artifact):
    from transformers import GenerationConfig

    from personagpt.models import DECODING_DEFAULTS

    gen = GenerationConfig.from_pretrained(str(tiny_model_artifact))
    assert gen.do_sample is True
    assert {k: getattr(gen, k) for k in DECODING_DEFAULTS} == DECODING_DEFAULTS
