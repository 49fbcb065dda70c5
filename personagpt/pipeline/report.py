"""``runs/NAME/report.md``: one table for teacher, student and quantized model, the eval stage's persona-fidelity
table, sample persona answers to the same held-out questions, and every stage's plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from personagpt.artifacts import read_manifest
from personagpt.errors import ArtifactError
from personagpt.eval.report import summary_table
from personagpt.paths import RunLayout
from personagpt.pipeline.context import Ctx
from personagpt.pipeline.loadtest_stage import held_out_questions
from personagpt.promotion import quantization_ratio, read_promotion, student_quality


def _manifest(path: Path) -> dict | None:
    try:
        return read_manifest(path)
    except ArtifactError:
        return None


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def _mb(b: Any) -> str:
    return "—" if b is None else f"{b / 1e6:.1f} MB"


def _served(done: dict, stage: str) -> dict | None:
    """The served figures of the model of ``stage`` from the load-test stage's record (None: not served)."""
    rec = done.get("models", {}).get(stage)
    if not rec or not Path(rec["summary"]).is_file():
        return None
    s = json.loads(Path(rec["summary"]).read_text())
    lv = max(s.get("levels") or [{}], key=lambda x: x.get("output_tokens_per_s") or 0)
    return {"ttft_p50": (lv.get("ttft_ms") or {}).get("p50"), "ttft_p95": (lv.get("ttft_ms") or {}).get("p95"),
            "itl_p50": (lv.get("itl_ms") or {}).get("p50"), "tok_s": lv.get("output_tokens_per_s"),
            "goodput": (lv.get("goodput") or {}).get("share"), "slo_passed": s.get("slo", {}).get("passed"),
            "load": s.get("load")}


def loadtest_record(layout: RunLayout) -> dict:
    """What the load-test stage recorded (models served, their summaries and answers), or {} before it ran."""
    path = layout.loadtest_root / "done.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def model_rows(layout: RunLayout, quantized: Path, method: str) -> list[dict[str, Any]]:
    """Figures per model. Perplexities come from each stage's own measurement (the same code; the student and the
    teacher on the same samples, the quantized model and its input on the same samples), so quality retained
    chains matched ratios: teacher→student × student→quantized (personagpt/promotion.py, the quality gate's
    figure). The promoted model's row carries the figures of serving ``promoted``."""
    t, s, q = (_manifest(p) for p in (layout.teacher, layout.student, quantized))
    qt = _manifest(layout.quantized_teacher(method))
    done = loadtest_record(layout)
    promoted = (read_promotion(layout) or {}).get("promoted")
    rows = []
    d = (s or {}).get("distillation", {})
    if t:
        rows.append({"model": "teacher", "params": t["model"]["num_parameters"], "bytes": t["model"]["weight_bytes"],
                     "ppl": t["metrics"].get("val_ppl"), "retained": 1.0,
                     "decode": d.get("teacher_decode_tokens_per_s"), "served": _served(done, "train")})
    if s:
        rows.append({"model": "student", "params": s["model"]["num_parameters"], "bytes": s["model"]["weight_bytes"],
                     "ppl": s["metrics"].get("val_ppl"), "retained": d.get("quality_retained"),
                     "decode": d.get("student_decode_tokens_per_s"), "served": _served(done, "distill")})
    for name, m, retained, who in (("quantized", q, student_quality(s, q), "student"),
                                   ("quantized teacher", qt, quantization_ratio(qt) if qt else None, "teacher")):
        if not m:
            continue
        after = m["metrics"].get("after", {})
        method_name = (m.get("model", {}).get("quantization") or {}).get("method", "?")
        served = _served(done, "promote") if promoted == who else None
        rows.append({"model": f"{name} ({method_name})", "params": m.get("model", {}).get("num_parameters"),
                     "bytes": after.get("weight_bytes", m.get("model", {}).get("weight_bytes")),
                     "ppl": after.get("ppl"), "retained": retained, "decode": after.get("decode_tokens_per_s"),
                     "served": served or (_served(done, "quantize") if who == "student" else None),
                     "promoted": promoted == who})
    return rows


def headline(layout: RunLayout) -> list[str]:
    """The quality gate's decision, the first thing the report says."""
    rec = read_promotion(layout)
    if not rec:
        return []
    if rec["promoted"] == "student":
        return [f"**Served: the quantized student** ({rec['artifact']}): it keeps "
                f"{rec['student_quality_retained']:.1%} of the teacher's quality, the quality gate "
                f"(`pipeline.min_quality_retained`) asks for {rec['threshold']:.0%}.", ""]
    teacher = rec.get("teacher_quality_retained")
    return [f"**Quality gate failed: the quantized student keeps {rec['student_quality_retained']:.1%} of the "
            f"teacher's quality, the gate (`pipeline.min_quality_retained`) asks for {rec['threshold']:.0%}. The "
            f"pipeline serves the quantized teacher instead** ({rec['artifact']}"
            + (f", {teacher:.1%} of the teacher's quality" if teacher else "") + ").", ""]


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | parameters | weights | val ppl | quality retained | decode tok/s (HF, batch 4) | "
            "served TTFT p50 / p95 (ms) | ITL p50 (ms) | served output tok/s | goodput |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        sv = r["served"]
        if sv is None:
            served = "— | — | — | —"
        else:
            goodput = sv.get("goodput")
            served = (f"{_fmt(sv.get('ttft_p50'), '.0f')} / {_fmt(sv.get('ttft_p95'), '.0f')} | "
                      f"{_fmt(sv.get('itl_p50'), '.1f')} | {_fmt(sv.get('tok_s'), '.1f')} | "
                      f"{_fmt(goodput * 100 if goodput is not None else None, '.0f')}%")
        name = r["model"] + (" (served)" if r.get("promoted") else "")
        lines.append(
            f"| {name} | {_fmt(r['params'] / 1e6 if r['params'] else None, '.2f')}M | {_mb(r['bytes'])} | "
            f"{_fmt(r['ppl'])} | {_fmt(r['retained'] * 100 if r['retained'] else None, '.1f')}% | "
            f"{_fmt(r['decode'], '.1f')} | {served} |")
    return "\n".join(lines)


