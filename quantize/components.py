"""What quantizing each part of a model costs: perplexity and bytes with only the decoder's Linears, only the LM head,
only the embedding, or all of them quantized (``python quantize/bench.py --components``).

Measured on the ONNX artifact's kept fp32 graph (``quantize.onnx.keep_fp32``) with ONNX Runtime: the same export,
the same blockwise scheme (``quantize.onnx.bits`` / ``block_size`` / ``accuracy_level``) and the same validation
samples as the artifact itself, each variant against the fp32 graph. Round-to-nearest blockwise weights (no
calibration), so the figures isolate the rounding cost per component; GPTQ's error compensation only applies to
the Linears.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

VARIANTS = {  # name -> (linears, lm_head, embedding)
    "linears": (True, False, False),
    "lm_head": (False, True, False),
    "embedding": (False, False, True),
    "all": (True, True, True),
}


def component_costs(artifact: Path, cfg) -> dict[str, Any]:
    """Perplexity increase and graph bytes per variant, for the ONNX artifact ``artifact`` (with onnx-fp32/ kept)
    made with ``cfg``."""
    from personagpt.artifacts import read_manifest
    from personagpt.tokenizer import load_tokenizer
    from quantize.compare import log
    from quantize.inputs import resolve_inputs
    from quantize.onnx_export import ONNX_FILE, onnx_weight_bytes, quantize_onnx_weights
    from quantize.onnx_method import FP32_DIR
    from quantize.ort_model import OrtCausalLM
    from quantize.pipeline import load_eval

    fp32 = artifact / FP32_DIR / ONNX_FILE
    if not fp32.is_file():
        from personagpt.errors import ArtifactError

        raise ArtifactError(f"{artifact}: no {FP32_DIR}/{ONNX_FILE} (quantize with onnx.keep_fp32=true)")
    q = cfg.quantize
    tok = load_tokenizer(artifact)
    _, encoded = load_eval(resolve_inputs(cfg), q, tok)
    base = read_manifest(artifact)["metrics"]["onnx_fp32_ppl"]
    rows = {"fp32": {"ppl": base["ppl"], "ppl_increase_pct": 0.0, "weight_bytes": onnx_weight_bytes(fp32.parent)}}
    with tempfile.TemporaryDirectory(prefix="components-", dir=artifact.parent) as tmp:
        for name, (linears, lm_head, embedding) in VARIANTS.items():
            folder = Path(tmp) / name
            folder.mkdir()
            shutil.copy(artifact / "config.json", folder / "config.json")
            quantize_onnx_weights(fp32, folder / ONNX_FILE, q.onnx, lm_head=lm_head, embedding=embedding,
                                  linears=linears)
            ppl = OrtCausalLM(folder, q.onnx.provider).perplexity(tok.pad_token_id, encoded, q.eval_batch_size)
            rows[name] = {"ppl": ppl["ppl"], "ppl_increase_pct": 100.0 * (ppl["ppl"] / base["ppl"] - 1.0),
                          "weight_bytes": onnx_weight_bytes(folder)}
            log(f"components: {name} quantized: ppl {ppl['ppl']:.3f} ({rows[name]['ppl_increase_pct']:+.2f}%), "
                f"{rows[name]['weight_bytes'] / 1e6:.2f} MB")
    head = f", head int{q.onnx.head_bits}" if q.onnx.head_bits not in (None, q.onnx.bits) else ""
    asym = " asym" if not q.onnx.symmetric else ""
    return {"scheme": f"int{q.onnx.bits}{asym} g{q.onnx.block_size}{head} accuracy_level {q.onnx.accuracy_level}",
            "tokens": base["tokens"], "rows": rows}


def components_table(costs: dict[str, Any]) -> str:
    lines = [f"Per-component cost (ONNX Runtime {costs['scheme']}, round-to-nearest, against the fp32 graph, "
             f"{costs['tokens']} tokens):", "",
             "| quantized | val ppl | Δ ppl | graph bytes |", "|---|---:|---:|---:|"]
    for name, r in costs["rows"].items():
        label = "nothing (fp32)" if name == "fp32" else name
        lines.append(f"| {label} | {r['ppl']:.3f} | {r['ppl_increase_pct']:+.2f}% | {r['weight_bytes'] / 1e6:.2f} MB |")
    return "\n".join(lines)
