"""A training run from a config, start to artifact. The teacher stage runs it as is; other stages (distillation)
subclass :class:`TrainingJob` and override the hooks (``build_model``, ``build_skeleton``, ``loss_fn``,
``parents``, ``artifact_extra``).

Order of work: every check that can fail on bad input (config keys, paths, batch arithmetic against the world size,
LoRA target modules, resume state) runs before anything is written, on every rank, so a bad run exits with code 2
and leaves no files. Then: dataset (prepared on the fly when ``train.dataset`` is null), model, DeepSpeed engine,
optional resume, the loop, consolidation into the model artifact (written through a staging folder).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from personagpt.artifacts import new_manifest, read_manifest, staging_dir, write_manifest
from personagpt.errors import ArtifactError, ConfigError
from personagpt.models import save_model_folder
from personagpt.paths import LOSS_CURVE, RunLayout
from personagpt.training import checkpoints
from personagpt.training.batching import BatchPlan, TrainData, encode_samples
from personagpt.training.ds_config import build_ds_config, use_torch_adam
from personagpt.training.env import Dist, barrier, expected_world_size, init_distributed, main_first
from personagpt.training.export import gather_state_dict, merged_model, probe_batch, probe_logits
from personagpt.training.loop import (LoopSettings, Trainer, causal_lm_loss, cpu_seconds, lr_lambda,
                                      peak_memory_bytes)
from personagpt.training.metrics import MetricsLogger, plot_loss_curve, read_metrics
from personagpt.training.model_setup import (ModelSource, apply_lora, build_model, count_parameters,
                                             enable_activation_checkpointing, module_names, resolve_model_source,
                                             validate_lora_targets)

# logits of the exported model vs the engine on the same batch: both fp32 here, same weights; only summation
# order may differ (thread count, fused vs separate LoRA matmuls). See tests/test_train_zero.py for the reasoning.
EXPORT_LOGITS_ATOL = 1e-3
# bf16 engines (GPUs): the exported fp32 weights are cast back to bf16 and run on the same device; the same bf16
# kernels on the same weights leave only reduction-order noise, well below bf16's resolution of a logit (~1e-2).
EXPORT_LOGITS_ATOL_BF16 = 5e-2


def _rank0_print(dist: Dist, *args) -> None:
    if dist.is_main:
        print(*args, flush=True)


class TrainingJob:
    stage = "train"  # manifest stage
    section = "train"  # config section of the engine keys (named in errors)
    title = "teacher"

    def __init__(self, cfg, resume: bool = False, fresh: bool = False, tcfg=None):
        self.cfg = cfg
        self.tcfg = tcfg if tcfg is not None else cfg.train
        self.resume, self.fresh = resume, fresh
        self.layout = RunLayout.of(cfg.name)
        self.work_dir = Path(self.tcfg.work_dir or self.layout.work(self.stage)).resolve()
        self.output_dir = Path(self.tcfg.output_dir or self.default_output(self.layout)).resolve()
        self.ckpt_dir = self.work_dir / "checkpoints"

    # --- hooks for other stages ---------------------------------------------------------------------------------
    @staticmethod
    def default_output(layout: RunLayout) -> Path:
        return layout.teacher

    def model_source(self) -> ModelSource:
        return resolve_model_source(self.cfg.model)

    def build_model(self, tokenizer, dtype: torch.dtype):
        return build_model(self.source, self.cfg.model, tokenizer, self.cfg.seed, dtype)

    def build_skeleton(self, tokenizer):
        """Same architecture (and LoRA wrapping) as the trained model, on the CPU in fp32, for consolidation."""
        model = build_model(self.source, self.cfg.model, tokenizer, self.cfg.seed, torch.float32, load_weights=False)
        return apply_lora(model, self.tcfg.lora) if self.tcfg.lora.enabled else model

    def loss_fn(self):
        return causal_lm_loss

    def parents(self) -> dict[str, Path]:
        p = {"dataset": self.dataset_dir}
        if self.source.path is not None and (self.source.path / "manifest.json").is_file():
            p["base_model"] = self.source.path
        return p

    def artifact_extra(self, model=None, tokenizer=None) -> dict[str, Any]:
        """Extra top-level manifest fields, computed on rank 0 with the exported model (CPU, fp32) in hand."""
        return {}

    def resume_fingerprint(self) -> dict[str, Any]:
        """Config that must not change between a checkpoint and its resume (it defines the model's shape)."""
        return {"model": self.cfg.model.model_dump(mode="json")}

    # --- checks (no writes) -------------------------------------------------------------------------------------
    def _check_dataset(self) -> Path | None:
        if self.tcfg.dataset is None:
            return None
        path = Path(self.tcfg.dataset).resolve()
        try:
            read_manifest(path, kind="dataset")
        except ArtifactError as e:
            raise ConfigError(f"{self.section}.dataset: {e}") from None
        return path

    def _check_resume(self) -> checkpoints.CheckpointInfo | None:
        latest = checkpoints.latest_checkpoint(self.ckpt_dir)
        if self.resume:
            if latest is None:
                raise ConfigError(f"--resume: no complete checkpoint in {self.ckpt_dir}")
            st = latest.state
            if st.get("global_batch_size") != self.plan.global_batch_size and self.tcfg.global_batch_size is None:
                # another number of ranks: keep the checkpoint's global batch by adapting the accumulation
                try:
                    self.plan = BatchPlan.resolve(self.tcfg.model_copy(update={
                        "global_batch_size": st.get("global_batch_size"), "grad_accum_steps": None}),
                        self.plan.world_size, self.section)
                except ConfigError:
                    pass
            for key, want in (("global_batch_size", self.plan.global_batch_size), ("zero_stage", self.tcfg.zero_stage),
                              ("lora", self.tcfg.lora.enabled)):
                if st.get(key) != want:
                    raise ConfigError(f"--resume: {latest.path} was trained with {key}={st.get(key)!r}, this run has "
                                      f"{want!r} ({self.section}.{key if key != 'lora' else 'lora.enabled'}); data order, "
                                      f"schedule and states must match to continue exactly")
            if st.get("fingerprint") is not None and st["fingerprint"] != self.resume_fingerprint():
                changed = sorted(k for k in st["fingerprint"] if st["fingerprint"][k] != self.resume_fingerprint().get(k))
                raise ConfigError(f"--resume: {latest.path} was trained with a different {', '.join(changed)}: config; "
                                  f"resume with the config it was started with, or pass --fresh")
            return latest
        if latest is not None and not self.fresh:
            raise ConfigError(f"{self.section}.work_dir: {self.work_dir} holds checkpoints of an earlier run (latest step "
                              f"{latest.step}); pass --resume to continue it or --fresh to start over")
        return None

    def _check_resume_dataset(self, resume_from) -> str | None:
        dataset_hash = read_manifest(self.dataset_dir).get("content_hash")
        if resume_from is not None and resume_from.state.get("dataset_content_hash") not in (None, dataset_hash):
            raise ConfigError(f"--resume: {resume_from.path} was trained on another dataset than {self.dataset_dir} "
                              f"(content hash differs); the data order would not continue")
        return dataset_hash

    # --- the run ------------------------------------------------------------------------------------------------
    def run(self) -> Path:
        from personagpt.data.prepare import prepare, read_split
        from personagpt.device import dtype as pick_dtype
        from personagpt.tokenizer import load_tokenizer

        t_start = time.time()
        tcfg = self.tcfg
        # 1. checks that need no writes (cheap ones first: a bad config fails in seconds)
        world_size = expected_world_size()
        self.source = self.model_source()
        self.dataset_dir = self._check_dataset()
        self.plan = BatchPlan.resolve(tcfg, world_size, self.section)
        resume_from = self._check_resume()
        if tcfg.lora.enabled:
            validate_lora_targets(tcfg.lora, module_names(self.source, self.cfg.model), self.section)
        dist = self.dist = init_distributed(tcfg.comm_shm)
        if dist.world_size != world_size:
            raise RuntimeError(f"WORLD_SIZE says {world_size} ranks, the process group has {dist.world_size}")
        dtype = pick_dtype(tcfg.dtype, dist.device)
        if dtype == torch.bfloat16 and dist.device.type == "cpu":
            raise ConfigError(f"{self.section}.dtype: bfloat16 training on CPU is not supported here (no bf16 reduce "
                              "kernels "
                              "without AVX-512); use auto or float32")
        max_length = tcfg.max_length or self.cfg.data.max_length
        tok = train_enc = val_enc = None
        if self.dataset_dir is not None:  # the batch must fit the training split before anything is written
            tok, train_enc, val_enc = self._load_data(load_tokenizer, read_split, max_length)
            TrainData(train_enc, self.plan, self.cfg.seed, tok.pad_token_id)
            dataset_hash = self._check_resume_dataset(resume_from)

        # 2. writes start here
        if self.fresh and dist.is_main and self.work_dir.exists():
            for name in ("checkpoints", "tensorboard", "metrics.jsonl", LOSS_CURVE, "probe_logits.pt"):
                p = self.work_dir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        barrier()
        if self.dataset_dir is None:
            self.dataset_dir = main_first(dist, self._prepare_dataset, prepare)
            dataset_hash = self._check_resume_dataset(resume_from)
            tok, train_enc, val_enc = self._load_data(load_tokenizer, read_split, max_length)
        data = TrainData(train_enc, self.plan, self.cfg.seed, tok.pad_token_id)
        steps_per_epoch = data.sampler.steps_per_epoch
        total_steps = tcfg.max_steps or max(1, round(tcfg.epochs * steps_per_epoch))

        model = self.build_model(tok, dtype)
        if tcfg.lora.enabled:
            model = apply_lora(model, tcfg.lora)
        if tcfg.activation_checkpointing:
            enable_activation_checkpointing(model)
        n_params, n_trainable = count_parameters(model)
        universal = resume_from is not None and checkpoints.needs_universal(resume_from, dist.world_size)
        if universal:
            main_first(dist, checkpoints.convert_to_universal, resume_from)
        ds_config = build_ds_config(tcfg, self.plan, dtype, dist.device.type, n_params, load_universal=universal)
        import deepspeed

        sched = lr_lambda(tcfg.warmup_steps, total_steps, tcfg.schedule, tcfg.min_lr_ratio)
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, sched))
        start_step, resumed_state = 0, None
        if resume_from is not None:
            resumed_state = checkpoints.load(engine, resume_from, universal)
            start_step = resume_from.step
            if engine.global_steps != start_step:
                raise ArtifactError(f"{resume_from.path}: DeepSpeed restored step {engine.global_steps}, "
                                    f"trainer state says {start_step}")
            _rank0_print(dist, f"resumed from {resume_from.path} (step {start_step}, saved on "
                               f"{resume_from.state['world_size']} rank(s), now {dist.world_size}"
                               f"{', universal checkpoint' if universal else ''})")

        plan_info = {"world_size": dist.world_size, "micro_batch_size": self.plan.micro_batch_size,
                     "grad_accum_steps": self.plan.grad_accum_steps, "global_batch_size": self.plan.global_batch_size,
                     "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                     "train_samples": len(train_enc), "val_samples_scored": len(val_enc),
                     "device": dist.device.type, "dtype": str(dtype).replace("torch.", ""),
                     "zero_stage": tcfg.zero_stage, "offload_optimizer": tcfg.offload_optimizer,
                     "offload_param": tcfg.offload_param, "torch_adam": use_torch_adam(tcfg, dist.device.type),
                     "lora": tcfg.lora.enabled, "activation_checkpointing": tcfg.activation_checkpointing,
                     "num_parameters": n_params, "trainable_parameters": n_trainable,
                     "omp_threads": torch.get_num_threads()}
        logger = None
        if dist.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(exist_ok=True)
            (self.work_dir / "ds_config.json").write_text(json.dumps(ds_config, indent=2) + "\n")
            (self.work_dir / "run.json").write_text(json.dumps(
                {"plan": plan_info, "config": self.cfg.to_dict(), "dataset": str(self.dataset_dir),
                 "model_source": self.source.describe(), "resumed_from": str(resume_from.path) if resume_from else None},
                indent=2) + "\n")
            logger = MetricsLogger(self.work_dir, resume_step=start_step if resume_from else None)
            _rank0_print(dist, f"{self.title}: {n_params / 1e6:.2f}M parameters ({n_trainable / 1e6:.2f}M trainable), "
                               f"ZeRO-{tcfg.zero_stage}, {dist.world_size} rank(s) x {torch.get_num_threads()} "
                               f"thread(s) on {dist.device.type}/{plan_info['dtype']}, global batch "
                               f"{self.plan.global_batch_size} = {self.plan.micro_batch_size} x "
                               f"{self.plan.grad_accum_steps} x {dist.world_size}, {total_steps} steps")
        barrier()

        settings = LoopSettings(total_steps=total_steps, eval_every=tcfg.eval_every, save_every=tcfg.save_every,
                                log_every=tcfg.log_every, keep_last=tcfg.keep_last,
                                eval_batch_size=tcfg.eval_batch_size, eval_before=tcfg.eval_before,
                                seed=self.cfg.seed, debug_sigkill_at_step=tcfg.debug_sigkill_at_step,
                                title=self.title)
        meta = {"world_size": dist.world_size, "zero_stage": tcfg.zero_stage, "lora": tcfg.lora.enabled,
                "global_batch_size": self.plan.global_batch_size, "total_steps": total_steps,
                "fingerprint": self.resume_fingerprint(), "dataset_content_hash": dataset_hash}
        trainer = Trainer(engine, data, val_enc, tok, dist, settings, self.ckpt_dir, logger, self.loss_fn(), meta,
                          t_start=t_start)
        state = trainer.fit(start_step, resumed_state)
        if logger:
            logger.close()

        # 3. consolidation: engine weights -> HF folder; check it against the engine on a fixed batch
        probe = probe_batch(val_enc, tok.pad_token_id)
        engine_logits = probe_logits(engine.module, probe, dist.device)
        sd = gather_state_dict(engine, dist.is_main)
        # per rank: peak memory, and CPU seconds (this process) -- on a shared machine the CPU time is what the run
        # would take on idle cores, the wall time is what it took
        mine = torch.tensor([float(peak_memory_bytes(dist.device)), cpu_seconds()], dtype=torch.float64)
        ranks = [torch.zeros_like(mine) for _ in range(dist.world_size)]
        if dist.world_size > 1:
            torch.distributed.all_gather(ranks, mine)
        else:
            ranks = [mine]
        rank_stats = {"peak_memory_bytes_per_rank": [int(r[0].item()) for r in ranks],
                      "cpu_seconds_per_rank": [round(float(r[1].item()), 1) for r in ranks]}
        out = None
        if dist.is_main:
            out = self._write_artifact(tok, sd, probe, engine_logits, state, plan_info, ds_config,
                                       rank_stats, trainer.wall_seconds(), resume_from)
        barrier()
        return self.output_dir if out is None else out

    # --- helpers ------------------------------------------------------------------------------------------------
    def _prepare_dataset(self, prepare) -> Path:
        out = self.layout.data  # where `personagpt data prepare` puts it in the pipeline
        try:
            m = read_manifest(out, kind="dataset")
            if m.get("config", {}).get("data") == self.cfg.data.model_dump(mode="json") and \
                    m.get("config", {}).get("model") == self.cfg.model.model_dump(mode="json"):
                print(f"reusing dataset {out}", flush=True)
                return out
        except ArtifactError:
            pass
        prepare(self.cfg, out)
        return out

    def _load_data(self, load_tokenizer, read_split, max_length):
        tok = load_tokenizer(self.dataset_dir / "tokenizer")
        label_turns = self.cfg.data.label_turns
        train_enc = encode_samples(tok, read_split(self.dataset_dir, "train"), label_turns, max_length)
        val = read_split(self.dataset_dir, "val")
        if self.tcfg.eval_samples is not None:
            val = val[: self.tcfg.eval_samples]
        val_enc = encode_samples(tok, val, label_turns, max_length)
        if not val_enc:
            raise ConfigError(f"{self.section}.dataset: {self.dataset_dir} has no validation samples to evaluate on "
                              f"(data.val_fraction)")
        return tok, train_enc, val_enc

    def _write_artifact(self, tok, sd, probe, engine_logits, state, plan_info, ds_config, rank_stats, wall,
                        resume_from) -> Path:
        t0 = time.time()
        model = merged_model(lambda: self.build_skeleton(tok), sd, self.tcfg.lora.enabled)
        if plan_info["dtype"] == "float32":
            export_logits, atol = probe_logits(model, probe, "cpu"), EXPORT_LOGITS_ATOL
        else:  # a bf16 engine: run the exported weights as the engine ran them (same dtype and device)
            import copy

            low = copy.deepcopy(model).to(self.dist.device, getattr(torch, plan_info["dtype"]))
            export_logits, atol = probe_logits(low, probe, self.dist.device), EXPORT_LOGITS_ATOL_BF16
            del low
        diff = float((export_logits - engine_logits).abs().max())
        if not diff <= atol:
            raise RuntimeError(f"consolidated model disagrees with the engine on a fixed batch: max |logit diff| "
                               f"{diff:.3g} > {atol}")
        torch.save({"input_ids": probe["input_ids"], "attention_mask": probe["attention_mask"],
                    "logits": engine_logits}, self.work_dir / "probe_logits.pt")
        records = read_metrics(self.work_dir / "metrics.jsonl")
        plot_loss_curve(records, self.work_dir / LOSS_CURVE, title=f"{self.title} ({self.cfg.name})")
        evals = [r for r in records if r["kind"] == "eval"]
        base = next((r for r in evals if r["step"] == 0), None)
        final = evals[-1] if evals else None
        train_tps = state.tokens_seen / state.train_seconds if state.train_seconds else None
        metrics = {
            "val_loss": final["loss"] if final else None, "val_ppl": final["ppl"] if final else None,
            "base_val_loss": base["loss"] if base else None, "base_val_ppl": base["ppl"] if base else None,
            "val_tokens": final["tokens"] if final else None, "train_loss_last": state.last_train_loss,
            "steps": state.step, "tokens_seen": state.tokens_seen, "label_tokens_seen": state.label_tokens_seen,
            "train_tokens_per_s": round(train_tps, 1) if train_tps else None,
            "train_seconds": round(state.train_seconds, 1), "eval_seconds": round(state.eval_seconds, 1),
            "checkpoint_seconds": round(state.checkpoint_seconds, 1),
            "wall_seconds": round(wall, 1),
            **rank_stats,
            "export_logits_max_abs_diff": diff,
        }
        with staging_dir(self.output_dir) as tmp:
            block = save_model_folder(model, tok, tmp)
            (tmp / "training").mkdir()
            shutil.copy2(self.work_dir / "metrics.jsonl", tmp / "training" / "metrics.jsonl")
            shutil.copy2(self.work_dir / LOSS_CURVE, tmp / "training" / LOSS_CURVE)
            (tmp / "training" / "ds_config.json").write_text(json.dumps(ds_config, indent=2) + "\n")
            manifest = new_manifest(
                "model", self.stage, config=self.cfg.to_dict(), parents=self.parents(), metrics=metrics,
                model=block, world_size=plan_info["world_size"], wall_time_s=metrics["wall_seconds"],
                tokens_per_s=metrics["train_tokens_per_s"],
                training={**plan_info, "model_source": self.source.describe(), "work_dir": str(self.work_dir),
                          "resumed_from": str(resume_from.path) if resume_from else None,
                          "export_seconds": round(time.time() - t0, 1)},
                **self.artifact_extra(model, tok))
            write_manifest(tmp, manifest)
        print(f"{self.title} artifact: {self.output_dir}  val ppl {metrics['base_val_ppl'] or float('nan'):.2f} -> "
              f"{metrics['val_ppl'] or float('nan'):.2f}, {metrics['train_tokens_per_s']} tokens/s, "
              f"export max |dlogit| {diff:.2e}", flush=True)
        return self.output_dir
