"""A training run from a config, start to artifact, in six named phases:

    check -> start_distributed -> load_data -> build_engine -> train -> export

``check`` validates everything that can fail on bad input (config keys, paths, batch arithmetic against the world
size, LoRA target modules, resume state) on every rank and returns a frozen :class:`JobPlan`; nothing is written
before it returns, so a bad run exits with code 2 and leaves no files. ``load_data`` may write one thing: the
dataset artifact, when ``train.dataset`` is null and runs/NAME/data is missing. Only then does ``--fresh`` clear
the work folder. The artifact is written through a staging folder, so a killed run leaves none half-written.

The teacher stage runs this class as is. Another stage (distillation) subclasses it and plugs in by returning
values from these hooks, never by setting attributes the base class reads later:

- ``check_model() -> (ModelSource, spec)``: where the starting weights come from and the stage's own checked
  facts (distill: the student's shape), kept in the plan;
- ``default_dataset()`` and ``check_dataset(path, spec)``;
- ``build_models(plan, dist, data) -> ModelParts``: the model to train, plus whatever else the stage needs
  (distill: the frozen teacher and its measurements);
- ``loss_fn(plan, dist, data, parts)``, ``skeleton(plan, parts, tokenizer)`` (the architecture the consolidated
  weights are loaded into), ``parents(plan, data)`` and ``artifact_extra(...)`` (manifest fields).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personagpt.artifacts import new_manifest, read_manifest, staging_dir, write_manifest
from personagpt.errors import ArtifactError, ConfigError
from personagpt.models import save_model_folder
from personagpt.paths import LOSS_CURVE, RunLayout
from personagpt.training import checkpoints
from personagpt.training.batching import BatchPlan, JobData, TrainData, encode_samples
from personagpt.training.best import FOLDER as BEST_FOLDER
from personagpt.training.best import BestWeights
from personagpt.training.ds_config import build_ds_config, use_torch_adam
from personagpt.training.env import (
    Dist,
    barrier,
    check_accelerate_launch,
    expected_world_size,
    init_distributed,
    main_first,
)
from personagpt.training.export import gather_state_dict, merged_model, probe_batch, probe_logits
from personagpt.training.loop import LoopSettings, Trainer, causal_lm_loss, cpu_seconds, lr_lambda, peak_memory_bytes
from personagpt.training.metrics import MetricsLogger, plot_loss_curve, read_metrics
from personagpt.training.model_setup import (
    ModelSource,
    apply_lora,
    build_model,
    cast_weights,
    count_parameters,
    enable_activation_checkpointing,
    module_names,
    resolve_model_source,
    validate_lora_targets,
)

# logits of the exported model vs the engine on the same batch: both fp32 here, same weights; only summation
# order may differ (thread count, fused vs separate LoRA matmuls). See tests/test_train_zero.py for the reasoning.
EXPORT_LOGITS_ATOL = 1e-3
# bf16 engines (GPUs): the exported fp32 weights are cast back to bf16 as the engine's model was built (buffers such
# as the rotary frequencies stay fp32) and run on the same device; the same bf16 kernels on the same weights leave
# only reduction-order noise, well below bf16's resolution of a logit (~1e-2).
EXPORT_LOGITS_ATOL_BF16 = 5e-2
# what --fresh removes from the work folder
WORK_FILES = ("checkpoints", "tensorboard", "metrics.jsonl", LOSS_CURVE, "probe_logits.pt", BEST_FOLDER)


@dataclass(frozen=True)
class JobPlan:
    """Everything decided by the checks, before anything is written."""

    world_size: int
    source: ModelSource
    dataset_dir: Path | None  # None: prepared from the data: section into the run folder
    batch: BatchPlan
    resume_from: checkpoints.CheckpointInfo | None
    max_length: int
    spec: Any = None  # the stage's own checked facts (check_model's second value)


@dataclass
class ModelParts:
    """What ``build_models`` returns: the model to train (subclasses add what their stage needs)."""

    model: torch.nn.Module


@dataclass
class Engine:
    engine: Any  # the DeepSpeed engine
    ds_config: dict[str, Any]
    dtype: torch.dtype
    start_step: int
    resumed_state: dict[str, Any] | None
    info: dict[str, Any]  # the plan as recorded in run.json and the manifest's training block


class TrainingJob:
    stage = "train"  # manifest stage, and the work folder's name in the run layout
    section = "train"  # config section of the engine keys (named in errors)
    title = "teacher"

    def __init__(self, cfg, resume: bool = False, fresh: bool = False, tcfg=None):
        self.cfg = cfg
        self.tcfg = tcfg if tcfg is not None else cfg.train
        self.resume, self.fresh = resume, fresh
        self.layout = RunLayout.of(cfg.name)
        self.work_dir = Path(self.tcfg.work_dir or self.layout.work(self.stage)).resolve()
        self.output_dir = Path(self.tcfg.output_dir or self.default_output()).resolve()
        self.ckpt_dir = self.work_dir / "checkpoints"
        self.exported_eval: dict[str, Any] | None = None  # the evaluation of the exported weights (export)

    # --- the run ------------------------------------------------------------------------------------------------
    def run(self) -> Path:
        t_start = time.time()
        plan = self.check()
        dist = self.start_distributed(plan)
        data = self.load_data(plan, dist)
        self.clear_work_dir(dist)
        parts = self.build_models(plan, dist, data)
        eng = self.build_engine(plan, dist, data, parts)
        trainer = self.train(plan, dist, data, parts, eng, t_start)
        return self.export(plan, dist, data, parts, eng, trainer)

    # --- hooks for other stages ---------------------------------------------------------------------------------
    def default_output(self) -> Path:
        return self.layout.teacher

    def check_model(self) -> tuple[ModelSource, Any]:
        return resolve_model_source(self.cfg.model), None

    def default_dataset(self) -> Path | None:
        return None

    def check_dataset(self, path: Path, spec: Any) -> None:
        """Stage-specific checks of the dataset artifact (its manifest is already validated)."""

    def build_models(self, plan: JobPlan, dist: Dist, data: JobData) -> ModelParts:
        dtype = self._dtype(dist)
        return ModelParts(build_model(plan.source, self.cfg.model, data.tokenizer, self.cfg.seed, dtype))

    def skeleton(self, plan: JobPlan, parts: ModelParts, tokenizer) -> torch.nn.Module:
        """Same architecture (and LoRA wrapping) as the trained model, on the CPU in fp32, for consolidation."""
        model = build_model(plan.source, self.cfg.model, tokenizer, self.cfg.seed, torch.float32, load_weights=False)
        return apply_lora(model, self.tcfg.lora) if self.tcfg.lora.enabled else model

    def loss_fn(self, plan: JobPlan, dist: Dist, data: JobData, parts: ModelParts):
        return causal_lm_loss

    def parents(self, plan: JobPlan, data: JobData) -> dict[str, Path]:
        p = {"dataset": data.dataset_dir}
        if plan.source.path is not None and (plan.source.path / "manifest.json").is_file():
            p["base_model"] = plan.source.path
        return p

    def artifact_extra(self, plan: JobPlan, dist: Dist, data: JobData, parts: ModelParts, model) -> dict[str, Any]:
        """Extra top-level manifest fields, computed on rank 0 with the exported model (CPU, fp32) in hand."""
        return {}

    def resume_fingerprint(self) -> dict[str, Any]:
        """Config that must not change between a checkpoint and its resume (it defines the model's shape)."""
        return {"model": self.cfg.model.model_dump(mode="json")}

    # --- phase 1: checks (no writes) ----------------------------------------------------------------------------
    def check(self) -> JobPlan:
        tcfg = self.tcfg
        world_size = expected_world_size()
        check_accelerate_launch(tcfg, self.section)
        source, spec = self.check_model()
        dataset_dir = self._checked_dataset(spec)
        batch = BatchPlan.resolve(tcfg, world_size, self.section)
        resume_from, batch = self._checked_resume(batch)
        if tcfg.lora.enabled:
            validate_lora_targets(tcfg.lora, module_names(source, self.cfg.model), self.section)
        return JobPlan(world_size=world_size, source=source, dataset_dir=dataset_dir, batch=batch,
                       resume_from=resume_from, max_length=tcfg.max_length or self.cfg.data.max_length, spec=spec)

    def _checked_dataset(self, spec: Any) -> Path | None:
        given = self.tcfg.dataset or self.default_dataset()
        if given is None:
            return None
        path = Path(given).resolve()
        try:
            read_manifest(path, kind="dataset")
        except ArtifactError as e:
            raise ConfigError(f"{self.section}.dataset: {e}") from None
        self.check_dataset(path, spec)
        return path

    def _checked_resume(self, batch: BatchPlan) -> tuple[checkpoints.CheckpointInfo | None, BatchPlan]:
        latest = checkpoints.latest_checkpoint(self.ckpt_dir)
        if not self.resume:
            if latest is not None and not self.fresh:
                raise ConfigError(f"{self.section}.work_dir: {self.work_dir} holds checkpoints of an earlier run "
                                  f"(latest step {latest.step}); pass --resume to continue it or --fresh to start over")
            return None, batch
        if latest is None:
            raise ConfigError(f"--resume: no complete checkpoint in {self.ckpt_dir}")
        st = latest.state
        if st.get("global_batch_size") != batch.global_batch_size and self.tcfg.global_batch_size is None:
            # another number of ranks: keep the checkpoint's global batch by adapting the accumulation
            try:
                batch = BatchPlan.resolve(self.tcfg.model_copy(update={
                    "global_batch_size": st.get("global_batch_size"), "grad_accum_steps": None}),
                    batch.world_size, self.section)
            except ConfigError:
                pass
        for key, want in (("global_batch_size", batch.global_batch_size), ("zero_stage", self.tcfg.zero_stage),
                          ("lora", self.tcfg.lora.enabled)):
            if st.get(key) != want:
                raise ConfigError(f"--resume: {latest.path} was trained with {key}={st.get(key)!r}, this run has "
                                  f"{want!r} ({self.section}.{key if key != 'lora' else 'lora.enabled'}); data order, "
                                  f"schedule and states must match to continue exactly")
        fp = self.resume_fingerprint()
        if st.get("fingerprint") is not None and st["fingerprint"] != fp:
            changed = sorted(k for k in st["fingerprint"] if st["fingerprint"][k] != fp.get(k))
            raise ConfigError(f"--resume: {latest.path} was trained with a different {', '.join(changed)}: config; "
                              f"resume with the config it was started with, or pass --fresh")
        return latest, batch

    # --- phase 2: the process group -----------------------------------------------------------------------------
    def start_distributed(self, plan: JobPlan) -> Dist:
        dist = init_distributed(self.tcfg.comm_shm)
        if dist.world_size != plan.world_size:
            raise RuntimeError(f"WORLD_SIZE says {plan.world_size} ranks, the process group has {dist.world_size}")
        self._dtype(dist)  # refuses an unsupported dtype before any write
        return dist

    def _dtype(self, dist: Dist) -> torch.dtype:
        from personagpt.device import dtype as pick_dtype

        dtype = pick_dtype(self.tcfg.dtype, dist.device)
        if dtype == torch.bfloat16 and dist.device.type == "cpu":
            raise ConfigError(f"{self.section}.dtype: bfloat16 training on CPU is not supported here (no bf16 reduce "
                              "kernels without AVX-512); use auto or float32")
        return dtype

    # --- phase 3: data ------------------------------------------------------------------------------------------
    def load_data(self, plan: JobPlan, dist: Dist) -> JobData:
        """Tokenizer and encoded splits; the batch must fit the training split and a resumed run must see the
        same dataset (both checked before the work folder is touched)."""
        from personagpt.data.prepare import read_split, split_label_turns
        from personagpt.tokenizer import load_tokenizer

        dataset_dir = plan.dataset_dir or main_first(dist, self._prepare_dataset)
        dataset_hash = read_manifest(dataset_dir).get("content_hash")
        saved_hash = plan.resume_from.state.get("dataset_content_hash") if plan.resume_from else None
        if saved_hash not in (None, dataset_hash):
            raise ConfigError(f"--resume: {plan.resume_from.path} was trained on another dataset than {dataset_dir} "
                              f"(content hash differs); the data order would not continue")
        tok = load_tokenizer(dataset_dir / "tokenizer")
        label_turns = self.cfg.data.label_turns  # session windows (train) label every persona turn: the manifest
        train_enc = encode_samples(tok, read_split(dataset_dir, "train"),
                                   split_label_turns(dataset_dir, "train", label_turns), plan.max_length)
        val = read_split(dataset_dir, "val")
        if self.tcfg.eval_samples is not None:
            val = val[: self.tcfg.eval_samples]
        val_enc = encode_samples(tok, val, split_label_turns(dataset_dir, "val", label_turns), plan.max_length)
        if not val_enc:
            raise ConfigError(f"{self.section}.dataset: {dataset_dir} has no validation samples to evaluate on "
                              f"(data.val_fraction)")
        train = TrainData(train_enc, plan.batch, self.cfg.seed, tok.pad_token_id)
        return JobData(dataset_dir, dataset_hash, tok, train, val_enc)

    def _prepare_dataset(self) -> Path:
        from personagpt.data.prepare import prepare

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

    def clear_work_dir(self, dist: Dist) -> None:
        """--fresh: the earlier run's checkpoints, metrics and plots go (every check has passed by now)."""
        if self.fresh and dist.is_main and self.work_dir.exists():
            for name in WORK_FILES:
                p = self.work_dir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        barrier()

    # --- phase 4: the engine ------------------------------------------------------------------------------------
    def build_engine(self, plan: JobPlan, dist: Dist, data: JobData, parts: ModelParts) -> Engine:
        import deepspeed

        tcfg = self.tcfg
        model = parts.model
        if tcfg.lora.enabled:
            model = parts.model = apply_lora(model, tcfg.lora)
        if tcfg.activation_checkpointing:
            enable_activation_checkpointing(model)
        n_params, n_trainable = count_parameters(model)
        dtype = self._dtype(dist)
        universal = plan.resume_from is not None and checkpoints.needs_universal(plan.resume_from, dist.world_size)
        if universal:
            main_first(dist, checkpoints.convert_to_universal, plan.resume_from)
        ds_config = build_ds_config(tcfg, plan.batch, dtype, dist.device.type, n_params, load_universal=universal)
        total_steps = self.total_steps(data)
        sched = lr_lambda(tcfg.warmup_steps, total_steps, tcfg.schedule, tcfg.min_lr_ratio)
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, sched))
        start_step, resumed_state = 0, None
        if plan.resume_from is not None:
            resumed_state, start_step = self._resume(engine, plan.resume_from, universal, dist)
        info = {"world_size": dist.world_size, "micro_batch_size": plan.batch.micro_batch_size,
                "grad_accum_steps": plan.batch.grad_accum_steps, "global_batch_size": plan.batch.global_batch_size,
                "steps_per_epoch": data.train.sampler.steps_per_epoch, "total_steps": total_steps,
                "train_samples": len(data.train.encoded), "val_samples_scored": len(data.val),
                "device": dist.device.type, "dtype": str(dtype).replace("torch.", ""),
                "zero_stage": tcfg.zero_stage, "offload_optimizer": tcfg.offload_optimizer,
                "offload_param": tcfg.offload_param, "torch_adam": use_torch_adam(tcfg, dist.device.type),
                "lora": tcfg.lora.enabled, "activation_checkpointing": tcfg.activation_checkpointing,
                "num_parameters": n_params, "trainable_parameters": n_trainable,
                "omp_threads": torch.get_num_threads()}
        return Engine(engine, ds_config, dtype, start_step, resumed_state, info)

    def total_steps(self, data: JobData) -> int:
        return self.tcfg.max_steps or max(1, round(self.tcfg.epochs * data.train.sampler.steps_per_epoch))

    def _resume(self, engine, info: checkpoints.CheckpointInfo, universal: bool, dist: Dist) -> tuple[dict, int]:
        state = checkpoints.load(engine, info, universal)
        if engine.global_steps != info.step:
            raise ArtifactError(f"{info.path}: DeepSpeed restored step {engine.global_steps}, trainer state says "
                                f"{info.step}")
        if dist.is_main:
            print(f"resumed from {info.path} (step {info.step}, saved on {info.state['world_size']} rank(s), now "
                  f"{dist.world_size}{', universal checkpoint' if universal else ''})", flush=True)
        return state, info.step

    # --- phase 5: the loop --------------------------------------------------------------------------------------
    def train(self, plan: JobPlan, dist: Dist, data: JobData, parts: ModelParts, eng: Engine,
              t_start: float) -> Trainer:
        tcfg, info = self.tcfg, eng.info
        logger = self._start_logging(plan, dist, eng) if dist.is_main else None
        barrier()
        settings = LoopSettings(
            total_steps=info["total_steps"], eval_every=tcfg.eval_every, save_every=tcfg.save_every,
            log_every=tcfg.log_every, keep_last=tcfg.keep_last, eval_batch_size=tcfg.eval_batch_size,
            eval_before=tcfg.eval_before, seed=self.cfg.seed, debug_sigkill_at_step=tcfg.debug_sigkill_at_step,
            title=self.title, ckpt_dir=self.ckpt_dir,
            checkpoint_meta={"world_size": dist.world_size, "zero_stage": tcfg.zero_stage, "lora": tcfg.lora.enabled,
                             "global_batch_size": plan.batch.global_batch_size, "total_steps": info["total_steps"],
                             "fingerprint": self.resume_fingerprint(), "dataset_content_hash": data.dataset_hash})
        keeper = BestWeights(self.work_dir, eng.engine, probe_batch(data.val, data.tokenizer.pad_token_id), dist) \
            if tcfg.export == "best" else None
        trainer = Trainer(eng.engine, data, dist, settings, self.loss_fn(plan, dist, data, parts), logger, t_start,
                          best=keeper)
        trainer.fit(eng.start_step, eng.resumed_state)
        if logger:
            logger.close()
        return trainer

    def _start_logging(self, plan: JobPlan, dist: Dist, eng: Engine) -> MetricsLogger:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        (self.work_dir / "ds_config.json").write_text(json.dumps(eng.ds_config, indent=2) + "\n")
        (self.work_dir / "run.json").write_text(json.dumps(
            {"plan": eng.info, "config": self.cfg.to_dict(), "dataset": str(plan.dataset_dir or self.layout.data),
             "model_source": plan.source.describe(),
             "resumed_from": str(plan.resume_from.path) if plan.resume_from else None}, indent=2) + "\n")
        i = eng.info
        print(f"{self.title}: {i['num_parameters'] / 1e6:.2f}M parameters ({i['trainable_parameters'] / 1e6:.2f}M "
              f"trainable), ZeRO-{self.tcfg.zero_stage}, {dist.world_size} rank(s) x {i['omp_threads']} thread(s) on "
              f"{i['device']}/{i['dtype']}, global batch {plan.batch.global_batch_size} = {plan.batch.micro_batch_size}"
              f" x {plan.batch.grad_accum_steps} x {dist.world_size}, {i['total_steps']} steps", flush=True)
        return MetricsLogger(self.work_dir, resume_step=eng.start_step if plan.resume_from else None)

    # --- phase 6: consolidation into the model artifact ---------------------------------------------------------
    def export(self, plan: JobPlan, dist: Dist, data: JobData, parts: ModelParts, eng: Engine,
               trainer: Trainer) -> Path:
        """Engine weights (the last step's, or with ``export: best`` those of the best evaluation) -> HF folder,
        checked against the engine's logits on a fixed batch with those weights; rank 0 writes the artifact."""
        probe = probe_batch(data.val, data.tokenizer.pad_token_id)
        if trainer.best is None:
            engine_logits = probe_logits(eng.engine.module, probe, dist.device)
            sd = gather_state_dict(eng.engine, dist.is_main)
            self.exported_eval = trainer.state.evals[-1] if trainer.state.evals else None
        elif dist.is_main:  # saved by every rank's collective gather when that evaluation was the best
            sd, engine_logits, self.exported_eval = trainer.best.load()
        rank_stats = self._rank_stats(dist)
        if dist.is_main:
            t0 = time.time()
            model = merged_model(lambda: self.skeleton(plan, parts, data.tokenizer), sd, self.tcfg.lora.enabled)
            diff = self._check_export(model, probe, engine_logits, eng, dist)
            torch.save({"input_ids": probe["input_ids"], "attention_mask": probe["attention_mask"],
                        "logits": engine_logits}, self.work_dir / "probe_logits.pt")
            metrics = self._metrics(trainer, rank_stats, diff)
            self._write_artifact(plan, dist, data, parts, eng, model, metrics, time.time() - t0)
        barrier()
        return self.output_dir

    def _rank_stats(self, dist: Dist) -> dict[str, list]:
        """Per rank: peak memory, and CPU seconds (this process) -- on a shared machine the CPU time is what the run
        would take on idle cores, the wall time is what it took."""
        mine = torch.tensor([float(peak_memory_bytes(dist.device)), cpu_seconds()], dtype=torch.float64)
        ranks = [torch.zeros_like(mine) for _ in range(dist.world_size)]
        if dist.world_size > 1:
            torch.distributed.all_gather(ranks, mine)
        else:
            ranks = [mine]
        return {"peak_memory_bytes_per_rank": [int(r[0].item()) for r in ranks],
                "cpu_seconds_per_rank": [round(float(r[1].item()), 1) for r in ranks]}

    def _check_export(self, model, probe, engine_logits, eng: Engine, dist: Dist) -> float:
        if eng.info["dtype"] == "float32":
            export_logits, atol = probe_logits(model, probe, "cpu"), EXPORT_LOGITS_ATOL
        else:  # a bf16 engine: run the exported weights as the engine ran them (bf16 weights, fp32 rotary, same device)
            low = cast_weights(copy.deepcopy(model).to(dist.device), eng.dtype)
            export_logits, atol = probe_logits(low, probe, dist.device), EXPORT_LOGITS_ATOL_BF16
            del low
        diff = float((export_logits - engine_logits).abs().max())
        if not diff <= atol:
            raise RuntimeError(f"consolidated model disagrees with the engine on a fixed batch: max |logit diff| "
                               f"{diff:.3g} > {atol}")
        return diff

    def _metrics(self, trainer: Trainer, rank_stats: dict, diff: float) -> dict[str, Any]:
        state = trainer.state
        records = read_metrics(self.work_dir / "metrics.jsonl")
        plot_loss_curve(records, self.work_dir / LOSS_CURVE, title=f"{self.title} ({self.cfg.name})")
        evals = [r for r in records if r["kind"] == "eval"]
        base = next((r for r in evals if r["step"] == 0), None)
        final = self.exported_eval  # the evaluation of the weights the artifact gets
        train_tps = state.tokens_seen / state.train_seconds if state.train_seconds else None
        return {
            "val_loss": final["loss"] if final else None, "val_ppl": final["ppl"] if final else None,
            "base_val_loss": base["loss"] if base else None, "base_val_ppl": base["ppl"] if base else None,
            "val_tokens": final["tokens"] if final else None, "train_loss_last": state.last_train_loss,
            "export": self.tcfg.export, "exported_step": final["step"] if final else state.step,
            "last_val_ppl": evals[-1]["ppl"] if evals else None,
            "steps": state.step, "tokens_seen": state.tokens_seen, "label_tokens_seen": state.label_tokens_seen,
            "train_tokens_per_s": round(train_tps, 1) if train_tps else None,
            "train_seconds": round(state.train_seconds, 1), "eval_seconds": round(state.eval_seconds, 1),
            "checkpoint_seconds": round(state.checkpoint_seconds, 1),
            "wall_seconds": round(trainer.wall_seconds(), 1),
            **rank_stats,
            "export_logits_max_abs_diff": diff,
        }

    def _write_artifact(self, plan: JobPlan, dist: Dist, data: JobData, parts: ModelParts, eng: Engine, model,
                        metrics: dict[str, Any], export_seconds: float) -> None:
        tok = data.tokenizer
        extra = self.artifact_extra(plan, dist, data, parts, model)
        with staging_dir(self.output_dir) as tmp:
            block = save_model_folder(model, tok, tmp)
            (tmp / "training").mkdir()
            shutil.copy2(self.work_dir / "metrics.jsonl", tmp / "training" / "metrics.jsonl")
            shutil.copy2(self.work_dir / LOSS_CURVE, tmp / "training" / LOSS_CURVE)
            (tmp / "training" / "ds_config.json").write_text(json.dumps(eng.ds_config, indent=2) + "\n")
            manifest = new_manifest(
                "model", self.stage, config=self.cfg.to_dict(), parents=self.parents(plan, data), metrics=metrics,
                model=block, world_size=eng.info["world_size"], wall_time_s=metrics["wall_seconds"],
                tokens_per_s=metrics["train_tokens_per_s"],
                training={**eng.info, "model_source": plan.source.describe(), "work_dir": str(self.work_dir),
                          "resumed_from": str(plan.resume_from.path) if plan.resume_from else None,
                          "export_seconds": round(export_seconds, 1)},
                **extra)
            write_manifest(tmp, manifest)
        print(f"{self.title} artifact: {self.output_dir}  val ppl {metrics['base_val_ppl'] or float('nan'):.2f} -> "
              f"{metrics['val_ppl'] or float('nan'):.2f}, {metrics['train_tokens_per_s']} tokens/s, "
              f"export max |dlogit| {metrics['export_logits_max_abs_diff']:.2e}", flush=True)
