"""The distill job: :class:`personagpt.training.job.TrainingJob` (the teacher's engine, checkpoints, resume,
consolidation, logging, plots) with a frozen teacher, a pruned student and the distillation objective.

It plugs in through the job's hooks: ``check_model`` checks the teacher and the student's shape (a
:class:`StudentSpec` in the plan), ``build_models`` loads the teacher, chooses the student's layers and builds
it (a :class:`StudentParts`), ``loss_fn`` is the :class:`DistillObjective`, ``artifact_extra`` the
``distillation`` block of the manifest (teacher and student on the same samples, same code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distill.bridges import bridge_dtype, check_bridgeable, fit_bridges, fitted_layers
from distill.importance import importance_channels, narrowed
from distill.layer_selection import MEASURED
from distill.objective import DistillObjective
from distill.student import build_student, calibration_batches, student_config, student_layers
from personagpt.artifacts import read_manifest
from personagpt.errors import ConfigError
from personagpt.model_artifact import open_model_artifact
from personagpt.training.job import JobData, JobPlan, ModelParts, TrainingJob
from personagpt.training.model_setup import ModelSource


@dataclass(frozen=True)
class StudentSpec:
    """The checked student shape (its layers are placeholders until a measured ``layer_selection`` chooses)."""

    teacher_config: Any
    keep_layers: list[int]
    config: Any
    teacher_vocab: dict[str, int]


@dataclass
class StudentParts(ModelParts):
    teacher: torch.nn.Module = None
    teacher_params: int = 0
    teacher_eval: dict[str, Any] = field(default_factory=dict)  # the teacher on the same validation samples
    keep_layers: list[int] = field(default_factory=list)
    config: Any = None  # the student's transformers config
    info: dict[str, Any] = field(default_factory=dict)  # how it was built (manifest)


class DistillJob(TrainingJob):
    stage = "distill"
    section = "distill"
    title = "student"

    def __init__(self, cfg, resume: bool = False, fresh: bool = False):
        super().__init__(cfg, resume=resume, fresh=fresh, tcfg=cfg.distill)
        self.teacher_dir = Path(cfg.distill.teacher or self.layout.teacher).resolve()

    def default_output(self) -> Path:
        return self.layout.student

    # --- checks -------------------------------------------------------------------------------------------------
    def check_model(self) -> tuple[ModelSource, StudentSpec]:
        """The teacher artifact and the student's shape (errors exit 2 here, before anything is written)."""
        from transformers import AutoConfig

        from personagpt.tokenizer import load_tokenizer

        open_model_artifact(self.teacher_dir, "distill.teacher")
        t_config = AutoConfig.from_pretrained(str(self.teacher_dir))
        keep = student_layers(self.tcfg.student, t_config.num_hidden_layers)
        s_config = student_config(t_config, self.tcfg.student, keep)
        t_vocab = load_tokenizer(self.teacher_dir).get_vocab()
        self._check_student_path(t_config, t_vocab)
        if self.tcfg.student.bridge == "linear" and self.tcfg.student.path is None:
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                check_bridgeable(AutoModelForCausalLM.from_config(s_config))
        return ModelSource("pretrained", self.teacher_dir), StudentSpec(t_config, keep, s_config, t_vocab)

    def _check_student_path(self, teacher_config, teacher_vocab: dict[str, int]) -> None:
        """Logit distillation compares distributions token by token: the vocabularies must be the same."""
        from transformers import AutoConfig

        from personagpt.tokenizer import load_tokenizer

        if self.tcfg.student.path is None:
            return
        s_path = Path(self.tcfg.student.path)
        if not (s_path / "config.json").is_file():
            raise ConfigError(f"distill.student.path: {s_path}: not a Hugging Face model folder")
        s_tok = load_tokenizer(s_path)
        if s_tok.get_vocab() != teacher_vocab or AutoConfig.from_pretrained(str(s_path)).vocab_size \
                != teacher_config.vocab_size:
            raise ConfigError(f"distill.student.path: {s_path}: its vocabulary differs from the teacher's "
                              f"({len(s_tok)} vs {len(teacher_vocab)} tokens); logit distillation needs the same one")

    def default_dataset(self) -> Path | None:
        """The dataset the teacher was trained on (None: prepared from the data: section)."""
        parent = read_manifest(self.teacher_dir).get("parents", {}).get("dataset", {}).get("path")
        return Path(parent) if parent is not None else None

    def check_dataset(self, path: Path, spec: StudentSpec) -> None:
        from personagpt.tokenizer import load_tokenizer

        if load_tokenizer(path / "tokenizer").get_vocab() != spec.teacher_vocab:
            raise ConfigError(f"distill.dataset: {path} was tokenized with a different vocabulary than the teacher "
                              f"{self.teacher_dir}")

    # --- models -------------------------------------------------------------------------------------------------
    def build_models(self, plan: JobPlan, dist, data: JobData) -> StudentParts:
        from personagpt.models import load_model

        dtype = self._dtype(dist)
        spec: StudentSpec = plan.spec
        teacher, _ = load_model(self.teacher_dir, dtype=dtype, device="cpu")
        student, keep, config, info = self._student(teacher, spec, data, dtype, dist)
        parts = StudentParts(model=student, teacher_params=sum(p.numel() for p in teacher.parameters()),
                             keep_layers=keep, config=config, info=info)
        parts.teacher = self._frozen_teacher(teacher, dist)
        parts.teacher_eval = self._teacher_eval(parts.teacher, data, dist)
        return parts

    def _student(self, teacher, spec: StudentSpec, data: JobData, dtype, dist):
        """(student, kept teacher layers, its config, how it was made)."""
        scfg = self.tcfg.student
        if scfg.path is not None:
            from transformers import AutoModelForCausalLM

            student = AutoModelForCausalLM.from_pretrained(str(scfg.path), dtype=dtype)
            return (student, list(range(student.config.num_hidden_layers)), student.config,
                    {"init": "pretrained", "path": str(scfg.path)})
        keep, config, selection = spec.keep_layers, spec.config, None
        if scfg.keep_layers is None and scfg.layer_selection in MEASURED:
            n_layers = len(spec.keep_layers)
            keep, selection = self._measured(teacher, data, dist,
                                             lambda m, b: MEASURED[scfg.layer_selection](m, b, n_layers))
            if dist.is_main:
                print(f"student layers ({scfg.layer_selection}): drop teacher layers {selection.get('dropped')}, "
                      f"keep {keep}", flush=True)
            config = student_config(teacher.config, scfg, keep)
        width, width_info = None, None
        if scfg.width_selection == "importance" and narrowed(teacher.config, config):
            width, width_info = self._measured(teacher, data, dist,
                                               lambda m, b: importance_channels(m, b, keep, config))
            if dist.is_main:
                print(f"student widths (importance): {', '.join(width_info['axes'])} pruned, importance kept "
                      f"{width_info['importance_kept']}", flush=True)
        student, info = build_student(teacher, scfg, seed=self.cfg.seed, layers=keep, width=width)
        if selection is not None:
            info["layer_selection"] = selection
        if width_info is not None:
            info["width_selection"] = width_info
        info["hidden_channels"] = width.hidden if width is not None else None
        if scfg.bridge == "linear" and scfg.init == "teacher" and fitted_layers(keep, scfg.bridge_layers):
            info["bridge"] = self._bridged(teacher, student, keep, info["hidden_channels"], data, dist)
        return student, keep, config, info

    def _bridged(self, teacher, student, keep: list[int], hidden: list[int] | None, data: JobData, dist):
        """Fit the linear bridges (:mod:`distill.bridges`) on the first ``bridge_samples`` training samples,
        each rank on its share of the batches (the sums are all-reduced: every rank gets the same weights)."""
        from personagpt.data.prepare import read_split, split_label_turns

        scfg = self.tcfg.student
        samples = read_split(data.dataset_dir, "train")[: scfg.bridge_samples]
        batches = calibration_batches(data.tokenizer, samples,
                                      split_label_turns(data.dataset_dir, "train", self.cfg.data.label_turns),
                                      self.tcfg.max_length or self.cfg.data.max_length, self.tcfg.eval_batch_size,
                                      dist.device)[dist.rank::dist.world_size]
        info = fit_bridges(teacher.to(dist.device), student.to(dist.device), keep, batches, scfg.bridge_ridge, hidden,
                           bridge_dtype(scfg.bridge_dtype, dist.device), scfg.bridge_layers)
        teacher.to("cpu")
        student.to("cpu")
        info["samples"] = len(samples)
        if dist.is_main:
            print(f"student bridges (linear, {info['layers']}, {info['seconds']} s on {info['tokens']} tokens): "
                  + ", ".join(f"layer {g['student_layer']} over teacher {g['teacher_layers_replaced']}: fit error "
                              f"{g['fit_error_before']} -> {g['fit_error_after']}" for g in info["fits"]), flush=True)
        return info

    def _measured(self, teacher, data: JobData, dist, measure: Callable[[Any, list], tuple[Any, dict[str, Any]]]):
        """``measure(teacher, batches) -> (choice, info)`` on rank 0, on the first ``selection_samples`` training
        samples; every rank gets rank 0's result (the same on a resume: same teacher, same samples)."""
        from personagpt.data.prepare import read_split, split_label_turns

        result = [None]
        if dist.is_main:
            scfg, tok = self.tcfg.student, data.tokenizer
            samples = read_split(data.dataset_dir, "train")[: scfg.selection_samples]
            batches = calibration_batches(tok, samples,
                                          split_label_turns(data.dataset_dir, "train", self.cfg.data.label_turns),
                                          self.tcfg.max_length or self.cfg.data.max_length, self.tcfg.eval_batch_size,
                                          dist.device)
            choice, info = measure(teacher.to(dist.device), batches)
            teacher.to("cpu")
            info["samples"] = len(samples)
            result = [(choice, info)]
        if dist.world_size > 1:
            torch.distributed.broadcast_object_list(result, src=0)
        return result[0]

    def _frozen_teacher(self, teacher, dist):
        teacher.requires_grad_(False)
        teacher.eval()
        if self.tcfg.teacher_zero3 and dist.world_size > 1:
            import deepspeed

            cfg = {"train_micro_batch_size_per_gpu": self.tcfg.micro_batch_size,
                   "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
                   "bf16": {"enabled": next(teacher.parameters()).dtype == torch.bfloat16}}
            engine, *_ = deepspeed.initialize(model=teacher, config=cfg)
            engine.module.eval()
            return engine.module
        return teacher.to(dist.device)

    def _teacher_eval(self, teacher, data: JobData, dist) -> dict[str, Any]:
        """The teacher's perplexity on the student's validation samples, with the same (collective) code."""
        from personagpt.training.evaluation import distributed_perplexity

        return distributed_perplexity(teacher, data.tokenizer, data.val, self.tcfg.eval_batch_size, dist.rank,
                                      dist.world_size, dist.device)

    def skeleton(self, plan: JobPlan, parts: StudentParts, tokenizer):
        from transformers import AutoModelForCausalLM

        from personagpt.training.model_setup import apply_lora

        model = AutoModelForCausalLM.from_config(parts.config, dtype=torch.float32)
        return apply_lora(model, self.tcfg.lora) if self.tcfg.lora.enabled else model

    def loss_fn(self, plan: JobPlan, dist, data: JobData, parts: StudentParts):
        from personagpt.models import eos_token_ids

        tok = data.tokenizer
        return DistillObjective(self.tcfg, parts.teacher, parts.keep_layers, tok.pad_token_id, eos_token_ids(tok),
                                seed=self.cfg.seed * 7919 + dist.rank,
                                synced_gpus=self.tcfg.zero_stage == 3 and dist.world_size > 1,
                                hidden_channels=parts.info.get("hidden_channels"))

    def parents(self, plan: JobPlan, data: JobData) -> dict[str, Path]:
        return {"dataset": data.dataset_dir, "teacher": self.teacher_dir}

    # --- the manifest's distillation block ----------------------------------------------------------------------
    def artifact_extra(self, plan: JobPlan, dist, data: JobData, parts: StudentParts, model) -> dict[str, Any]:
        """Sizes, perplexities (same code, same samples), quality retained, decode speed."""
        from personagpt.models import weight_bytes
        from personagpt.training.metrics import read_metrics

        student_params = sum(p.numel() for p in model.parameters())
        config = parts.config
        out: dict[str, Any] = {
            "teacher": str(self.teacher_dir),
            "student": {**{k: v for k, v in parts.info.items() if k != "hidden_channels"},
                        "keep_layers": parts.keep_layers, "num_hidden_layers": config.num_hidden_layers,
                        "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size},
            "objective": {k: getattr(self.tcfg, k) for k in ("loss", "temperature", "alpha", "kd_positions", "beta",
                                                               "skew", "hidden_weight", "hidden_loss",
                                                               "on_policy_fraction")},
            "teacher_num_parameters": parts.teacher_params, "student_num_parameters": student_params,
            "params_ratio": student_params / parts.teacher_params,
            "teacher_weight_bytes": weight_bytes(self.teacher_dir),
            "teacher_val_ppl": parts.teacher_eval["ppl"], "teacher_val_loss": parts.teacher_eval["loss"],
        }
        evals = [r for r in read_metrics(self.work_dir / "metrics.jsonl") if r["kind"] == "eval"]
        final = self.exported_eval  # the exported weights' evaluation (export: last or best)
        if evals and final:
            # same code, same validation samples: quality retained = teacher ppl / student ppl (1.0 = as good)
            out.update(student_val_ppl=final["ppl"], student_start_val_ppl=evals[0]["ppl"],
                       quality_retained=parts.teacher_eval["ppl"] / final["ppl"], exported_step=final["step"])
        out.update(self._decode_speeds(data, model, dist))
        return {"distillation": out}

    def _decode_speeds(self, data: JobData, model, dist) -> dict[str, Any]:
        """Decode tokens/s of teacher and student on the same prompts and batch."""
        from personagpt.data.prepare import read_split
        from personagpt.evaluate import decode_throughput
        from personagpt.models import load_model

        samples, dev, tok = read_split(data.dataset_dir, "val"), dist.device, data.tokenizer
        teacher, _ = load_model(self.teacher_dir, dtype=next(model.parameters()).dtype, device=dev)
        t_speed = decode_throughput(teacher, tok, samples)
        del teacher
        s_speed = decode_throughput(model.to(dev), tok, samples)
        model.to("cpu")
        return {"teacher_decode_tokens_per_s": round(t_speed["decode_tokens_per_s"], 1),
                "student_decode_tokens_per_s": round(s_speed["decode_tokens_per_s"], 1),
                "decode_speedup": round(s_speed["decode_tokens_per_s"] / t_speed["decode_tokens_per_s"], 3),
                "decode_settings": {k: s_speed[k] for k in ("batch_size", "max_new_tokens", "generated_tokens")}}
