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


def test_a_fresh_start_deletes_old_checkpoints_before_it_is_recorded(tmp_path):
    """A changed key starts distill fresh. The runner deletes the old config's checkpoints before it records the new
    attempt, so an attempt that dies before its command's own ``--fresh`` cleanup (here: the command exits 1 at
    once, as if killed) leaves nothing the next run, seeing an unfinished attempt with the new fingerprint, would
    resume: that run starts with ``--fresh``, not ``--resume``. (Found on the demo: a run killed seconds into a
    changed distill stage made the next one resume the old lr's step-16 checkpoint.)"""
    import json
    import sys

    from personagpt.errors import StageFailed
    from personagpt.paths import RunLayout
    from personagpt.pipeline.runner import Pipeline
    from personagpt.pipeline.stage import CommandStage
    from personagpt.training.checkpoints import STATE_FILE, latest_checkpoint, tag_for

    layout = RunLayout(tmp_path / "run")
    ckpts = layout.work("distill") / "checkpoints"
    (ckpts / tag_for(16)).mkdir(parents=True)
    (ckpts / tag_for(16) / STATE_FILE).write_text(json.dumps({"step": 16}))
    (ckpts / "latest").write_text(tag_for(16))
    assert latest_checkpoint(ckpts) is not None
    argvs = []

    def command(ctx):
        argvs.append(argv := [sys.executable, "-c", "raise SystemExit(1)"])
        return argv

    stage = CommandStage("distill", lambda ctx: layout.root / "student", ("distill",), (), command, checkpoints=True)
    ctx = Ctx(TINY, [], load_config(TINY, []), layout, 1)
    layout.state.parent.mkdir(parents=True, exist_ok=True)
    layout.state.write_text(json.dumps({"distill": {"fingerprint": "the old config", "status": "done"}}))
    for attempt in range(2):
        with pytest.raises(StageFailed):
            Pipeline(ctx, [stage]).run()
        assert latest_checkpoint(ckpts) is None, attempt
        rec = json.loads(layout.state.read_text())["distill"]
        assert rec["status"] == "failed" and rec["fingerprint"] == fingerprint(stage, ctx, {}), rec
    assert [a[-1] for a in argvs] == ["--fresh", "--fresh"]
