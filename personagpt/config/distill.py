"""``distill:`` — knowledge distillation into a smaller student (``deepspeed distill/run.py``).

The optimisation keys (ZeRO stage, offload, batch sizes, schedule, eval/checkpoint cadence, LoRA...) are the
``train:`` section's — distillation runs on the same engine — plus the teacher, the student's shape and the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from personagpt.config.base import Section
from personagpt.config.train import TrainConfig


class StudentConfig(Section):
    keep_layers: list[int] | None = Field(
        None, description="teacher layer indices the student keeps (depth pruning); default: chosen by "
                          "layer_selection")
    layer_selection: Literal["angular", "influence", "even"] = Field(
        "angular", description="without keep_layers: angular = drop the contiguous block whose input and output "
                               "hidden states are closest in angle on selection_samples training samples (Gromov "
                               "et al. 2024); influence = drop the layers of lowest block influence 1 - cos(input, "
                               "output), not necessarily contiguous (ShortGPT, Men et al. 2024); even = spread "
                               "evenly (first and last kept). The last layer is always kept")
    selection_samples: int = Field(32, ge=1, description="training samples the measured selections (angular or "
                                                         "influence layers, importance widths) run on")
    num_hidden_layers: int | None = Field(None, ge=1, description="student depth when keep_layers is not given "
                                                                   "(default: half the teacher's)")
    hidden_size: int | None = Field(None, ge=8, description="width pruning (default: the teacher's)")
    intermediate_size: int | None = Field(None, ge=8)
    num_attention_heads: int | None = Field(None, ge=1)
    num_key_value_heads: int | None = Field(None, ge=1)
    width_selection: Literal["importance", "first"] = Field(
        "importance", description="which teacher channels a width-pruned student keeps: importance = the MLP "
                                  "neurons, attention heads (whole KV groups) and hidden channels of largest "
                                  "activation on selection_samples training samples (Minitron); first = the "
                                  "leading channels of every dimension")
    bridge: Literal["linear", "none"] = Field(
        "none", description="linear = refit the down-projection of the kept layer before each run of dropped "
                              "layers so its output matches the teacher's hidden state after them, by ridge "
                              "regression on bridge_samples training samples (ReplaceMe-style, no extra "
                              "parameters; Llama-style layers only; distill/bridges.py); none = the kept "
                              "layers as copied")
    bridge_layers: Literal["gaps", "all"] = Field(
        "gaps", description="which kept layers get their down-projection refit: gaps = the layer before each run of "
                            "dropped layers; all = every kept layer, in order, each to the teacher's hidden state "
                            "after its own teacher layer (layer-wise reconstruction: later layers also absorb "
                            "what the earlier bridges could not fit)")
    bridge_samples: int = Field(512, ge=1, description="training samples the linear bridges are fitted on")
    bridge_dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="dtype of the teacher's and student's forwards in the bridge fit (the sums and "
                               "the solve stay fp32/fp64); auto = bfloat16 where it is native (CUDA, a CPU with "
                               "avx512_bf16 or AMX), else float32")
    bridge_ridge: float = Field(1.0e-3, ge=0.0, description="ridge strength pulling a bridged down-projection "
                                                           "toward the teacher's, relative to the mean diagonal "
                                                           "of its input Gram matrix")
    init: Literal["teacher", "scratch"] = Field(
        "teacher", description="teacher: copy (and slice) the teacher's weights; scratch: random init, same shape")
    path: Path | None = Field(None, description="a ready student model folder instead of pruning the teacher "
                                                 "(its vocabulary must equal the teacher's)")


class DistillConfig(TrainConfig):
    section_name: ClassVar[str] = "distill"

    dataset: Path | None = Field(
        None, description="dataset artifact; null: the one the teacher was trained on (its manifest's parent), else "
                          "runs/NAME/data")
    work_dir: Path | None = Field(None, description="the stage's work folder: checkpoints, metrics, TensorBoard, "
                                                     "plots; default runs/NAME/distill")
    output_dir: Path | None = Field(None, description="the student model artifact; default runs/NAME/student")
    teacher: Path | None = Field(None, description="teacher model artifact; default runs/NAME/teacher")
    student: StudentConfig = Field(default_factory=StudentConfig)
    loss: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"] = Field(
        "forward_kl", description="divergence between teacher and student next-token distributions")
    temperature: float = Field(2.0, gt=0, description="softmax temperature; the KD term is scaled by T²")
    alpha: float = Field(0.5, ge=0, le=1, description="loss = alpha·KD + (1 - alpha)·cross-entropy")
    kd_positions: Literal["assistant", "all"] = Field(
        "assistant", description="positions the KD term covers: assistant = those predicting a persona (label) "
                                 "token; all = every real token (Minitron; the teacher's distribution is "
                                 "informative at every position). KD is the mean over its positions, CE stays on "
                                 "the persona's tokens, so both keep one scale")
    beta: float = Field(0.5, ge=0, le=1, description="generalized JSD interpolation (0: forward KL, 1: reverse KL)")
    skew: float = Field(0.1, ge=0, lt=1, description="skew KL mixing weight")
    hidden_weight: float = Field(0.0, ge=0, description="weight of the hidden-state loss (0: off)")
    hidden_loss: Literal["cosine", "mse"] = "cosine"
    on_policy_fraction: float = Field(
        0.0, ge=0, le=1, description="λ: share of batches where the student samples the replies and the teacher "
                                     "scores them (GKD)")
    on_policy_max_new_tokens: int = Field(32, ge=1)
    on_policy_temperature: float = Field(1.0, gt=0)
    teacher_zero3: bool = Field(False, description="partition the frozen teacher with ZeRO-3 across ranks")

    @model_validator(mode="after")
    def _check_student(self):
        if self.student.keep_layers is not None and self.student.num_hidden_layers is not None \
                and len(self.student.keep_layers) != self.student.num_hidden_layers:
            raise ValueError("distill.student.keep_layers and distill.student.num_hidden_layers disagree")
        return self
