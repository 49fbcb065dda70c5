"""The eval's results folder (runs/NAME/eval): ``MODEL.json`` per model, ``reference.json`` (the real persona's
figures and the classifier's), ``eval.md`` (the tables, every figure with its 95% interval), ``models.png`` (the
models side by side) and ``done.json`` (settings, models, file names: what the pipeline's report reads)."""

from __future__ import annotations

import json
from pathlib import Path

from personagpt.paths import served_name

PLOT = "models.png"
STYLE_COLUMNS = (("length_ks", "length KS ↓"), ("mean_words", "words"), ("lowercase_start", "lowercase start"),
                 ("question_mark", "has ?"), ("emoji", "emoji"), ("distinct_1", "distinct-1"),
                 ("distinct_2", "distinct-2"), ("empty", "empty"), ("repetition_loop", "loops ↓"))


def ci(m: dict | None, spec: str = ".2f") -> str:
    """``value [low, high]``, or — when not measured."""
    if not m:
        return "—"
    return f"{format(m['value'], spec)} [{format(m['low'], spec)}, {format(m['high'], spec)}]"


def _speed(r: dict) -> float | None:
    gen = r.get("generation") or {}
    first = gen.get("greedy") or next(iter(gen.values()), None)
    return (first or {}).get("speed", {}).get("decode_tokens_per_s")


