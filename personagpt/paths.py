"""Where things live: the run folder of a config (:class:`RunLayout`) and the caches ($PERSONAGPT_CACHE).

Every stage, the pipeline, the report and the Kubernetes manifests (k8s/base/pipeline.env: ``RUN_DIR`` is a run
folder) use these names; nothing else spells a run-folder path. A run folder is ``runs/NAME`` relative to the
working directory, NAME being the config's ``name``:

    runs/NAME/
      data/                      dataset artifact                       (personagpt data prepare)
      train/                     the train stage's work folder: checkpoints/, metrics.jsonl, tensorboard/,
                                 loss_curve.png                          (train.work_dir)
      teacher/                   teacher model artifact                 (train.output_dir)
      distill/                   the distill stage's work folder        (distill.work_dir)
      student/                   student model artifact                 (distill.output_dir)
      quantized-METHOD/          quantized model artifact, METHOD = gptq | int8 | onnx (quantize.output_dir)
      quantized-teacher-METHOD/  the quantized teacher, made when the student fails the quality gate
      promotion/                 the quality gate's decision (done.json)      (personagpt promote)
      promoted -> quantized-...  the model to serve: a symlink to the artifact the gate chose
      eval/                      persona evaluation (personagpt eval): MODEL.json per model, reference.json,
                                 eval.md, models.png, done.json
      loadtest/MODEL/PROFILE/    one load test of the served MODEL (loadtest.out)
      chat/                      saved chat transcripts
      bench/STAGE/               a stage benchmark's results (STAGE/bench.py)
      logs/STAGE.log             each pipeline stage's output
      pipeline.json, .lock       the pipeline's record of its stages, and its lock on the folder
      report.md                  what a user opens after `make demo`

Artifacts are folders with a manifest.json (personagpt/artifacts.py); work folders are not artifacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path("runs")
LOSS_CURVE = "loss_curve.png"  # in a training work folder, and copied into its artifact's training/


def cache_dir() -> Path:
    return Path(os.environ.get("PERSONAGPT_CACHE", ROOT / ".cache")).resolve()


def model_cache_dir(name: str) -> Path:
    """A converted pretrained model (personagpt/gguf_models.py): $PERSONAGPT_CACHE/models/NAME."""
    return cache_dir() / "models" / name


def smollm2_dir() -> Path:
    return model_cache_dir("smollm2-135m-instruct")


def gemma3_dir() -> Path:
    return model_cache_dir("gemma-3-270m")


def served_name(model: str) -> str:
    """A served model id as a folder name (ids may hold '/' or ':')."""
    return model.replace("/", "_").replace(":", "_")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (absolute once :meth:`of` resolved it)."""

    root: Path

    @classmethod
    def of(cls, name: str, cwd: str | Path | None = None) -> RunLayout:
        """The run folder of config name ``name``: runs/NAME under the working directory (or ``cwd``)."""
        return cls((Path(cwd or ".") / RUNS / name).resolve())

    # artifacts
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def student(self) -> Path:
        return self.root / "student"

    def quantized(self, method: str) -> Path:
        return self.root / f"quantized-{method}"

    def quantized_teacher(self, method: str) -> Path:
        return self.root / f"quantized-teacher-{method}"

    @property
    def promoted(self) -> Path:
        """The model to serve: a symlink to the artifact the quality gate chose (personagpt/promotion.py)."""
        return self.root / "promoted"

    @property
    def promotion(self) -> Path:
        return self.root / "promotion"

    # work and result folders
    def work(self, stage: str) -> Path:
        """A training stage's work folder (``train`` or ``distill``): checkpoints, metrics, plots."""
        return self.root / stage

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def loadtest_root(self) -> Path:
        return self.root / "loadtest"

    def loadtest(self, model: str, profile: str) -> Path:
        return self.loadtest_root / served_name(model) / profile

    def bench(self, stage: str) -> Path:
        """A stage benchmark's results (train/bench.py, distill/bench.py, quantize/bench.py, loadtest/bench.py)."""
        return self.root / "bench" / stage

    @property
    def chat(self) -> Path:
        return self.root / "chat"

    # the pipeline's own files
    def log(self, stage: str) -> Path:
        return self.root / "logs" / f"{stage}.log"

    @property
    def state(self) -> Path:
        return self.root / "pipeline.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def report(self) -> Path:
        return self.root / "report.md"
