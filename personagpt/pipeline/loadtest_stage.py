"""The serving stage of a run: for each model in ``pipeline.serve``, start vLLM through ``serve/run.py --wait``,
load test it with ``loadtest/run.py`` (Locust), ask it the report's held-out questions, stop it. Each step is its
own process through the real entry point; the server is always stopped, also when a step fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from personagpt.paths import ROOT
from personagpt.network import free_port
from personagpt.pipeline.stages import Ctx, env_for_children

PY = sys.executable


def held_out_questions(dataset: Path, n: int) -> list[dict]:
    """The first ``n`` test samples: the conversation so far and the real persona's reply."""
    from personagpt.data.prepare import read_split
    from personagpt.template import prompt_messages

    out = []
    for s in read_split(dataset, "test")[:n]:
        out.append({"id": s["id"], "messages": prompt_messages(s["messages"]),
                    "persona_reply": s["messages"][-1]["content"]})
    return out


def ask(url: str, model: str, questions: list[dict], max_tokens: int, api_key: str | None) -> list[str]:
    import requests

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    answers = []
    for q in questions:
        r = requests.post(f"{url}/v1/chat/completions", headers=headers, timeout=300, json={
            "model": model, "messages": q["messages"], "max_tokens": max_tokens, "temperature": 0})
        r.raise_for_status()
        answers.append(r.json()["choices"][0]["message"]["content"])
    return answers


def _run(argv: list[str], log, check: bool = True) -> int:
    log.write("$ " + " ".join(argv) + "\n")
    log.flush()
    rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env_for_children()).returncode
    if check and rc != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited with code {rc}")
    return rc


def run_loadtest_stage(ctx: Ctx, log_path: Path) -> None:
    import os

    from personagpt.pipeline.runner import StageFailed

    cfg = ctx.cfg
    out_root = ctx.layout.loadtest_root
    questions = held_out_questions(ctx.layout.data, cfg.pipeline.sample_questions)
    done = {"models": {}, "questions": questions}
    with open(log_path, "w") as log:
        for name in cfg.pipeline.serve:
            artifact = ctx.model(name)
            port = cfg.pipeline.serve_port or free_port()
            url = f"http://127.0.0.1:{port}"
            out = ctx.layout.loadtest(artifact.name, cfg.loadtest.profile)
            try:
                _run([PY, str(ROOT / "serve" / "run.py"), "--artifact", str(artifact), "--config", str(ctx.config),
                      *ctx.overrides, "--port", str(port), "--wait"], log)
                rc = _run([PY, str(ROOT / "loadtest" / "run.py"), "--host", url, "--config", str(ctx.config),
                           *ctx.overrides, f"loadtest.dataset={ctx.layout.data}", f"loadtest.out={out}"], log,
                          check=False)
                if rc not in (0, 1) or not (out / "summary.json").is_file():
                    raise RuntimeError(f"loadtest/run.py exited with code {rc}")
                models = __import__("requests").get(f"{url}/v1/models", timeout=30, headers={
                    "Authorization": f"Bearer {os.environ[cfg.serve.api_key_env]}"}
                    if os.environ.get(cfg.serve.api_key_env) else {}).json()
                answers = ask(url, models["data"][0]["id"], questions, cfg.pipeline.sample_max_tokens,
                              os.environ.get(cfg.serve.api_key_env))
                (out / "answers.json").write_text(json.dumps(answers, indent=2, ensure_ascii=False) + "\n")
                done["models"][name] = {"artifact": str(artifact), "summary": str(out / "summary.json"),
                                        "slo_passed": rc == 0, "answers": answers}
            except Exception as e:  # noqa: BLE001 - reported as this stage's failure with the log's tail
                log.flush()
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
                raise StageFailed(f"serving/load test of {name} ({artifact}) failed: {e}\n--- last lines of "
                                  f"{log_path} ---\n{tail}") from None
            finally:
                _run([PY, str(ROOT / "serve" / "run.py"), "--config", str(ctx.config), *ctx.overrides, "--stop",
                      "--port", str(port)], log, check=False)
    (out_root / "done.json").write_text(json.dumps(done, indent=2, ensure_ascii=False) + "\n")