def models_table(results: dict[str, dict], reference: dict, sampled: str) -> str:
    """One row per model: perplexity, hits@1 on both pools, authorship share greedy and sampled, size, speed;
    the real persona's authorship share as the last row (the ceiling)."""
    lines = [f"| model | ppl | hits@1 others | hits@1 same persona | authorship greedy | authorship {sampled} | "
             "loops greedy | weights | decode tok/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        h, gen, ppl = r.get("hits_at_1") or {}, r["generation"], r.get("ppl") or {}
        greedy, samp = gen.get("greedy") or {}, gen.get(sampled) or {}
        speed = _speed(r)
        cells = [name, f"{ppl['ppl']:.2f}" if ppl else "—", ci(h.get("others")), ci(h.get("same_persona")),
                 ci(greedy.get("authorship")), ci(samp.get("authorship")),
                 ci(greedy.get("style", {}).get("repetition_loop")),
                 f"{r['weight_bytes'] / 1e6:.1f} MB" if r.get("weight_bytes") else "—",
                 f"{speed:.1f}" if speed is not None else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    ceil = reference["authorship_ceiling"]
    lines.append(f"| *real persona* | — | — | — | {ci(ceil)} | {ci(ceil)} | "
                 f"{ci(reference['style']['repetition_loop'])} | — | — |")
    return "\n".join(lines)


def style_table(results: dict[str, dict], reference: dict) -> str:
    head = "| model | decoding | " + " | ".join(label for _, label in STYLE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(STYLE_COLUMNS) + 2)]
    rows = [("*real persona*", "—", reference["style"])]
    rows += [(name, label, g["style"]) for name, r in results.items() for label, g in r["generation"].items()]
    for name, label, st in rows:
        lines.append(f"| {name} | {label} | " + " | ".join(ci(st[k]) for k, _ in STYLE_COLUMNS) + " |")
    return "\n".join(lines)


def markdown(results: dict[str, dict], reference: dict, settings: dict) -> str:
    e = settings["eval"]
    sampled = settings["decodings"][-1]
    any_r = next(iter(results.values()))
    n_rank = (any_r.get("hits_at_1") or {}).get("contexts", "—")
    n_gen = (any_r["generation"][settings["decodings"][0]]["authorship"])["n"]
    clf = reference["classifier"]
    return "\n".join([
        "# Persona fidelity", "",
        f"Held-out `{settings['split']}` split of `{settings['dataset']}`; every figure is the value and its 95% "
        f"bootstrap interval ({e['bootstrap_resamples']} resamples, seed {e['seed']}). hits@1 of {e['candidates']} "
        f"(chance {1 / e['candidates']:.2f}) on {n_rank} contexts; replies generated for {n_gen} contexts, greedy "
        f"and {sampled}, at most {e['max_new_tokens']} new tokens. Authorship classifier (char 2–5-grams, train "
        f"split): balanced accuracy {ci(clf['balanced_accuracy'])} (chance 0.50); other speakers' turns "
        f"attributed to the persona: {ci(reference['authorship_others'])} (the floor). Took "
        f"{settings['seconds']:.0f} s.", "",
        models_table(results, reference, sampled), "",
        "## Style of the replies", "", style_table(results, reference), "",
        f"![models]({PLOT})", ""])


def plot(results: dict[str, dict], reference: dict, settings: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    sampled = settings["decodings"][-1]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.2))

    def bars(ax, series: list[tuple[str, list[dict | float | None]]], title: str, line=None, line_label=""):
        width = 0.8 / len(series)
        for k, (label, vals) in enumerate(series):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
            ys = [(v["value"] if isinstance(v, dict) else v) if v is not None else 0.0 for v in vals]
            err = [[y - v["low"] if isinstance(v, dict) else 0 for v, y in zip(vals, ys, strict=True)],
                   [v["high"] - y if isinstance(v, dict) else 0 for v, y in zip(vals, ys, strict=True)]]
            ax.bar(xs, ys, width, yerr=err, capsize=3, label=label)
        if line is not None:
            ax.axhline(line, color="grey", ls="--", lw=1, label=line_label)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        if len(series) > 1 or line is not None:
            ax.legend(fontsize=8)

    bars(axes[0], [("ppl", [(r.get("ppl") or {}).get("ppl") for r in results.values()])], "perplexity (held-out) ↓")
    bars(axes[1], [(p, [(r.get("hits_at_1") or {}).get(p) for r in results.values()])
                   for p in ("others", "same_persona")], f"hits@1 of {settings['eval']['candidates']} ↑",
         1 / settings["eval"]["candidates"], "chance")
    bars(axes[2], [(d, [r["generation"].get(d, {}).get("authorship") for r in results.values()])
                   for d in ("greedy", sampled)], "authorship share ↑", reference["authorship_ceiling"]["value"],
         "real persona")
    bars(axes[3], [("MB", [(r.get("weight_bytes") or 0) / 1e6 for r in results.values()])], "weights on disk (MB)")
    bars(axes[4], [("tok/s", [_speed(r) for r in results.values()])],
         f"decode tok/s (HF generate, batch {settings['eval']['batch_size']})")
    fig.suptitle(f"persona fidelity on the {settings['split']} split (95% bootstrap intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results(folder: Path, results: dict[str, dict], reference: dict, settings: dict) -> None:
    files = {}
    for name, r in results.items():
        files[name] = f"{served_name(Path(name).name if '/' in name else name)}.json"
        (folder / files[name]).write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n")
    (folder / "reference.json").write_text(json.dumps(reference, indent=2, ensure_ascii=False) + "\n")
    (folder / "eval.md").write_text(markdown(results, reference, settings))
    plot(results, reference, settings, folder / PLOT)
    (folder / "done.json").write_text(json.dumps({**settings, "models": files}, indent=2) + "\n")


def read_results(folder: Path) -> tuple[dict[str, dict], dict, dict] | None:
    """(results per model, reference, settings) of a finished eval folder, or None."""
    done = folder / "done.json"
    if not done.is_file():
        return None
    settings = json.loads(done.read_text())
    results = {n: json.loads((folder / f).read_text()) for n, f in settings["models"].items()}
    return results, json.loads((folder / "reference.json").read_text()), settings


def summary_table(folder: Path) -> str | None:
    """The models table of a finished eval (what report.md shows), or None."""
    got = read_results(folder)
    if got is None:
        return None
    results, reference, settings = got
    return models_table(results, reference, settings["decodings"][-1])

