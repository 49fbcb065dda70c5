"""The load-test stage: for each stage named in ``pipeline.serve``, serve its model (:func:`served`), load test it
with ``loadtest/run.py`` (Locust), ask it the report's held-out questions, and stop it. Its results folder is
``runs/NAME/loadtest``: one ``MODEL/PROFILE`` folder per served model and ``done.json``, the record the report
reads (which stage's model was served from which artifact, its summary, its answers)."""

from __future__ import annotations

import json
from pathlib import Path

from personagpt.errors import StageFailed
from personagpt.paths import ROOT
from personagpt.pipeline.context import PY, Ctx
from personagpt.pipeline.serving import Server, served
from personagpt.pipeline.stage import Stage, log_tail, run_command


def held_out_questions(dataset: Path, n: int) -> list[dict]:
    """The first ``n`` test samples: the conversation so far and the real persona's reply."""
    from personagpt.data.prepare import read_split
    from personagpt.template import prompt_messages

    return [{"id": s["id"], "messages": prompt_messages(s["messages"]), "persona_reply": s["messages"][-1]["content"]}
            for s in read_split(dataset, "test")[:n]]


def ask(server: Server, questions: list[dict], max_tokens: int) -> list[str]:
    """Each question as one chat completion with the artifact's own decoding defaults (vLLM reads them from its
    generation_config.json), a fixed seed per question, EOS honoured."""
    import requests

    answers = []
    for q in questions:
        r = requests.post(f"{server.url}/v1/chat/completions", headers=server.headers, timeout=300, json={
            "model": server.model, "messages": q["messages"], "max_tokens": max_tokens, "seed": len(answers)})
        r.raise_for_status()
        answers.append(r.json()["choices"][0]["message"]["content"])
    return answers


class LoadtestStage(Stage):
    name = "loadtest"
    sections = ("serve", "loadtest", "seed", "pipeline.serve", "pipeline.sample_questions",
                "pipeline.sample_max_tokens")

    def __init__(self, model_stages: dict[str, Stage]):
        self.model_stages = model_stages  # the stages pipeline.serve may name
        self.parents = (*model_stages, "data")

    def output(self, ctx: Ctx) -> Path:
        return ctx.layout.loadtest_root

    def run(self, ctx: Ctx, resume: bool, log: Path) -> None:
        cfg = ctx.cfg
        questions = held_out_questions(ctx.layout.data, cfg.pipeline.sample_questions)
        done: dict = {"models": {}, "questions": questions}
        for stage_name in cfg.pipeline.serve:
            stage = self.model_stages[stage_name]
            artifact = stage.model_artifact(ctx)
            if not artifact.is_dir():
                raise StageFailed(f"pipeline.serve names {stage_name!r}, but its model {artifact} does not exist: "
                                  f"run that stage first (--stages {stage_name},loadtest)")
            try:
                done["models"][stage_name] = self._serve_and_test(ctx, artifact, questions, log)
            except Exception as e:  # noqa: BLE001 - any failure is this stage's, reported with the log's tail
                if isinstance(e, StageFailed):
                    raise
                raise StageFailed(f"serving/load test of {stage.model} ({artifact}) failed: {e}\n"
                                  f"--- last lines of {log} ---\n{log_tail(log)}") from None
            done["models"][stage_name]["model"] = stage.model
        (ctx.layout.loadtest_root / "done.json").write_text(json.dumps(done, indent=2, ensure_ascii=False) + "\n")

    def _serve_and_test(self, ctx: Ctx, artifact: Path, questions: list[dict], log: Path) -> dict:
        cfg = ctx.cfg
        out = ctx.layout.loadtest(artifact.name, cfg.loadtest.profile)
        with served(ctx, artifact, log) as server:
            # exit 1: the SLO was violated, results written (the report shows it); anything else is a failure
            rc = run_command([PY, str(ROOT / "loadtest" / "run.py"), "--host", server.url, *ctx.args(),
                              f"loadtest.dataset={ctx.layout.data}", f"loadtest.out={out}"], log, ok=(0, 1),
                             grace=cfg.pipeline.stop_timeout_s, on_start=ctx.started)
            if not (out / "summary.json").is_file():
                raise StageFailed(f"loadtest/run.py exited with code {rc} without results in {out}\n"
                                  f"--- last lines of {log} ---\n{log_tail(log)}")
            answers = ask(server, questions, cfg.pipeline.sample_max_tokens)
        (out / "answers.json").write_text(json.dumps(answers, indent=2, ensure_ascii=False) + "\n")
        return {"artifact": str(artifact), "summary": str(out / "summary.json"), "slo_passed": rc == 0,
                "answers": answers}
