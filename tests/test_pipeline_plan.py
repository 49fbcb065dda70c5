"""Which stages a changed key reruns (fingerprints), without running anything."""

import pytest

from fixtures.artifacts import TINY
from personagpt.config import load_config
from personagpt.pipeline.context import Ctx
from personagpt.pipeline.runner import fingerprint
from personagpt.pipeline.stages import STAGES

NAMES = [s.name for s in STAGES]


def plan(overrides, state):
    ctx = Ctx(TINY, overrides, load_config(TINY, overrides), None, 2)
    return {s.name: fingerprint(s, ctx, state) for s in STAGES}


def stale(base_overrides, new_overrides, new_hashes=None):
    """Stages whose fingerprint changes, given the output hashes upstream stages produce."""
    state = {n: {"output_hash": f"hash-{n}"} for n in NAMES}
    before = plan(base_overrides, state)
    state.update({n: {"output_hash": h} for n, h in (new_hashes or {}).items()})
    after = plan(new_overrides, state)
    return [n for n in NAMES if before[n] != after[n]]


@pytest.mark.parametrize("key, own", [
    ("data.max_length=200", ["data", "train", "distill", "quantize", "promote"]),
    ("model.num_hidden_layers=3", ["data", "train"]),           # the dataset's hash may not change: train must
    ("train.lr=0.01", ["train"]),
    ("distill.alpha=0.9", ["distill"]),
    ("quantize.n_calibration=48", ["quantize", "promote"]),   # the teacher is quantized the same way
    ("pipeline.quantize_method=onnx", ["quantize", "promote", "eval"]),   # eval's "quantized" is quantized-METHOD
    ("pipeline.min_quality_retained=0.5", ["promote"]),
    ("eval.candidates=12", ["eval"]),
    ("model.path=/models/x", ["data", "train", "eval"]),     # eval's "base" is the model source
    ("loadtest.users=3", ["loadtest"]),
    ("serve.max_num_seqs=8", ["loadtest"]),
    ("pipeline.serve=[distill,quantize]", ["loadtest"]),
])
def test_a_changed_key_reruns_its_stages(key, own):
    assert stale([], [key]) == own


def test_a_new_artifact_reruns_everything_downstream():
    assert stale([], [], {"train": "new"}) == ["distill", "promote", "eval", "loadtest"]
    assert stale([], [], {"distill": "new"}) == ["quantize", "promote", "eval", "loadtest"]
    assert stale([], [], {"quantize": "new"}) == ["promote", "eval", "loadtest"]
    assert stale([], [], {"promote": "new"}) == ["loadtest"]
    assert stale([], [], {"data": "new"}) == ["train", "distill", "quantize", "promote", "eval", "loadtest"]


def test_eval_runs_after_the_gate_and_before_the_load_test():
    assert NAMES == ["data", "train", "distill", "quantize", "promote", "eval", "loadtest"]


def test_unchanged_is_stable():
    assert stale(["train.lr=0.01"], ["train.lr=0.01"]) == []


def test_pipeline_serve_names_stages_like_stages_does():
    from personagpt.errors import ConfigError

    assert load_config(TINY, ["pipeline.serve=[train,quantize]"]).pipeline.serve == ["train", "quantize"]
    with pytest.raises(ConfigError, match="'quantized' names a model; pipeline.serve names the stage that makes it, "
                                          "as --stages does: 'quantize'"):
        load_config(TINY, ["pipeline.serve=[quantized]"])
