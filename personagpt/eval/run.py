"""One evaluation: every model answers the same held-out contexts, scored the same way; results are written
atomically into runs/NAME/eval (a temporary folder renamed at the end; any error leaves nothing behind).

Order: resolve every model name and check every input (dataset split, N against the split, the endpoint) before
anything is loaded; then train the authorship classifier once; then each model in turn: perplexity, hits@1 on both
pools, greedy and sampled replies (authorship share, style statistics, decode speed).
"""

from __future__ import annotations

import gc
import json
import random
import time
from pathlib import Path
from typing import Any

from personagpt.errors import PersonaGPTError
from personagpt.eval import style
from personagpt.eval.authorship import Authorship, split_texts
from personagpt.eval.bootstrap import interval, mean
from personagpt.eval.generate import GREEDY, Decoding
from personagpt.eval.ranking import POOLS, build_items, hits
from personagpt.paths import RunLayout


def log(msg: str) -> None:
    print(f"[eval {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sampling_of(cfg) -> Decoding:
    s = cfg.eval.sampling
    return Decoding(True, s.temperature, s.top_p, s.repetition_penalty)


def style_metrics(texts: list[str], real: list[str], n_boot: int, seed: int) -> dict[str, dict]:
    """Every style statistic of ``texts`` with its interval; length KS against ``real``."""
    out = {name: interval(mean, [int(pred(t)) for t in texts], n_resamples=n_boot, seed=seed)
           for name, pred in style.SHARES.items()}
    out.update({name: interval(fn, texts, n_resamples=n_boot, seed=seed, unique=True)
                for name, fn in style.DISTINCT.items()})
    out["mean_words"] = interval(style.mean_words, texts, n_resamples=n_boot, seed=seed)
    out["length_ks"] = interval(style.length_ks, texts, real, n_resamples=n_boot, seed=seed)
    return out


class Inputs:
    """Everything every model is scored on, built (and checked) once."""

    def __init__(self, cfg, split: str, run_dir: Path | None = None):
        from personagpt.artifacts import read_manifest
        from personagpt.data.prepare import read_split
        from personagpt.errors import ArtifactError
        from personagpt.template import prompt_messages

        e = cfg.eval
        self.layout = RunLayout(Path(run_dir).resolve()) if run_dir else RunLayout.of(cfg.name)
        self.dataset = Path(e.dataset).resolve() if e.dataset else self.layout.data
        try:
            self.data_manifest = read_manifest(self.dataset, kind="dataset")
        except ArtifactError as err:
            raise ArtifactError(f"eval.dataset: {err}") from None
        self.split = split
        self.samples = read_split(self.dataset, split)
        where = f"{self.dataset / (split + '.jsonl')}"
        if len(self.samples) < 2:
            raise PersonaGPTError(f"{where}: {len(self.samples)} samples; the eval needs at least 2")
        self.items = build_items(self.samples, e.candidates, e.ranking_contexts, e.seed, where)
        rng = random.Random(e.seed + 1)
        chosen = rng.sample(self.samples, min(e.contexts, len(self.samples)))
        self.contexts = [prompt_messages(s["messages"]) for s in chosen]
        self.real = [s["messages"][-1]["content"].strip() for s in chosen]
        self.ppl_samples = self.samples[:e.ppl_samples] if e.ppl_samples else self.samples
        self.train = read_split(self.dataset, "train")
        self.train_replies = [s["messages"][-1]["content"].strip() for s in self.train]
        self.data_cfg = (self.data_manifest.get("config") or {}).get("data") or {}

    def fit_classifier(self, cfg) -> tuple[Authorship, dict[str, Any]]:
        e = cfg.eval
        t0 = time.perf_counter()
        clf = Authorship.fit(self.train, e.classifier_max_per_class, e.seed)
        persona, others = split_texts(self.samples)
        hit_p, hit_o = clf.attributed(persona), [1 - x for x in clf.attributed(others)]
        acc = interval(lambda a, b: (mean(a) + mean(b)) / 2, hit_p, hit_o, n_resamples=e.bootstrap_resamples,
                       seed=e.seed)
        real = clf.attributed(self.real)
        ref = {"classifier": {"balanced_accuracy": acc, "chance": 0.5, "persona_replies": len(persona),
                              "other_turns": len(others), "fit_seconds": round(time.perf_counter() - t0, 1)},
               "authorship_ceiling": interval(mean, real, n_resamples=e.bootstrap_resamples, seed=e.seed),
               "authorship_others": interval(mean, clf.attributed(others), n_resamples=e.bootstrap_resamples,
                                             seed=e.seed),
               # the real replies' length KS against the persona's train-split replies: the sampling-noise floor
               "style": style_metrics(self.real, self.train_replies, e.bootstrap_resamples, e.seed),
               "samples": self.real[:5]}
        return clf, ref


def generated(gen, inputs: Inputs, clf: Authorship, decoding: Decoding, cfg) -> dict[str, Any]:
    e = cfg.eval
    texts, stats = gen(inputs.contexts, decoding, e.seed)
    return {"decoding": {"label": decoding.label, **decoding.__dict__},
            "authorship": interval(mean, clf.attributed(texts), n_resamples=e.bootstrap_resamples, seed=e.seed),
            "style": style_metrics(texts, inputs.real, e.bootstrap_resamples, e.seed), "speed": stats,
            "replies": texts}


def evaluate_hf(name: str, path: Path, dtype: str, inputs: Inputs, clf: Authorship, cfg,
                decodings: list[Decoding]) -> dict[str, Any]:
    import torch

    from personagpt.eval.generate import HFGenerator
    from personagpt.eval.ranking import HFScorer
    from personagpt.evaluate import perplexity
    from personagpt.hardware import cpu_compute_dtype
    from personagpt.models import load_model, weight_bytes

    e, t0 = cfg.eval, time.perf_counter()
    dtype = cpu_compute_dtype(dtype)  # the models are scored on the CPU: half precision only where it is native
    model, tok = load_model(path, dtype=getattr(torch, dtype))
    log(f"{name}: loaded {path} ({dtype}) in {time.perf_counter() - t0:.1f} s")
    t = time.perf_counter()
    ppl = perplexity(model, tok, inputs.ppl_samples, max_length=inputs.data_cfg.get("max_length"),
                     batch_size=e.batch_size, label_turns=inputs.data_cfg.get("label_turns", "last"))
    log(f"{name}: ppl {ppl['ppl']:.2f} on {len(inputs.ppl_samples)} samples ({time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    h = hits(HFScorer(model, tok, e.max_reply_tokens, e.batch_size), inputs.items, e.seed)
    ranking = {p: interval(mean, h[p], n_resamples=e.bootstrap_resamples, seed=e.seed) for p in POOLS}
    log(f"{name}: hits@1 of {e.candidates} " + ", ".join(f"{p} {ranking[p]['value']:.3f}" for p in POOLS)
        + f" on {len(inputs.items)} contexts ({time.perf_counter() - t:.1f} s)")
    gen = HFGenerator(model, tok, e.batch_size, e.max_new_tokens)
    out = {}
    for d in decodings:
        t = time.perf_counter()
        out[d.label] = generated(gen, inputs, clf, d, cfg)
        log(f"{name}: {d.label}: authorship {out[d.label]['authorship']['value']:.3f}, loops "
            f"{out[d.label]['style']['repetition_loop']['value']:.3f} ({time.perf_counter() - t:.1f} s)")
    res = {"model": name, "path": str(path), "dtype": dtype, "weight_bytes": weight_bytes(path),
           "num_parameters": sum(p.numel() for p in model.parameters()),
           "ppl": {**ppl, "samples": len(inputs.ppl_samples)},
           "hits_at_1": {**ranking, "n": e.candidates, "chance": 1 / e.candidates, "contexts": len(inputs.items)},
           "generation": out, "seconds": round(time.perf_counter() - t0, 1)}
    del model
    gc.collect()
    return res


def evaluate_endpoint(name: str, gen, inputs: Inputs, clf: Authorship, cfg, decodings: list[Decoding]) -> dict:
    t0 = time.perf_counter()
    out = {d.label: generated(gen, inputs, clf, d, cfg) for d in decodings}
    return {"model": name, "path": gen.url, "endpoint": {"url": gen.url, "model": gen.model}, "weight_bytes": None,
            "num_parameters": None, "ppl": None, "hits_at_1": None, "not_measured": "ppl and hits@1 need the "
            "model's log-likelihoods; an endpoint is evaluated on its generated replies only",
            "generation": out, "seconds": round(time.perf_counter() - t0, 1)}


def evaluate(cfg, names: list[str], split: str, url: str | None = None, api_key: str | None = None,
             decodings: list[Decoding] | None = None, out: Path | None = None, run_dir: Path | None = None) -> Path:
    """Evaluate ``names`` (or the endpoint at ``url``, labelled by the single name) of the run folder ``run_dir``
    (default runs/NAME) into ``out`` (default its eval/): MODEL.json per model, reference.json, eval.md,
    models.png, done.json."""
    from personagpt.artifacts import staging_dir
    from personagpt.eval.models import resolve
    from personagpt.eval.report import write_results

    t0 = time.perf_counter()
    decodings = decodings or [GREEDY, sampling_of(cfg)]
    inputs = Inputs(cfg, split, run_dir)
    if url:
        from personagpt.eval.generate import EndpointGenerator

        if len(names) != 1:
            raise PersonaGPTError(f"--url: evaluates one endpoint; --models names its label, got {names}")
        endpoint = EndpointGenerator(url, None, api_key, cfg.eval.max_new_tokens, cfg.eval.endpoint_timeout_s)
        targets = {}
    else:
        targets = resolve(cfg, inputs.layout, names)
    log(f"{split} split of {inputs.dataset}: {len(inputs.samples)} samples; {len(inputs.items)} ranking contexts, "
        f"{len(inputs.contexts)} generation contexts; models: {', '.join(names)}")
    clf, reference = inputs.fit_classifier(cfg)
    log(f"authorship classifier: balanced accuracy {reference['classifier']['balanced_accuracy']['value']:.3f} "
        f"(chance 0.5), real persona share {reference['authorship_ceiling']['value']:.3f}")
    results = {}
    if url:
        results[names[0]] = evaluate_endpoint(names[0], endpoint, inputs, clf, cfg, decodings)
    for name, (path, dtype) in targets.items():
        results[name] = evaluate_hf(name, path, dtype, inputs, clf, cfg, decodings)
    out = Path(out) if out else inputs.layout.eval
    settings = {"split": split, "dataset": str(inputs.dataset), "eval": cfg.eval.model_dump(mode="json"),
                "decodings": [d.label for d in decodings], "seconds": round(time.perf_counter() - t0, 1)}
    with staging_dir(out) as tmp:
        write_results(tmp, results, reference, settings)
    log(f"wrote {out} in {settings['seconds']:.1f} s")
    print(json.dumps({"out": str(out), "models": list(results), "seconds": settings["seconds"]}), flush=True)
    return out