def hf_answers(model_dir: Path, questions: list[dict], max_tokens: int) -> list[str] | None:
    """Each question answered with the artifact's own decoding defaults (its generation_config.json), seeded."""
    import torch

    from personagpt.models import load_model

    if _manifest(model_dir) is None:
        return None
    model, tok = load_model(model_dir)
    out = []
    for i, q in enumerate(questions):
        enc = tok.apply_chat_template(q["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        torch.manual_seed(i)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_tokens)
        out.append(tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


def write_report(ctx: Ctx, timings: dict[str, dict] | None = None) -> Path:
    from personagpt.pipeline.stages import MODEL_STAGES

    layout, cfg, quantized = ctx.layout, ctx.cfg, ctx.quantized
    run_dir = layout.root
    rows = model_rows(layout, quantized, quantized.name.removeprefix("quantized-"))
    questions = held_out_questions(layout.data, cfg.pipeline.sample_questions)
    served = loadtest_record(layout).get("models", {})
    answers: dict[str, list[str] | None] = {}
    promotion = read_promotion(layout) or {}
    for name, stage in MODEL_STAGES.items():
        label = f"quantized {promotion['promoted']}" if name == "promote" and promotion else stage.model
        if name in served:
            answers[label + " (vLLM)"] = served[name]["answers"]
        elif name in ("train", "distill"):
            answers[stage.model + " (HF generate)"] = hf_answers(stage.output(ctx), questions,
                                                                 cfg.pipeline.sample_max_tokens)
    lines = [f"# PersonaGPT run `{cfg.name}`", "", *headline(layout)]
    data = _manifest(layout.data) or {}
    if data:
        sp = data.get("splits", {})
        lines += [f"Persona `{data.get('persona')}` from {data.get('source')}: "
                  + ", ".join(f"{k} {v['samples']} samples" for k, v in sp.items()) + ".", ""]
    lines += ["## Models", "", table(rows), "",
              "Perplexity is measured on validation samples, on assistant (persona) tokens only, by each stage with "
              "the same code. Quality retained = teacher ppl / model ppl, chained over matched measurements "
              "(teacher vs student on the distill stage's samples, student vs quantized on the quantize stage's). "
              "Served figures: Locust against vLLM's OpenAI server, streaming, at the load in the loadtest section.",
              ""]
    eval_table = summary_table(layout.eval)
    if eval_table:
        lines += ["## Persona fidelity (eval)", "", eval_table, "",
                  "Does it answer like the persona? hits@1: how often the model's log-likelihood puts the "
                  "persona's real reply above N-1 distractors (other speakers' replies / the persona's replies to "
                  "other contexts); authorship: share of the model's generated replies a character n-gram "
                  "classifier attributes to the persona (the real persona's own share is the ceiling); loops: "
                  "replies repeating one n-gram 3+ times. Values with 95% bootstrap intervals; style statistics "
                  "and settings in "
                  f"[eval/eval.md]({os.path.relpath(layout.eval / 'eval.md', run_dir)}).", ""]
    if timings:
        lines += ["## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
        lines += [f"| {k} | {v['status']} | {v['seconds']:.1f} |" for k, v in timings.items()] + [""]
    lines += ["## Sample answers to held-out questions", ""]
    for i, q in enumerate(questions):
        last_user = next((m["content"] for m in reversed(q["messages"]) if m["role"] == "user"), "")
        quoted = "\n".join("> " + ln for ln in f"**user:** {last_user}".splitlines())
        lines += [f"### Question {i + 1}", "", quoted, "",
                  f"- **the real persona:** {q['persona_reply'].replace(chr(10), ' / ')}"]
        for name, ans in answers.items():
            if ans is not None:
                text = (ans[i] if i < len(ans) else "—").strip().replace("\n", " / ") or "(empty reply)"
                lines.append(f"- **{name}:** {text}")
        lines.append("")
    # every stage's plots, from the pipeline's own folders (artifacts keep copies under training/; benchmarks or
    # experiments a user ran into other folders of the run are not this run's stages)
    stage_dirs = (layout.work("train"), layout.work("distill"), quantized, layout.eval, layout.loadtest_root)
    plots = sorted(p for d in stage_dirs for p in d.rglob("*.png")
                   if not {"checkpoints", "training"} & set(p.relative_to(run_dir).parts))
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.relative_to(run_dir)}]({os.path.relpath(p, run_dir)})" for p in plots]
    layout.report.write_text("\n".join(lines) + "\n")
    return layout.report
