"""The distill job: :class:`personagpt.training.job.TrainingJob` (the teacher's engine, checkpoints, resume,
consolidation, logging, plots) with a frozen teacher, a pruned student and the distillation objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill.objective import DistillObjective
from distill.student import build_student, student_config, student_layers
from personagpt.artifacts import read_manifest
from personagpt.model_artifact import open_model_artifact
from personagpt.paths import RunLayout
from personagpt.errors import ConfigError
from personagpt.training.job import TrainingJob
from personagpt.training.model_setup import ModelSource


class DistillJob(TrainingJob):
    stage = "distill"
    section = "distill"
    title = "student"

    def __init__(self, cfg, resume: bool = False, fresh: bool = False):
        super().__init__(cfg, resume=resume, fresh=fresh, tcfg=cfg.distill)
        self.teacher_dir = Path(cfg.distill.teacher or self.layout.teacher).resolve()
        self.teacher = None
        self.teacher_eval: dict[str, Any] | None = None

    @staticmethod
    def default_output(layout: RunLayout) -> Path:
        return layout.student

    # --- checks -------------------------------------------------------------------------------------------------
    def model_source(self) -> ModelSource:
        """The teacher artifact (validated before anything is written). LoRA targets are checked against it."""
        open_model_artifact(self.teacher_dir, "distill.teacher")
        from transformers import AutoConfig

        tcfg = AutoConfig.from_pretrained(str(self.teacher_dir))
        self.keep_layers = student_layers(self.tcfg.student, tcfg.num_hidden_layers)
        self.student_cfg = student_config(tcfg, self.tcfg.student, self.keep_layers)  # shape errors exit 2 here
        self._check_vocab(tcfg)
        return ModelSource("pretrained", self.teacher_dir)

    def _check_vocab(self, teacher_config) -> None:
        """Logit distillation compares distributions token by token: the vocabularies must be the same."""
        from personagpt.tokenizer import load_tokenizer

        t_tok = load_tokenizer(self.teacher_dir)
        s_path = self.tcfg.student.path
        if s_path is not None:
            from transformers import AutoConfig

            s_path = Path(s_path)
            if not (s_path / "config.json").is_file():
                raise ConfigError(f"distill.student.path: {s_path}: not a Hugging Face model folder")
            s_tok = load_tokenizer(s_path)
            if s_tok.get_vocab() != t_tok.get_vocab() or AutoConfig.from_pretrained(str(s_path)).vocab_size \
                    != teacher_config.vocab_size:
                raise ConfigError(f"distill.student.path: {s_path}: its vocabulary differs from the teacher's "
                                  f"({len(s_tok)} vs {len(t_tok)} tokens); logit distillation needs the same one")
        self.t_vocab = t_tok.get_vocab()

    def _check_dataset(self) -> Path | None:
        """``distill.dataset``, by default the dataset the teacher was trained on; its tokenizer must be the
        teacher's."""
        from personagpt.tokenizer import load_tokenizer

        if self.tcfg.dataset is None:
            parent = read_manifest(self.teacher_dir).get("parents", {}).get("dataset", {}).get("path")
            if parent is None:
                return None  # prepared from the data: section (with the teacher's tokenizer source)
            self.tcfg.dataset = Path(parent)
        path = super()._check_dataset()
        if load_tokenizer(path / "tokenizer").get_vocab() != self.t_vocab:
            raise ConfigError(f"distill.dataset: {path} was tokenized with a different vocabulary than the teacher "
                              f"{self.teacher_dir}")
        return path

    # --- hooks --------------------------------------------------------------------------------------------------
    def build_model(self, tokenizer, dtype: torch.dtype):
        from personagpt.models import load_model

        teacher, _ = load_model(self.teacher_dir, dtype=dtype, device="cpu")
        if self.tcfg.student.path is not None:
            from transformers import AutoModelForCausalLM

            student = AutoModelForCausalLM.from_pretrained(str(self.tcfg.student.path), dtype=dtype)
            self.student_info = {"init": "pretrained", "path": str(self.tcfg.student.path)}
            self.student_cfg = student.config
            self.keep_layers = list(range(student.config.num_hidden_layers))
        else:
            selection = None
            if self.tcfg.student.keep_layers is None and self.tcfg.student.layer_selection == "angular":
                self.keep_layers, selection = self._angular_layers(teacher, tokenizer)
                self.student_cfg = student_config(teacher.config, self.tcfg.student, self.keep_layers)
            student, self.student_info = build_student(teacher, self.tcfg.student, seed=self.cfg.seed,
                                                       layers=self.keep_layers)
            if selection is not None:
                self.student_info["layer_selection"] = selection
        self.teacher_params = sum(p.numel() for p in teacher.parameters())
        self._setup_teacher(teacher)
        return student

    def _angular_layers(self, teacher, tokenizer) -> tuple[list[int], dict[str, Any]]:
        """Rank 0 measures the teacher on the first training samples and every rank keeps its choice (the same
        on a resume: same teacher, same samples)."""
        from distill.layer_selection import angular_keep_layers
        from personagpt.data.prepare import read_split
        from personagpt.evaluate import collate
        from personagpt.training.batching import encode_samples

        result = [None]
        if self.dist.is_main:
            scfg = self.tcfg.student
            samples = read_split(self.dataset_dir, "train")[: scfg.selection_samples]
            enc = encode_samples(tokenizer, samples, self.cfg.data.label_turns,
                                 self.tcfg.max_length or self.cfg.data.max_length)
            enc.sort(key=lambda e: len(e["input_ids"]))
            bs, dev = self.tcfg.eval_batch_size, self.dist.device
            batches = []
            for i in range(0, len(enc), bs):
                b = collate(enc[i:i + bs], tokenizer.pad_token_id)
                batches.append((b["input_ids"].to(dev), b["attention_mask"].to(dev)))
            keep, info = angular_keep_layers(teacher.to(dev), batches, len(self.keep_layers))
            teacher.to("cpu")
            info["samples"] = len(enc)
            result = [(keep, info)]
            print(f"student layers (angular): drop teacher layers {info.get('dropped')}, keep {keep}", flush=True)
        if self.dist.world_size > 1:
            torch.distributed.broadcast_object_list(result, src=0)
        return result[0]

    def _setup_teacher(self, teacher) -> None:
        teacher.requires_grad_(False)
        teacher.eval()
        dist = self.dist
        if self.tcfg.teacher_zero3 and dist.world_size > 1:
            import deepspeed

            cfg = {"train_micro_batch_size_per_gpu": self.tcfg.micro_batch_size,
                   "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
                   "bf16": {"enabled": next(teacher.parameters()).dtype == torch.bfloat16}}
            engine, *_ = deepspeed.initialize(model=teacher, config=cfg)
            engine.module.eval()
            self.teacher = engine.module
        else:
            self.teacher = teacher.to(dist.device)
        # the teacher's own perplexity on the same validation samples, with the same (collective) code
        from personagpt.data.prepare import read_split
        from personagpt.tokenizer import load_tokenizer
        from personagpt.training.batching import encode_samples
        from personagpt.training.evaluation import distributed_perplexity

        tok = load_tokenizer(self.dataset_dir / "tokenizer")
        val = read_split(self.dataset_dir, "val")
        if self.tcfg.eval_samples is not None:
            val = val[: self.tcfg.eval_samples]
        enc = encode_samples(tok, val, self.cfg.data.label_turns, self.tcfg.max_length or self.cfg.data.max_length)
        self.teacher_eval = distributed_perplexity(self.teacher, tok, enc, self.tcfg.eval_batch_size, dist.rank,
                                                   dist.world_size, dist.device)

    def build_skeleton(self, tokenizer):
        from transformers import AutoModelForCausalLM

        from personagpt.training.model_setup import apply_lora

        model = AutoModelForCausalLM.from_config(self.student_cfg, dtype=torch.float32)
        return apply_lora(model, self.tcfg.lora) if self.tcfg.lora.enabled else model

    def loss_fn(self):
        from personagpt.models import eos_token_ids
        from personagpt.tokenizer import load_tokenizer

        tok = load_tokenizer(self.dataset_dir / "tokenizer")
        return DistillObjective(self.tcfg, self.teacher, self.keep_layers, tok.pad_token_id, eos_token_ids(tok),
                                seed=self.cfg.seed * 7919 + self.dist.rank,
                                synced_gpus=self.tcfg.zero_stage == 3 and self.dist.world_size > 1)

    def parents(self) -> dict[str, Path]:
        return {"dataset": self.dataset_dir, "teacher": self.teacher_dir}

    def artifact_extra(self, model=None, tokenizer=None) -> dict[str, Any]:
        """Distillation metrics: sizes, perplexities (same code, same samples), quality retained, decode speed."""
        from personagpt.data.prepare import read_split
        from personagpt.evaluate import decode_throughput
        from personagpt.models import load_model, weight_bytes

        student_params = sum(p.numel() for p in model.parameters()) if model is not None else None
        out: dict[str, Any] = {
            "teacher": str(self.teacher_dir),
            "student": {**self.student_info, "keep_layers": self.keep_layers,
                        "num_hidden_layers": self.student_cfg.num_hidden_layers,
                        "hidden_size": self.student_cfg.hidden_size,
                        "intermediate_size": self.student_cfg.intermediate_size},
            "objective": {k: getattr(self.tcfg, k) for k in ("loss", "temperature", "alpha", "beta", "skew",
                                                               "hidden_weight", "hidden_loss", "on_policy_fraction")},
            "teacher_num_parameters": self.teacher_params, "student_num_parameters": student_params,
            "params_ratio": student_params / self.teacher_params if student_params else None,
            "teacher_weight_bytes": weight_bytes(self.teacher_dir),
            "teacher_val_ppl": self.teacher_eval["ppl"] if self.teacher_eval else None,
            "teacher_val_loss": self.teacher_eval["loss"] if self.teacher_eval else None,
        }
        from personagpt.training.metrics import read_metrics

        evals = [r for r in read_metrics(self.work_dir / "metrics.jsonl") if r["kind"] == "eval"]
        if evals and self.teacher_eval:
            # same code, same validation samples: quality retained = teacher ppl / student ppl (1.0 = as good)
            out.update(student_val_ppl=evals[-1]["ppl"], student_start_val_ppl=evals[0]["ppl"],
                       quality_retained=self.teacher_eval["ppl"] / evals[-1]["ppl"])
        if model is not None and tokenizer is not None:
            samples = read_split(self.dataset_dir, "val")
            dev = self.dist.device
            teacher, _ = load_model(self.teacher_dir, dtype=next(model.parameters()).dtype, device=dev)
            t_speed = decode_throughput(teacher, tokenizer, samples)
            del teacher
            s_speed = decode_throughput(model.to(dev), tokenizer, samples)
            model.to("cpu")
            out.update(teacher_decode_tokens_per_s=round(t_speed["decode_tokens_per_s"], 1),
                       student_decode_tokens_per_s=round(s_speed["decode_tokens_per_s"], 1),
                       decode_speedup=round(s_speed["decode_tokens_per_s"] / t_speed["decode_tokens_per_s"], 3),
                       decode_settings={k: s_speed[k] for k in ("batch_size", "max_new_tokens", "generated_tokens")})
        return {"distillation": out}
