"""ONNX export of a causal LM with KV cache (``torch.onnx.export``, dynamo exporter), then ONNX Runtime quantization.

Graph inputs: ``input_ids``, ``attention_mask`` [batch, past+seq], ``position_ids``, and per layer
``past_key_values.{i}.key|value`` [batch, kv_heads, past, head_dim] (past may be 0 for the prefill); outputs
``logits`` and ``present.{i}.key|value``. One graph serves prefill and decode steps.

Optimum's exporter (optimum-onnx) pins transformers < 4.58, so the export goes through ``torch.onnx`` here.
"""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

ONNX_FILE = "model.onnx"
EXTERNAL_DATA = "model.onnx_data"
PROTOBUF_LIMIT = 1_800_000_000  # a single .onnx protobuf must stay under 2 GiB: larger weights go to external data


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def kv_shape(config) -> tuple[int, int, int]:
    heads = config.num_attention_heads
    return config.num_hidden_layers, config.num_key_value_heads or heads, \
        getattr(config, "head_dim", None) or config.hidden_size // heads


class _WithFlatCache(torch.nn.Module):
    """The model with the KV cache as flat tensors in and out (what an ONNX graph can carry)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.num_layers = model.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        flat = []
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def _strip_and_save(model_proto, path: Path) -> None:
    """Drop the exporter's per-node debug metadata (stack traces, module paths) and save; weights go to external
    data only when the protobuf limit requires it."""
    import onnx

    for node in model_proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    big = sum(t.ByteSize() for t in model_proto.graph.initializer) > PROTOBUF_LIMIT
    onnx.save_model(model_proto, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=EXTERNAL_DATA if big else None)


@torch.no_grad()
def export_onnx(model, path: Path, opset: int) -> dict[str, Any]:
    """Export ``model`` (fp32, CPU) to ``path``. Returns facts for the manifest."""
    import onnx

    model = model.to("cpu", torch.float32).eval()
    layers, kv_heads, head_dim = kv_shape(model.config)
    names_in, names_out = io_names(layers)
    # Example inputs: batch 2 with one left-padded row and a non-empty past, so nothing specializes on an all-ones
    # mask, on batch 1 or on an empty cache (an empty past still runs: the dimension stays symbolic).
    b, s, p = 2, 5, 3
    ids = torch.randint(0, model.config.vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.long)
    mask[0, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
    past = tuple(torch.randn(b, kv_heads, p, head_dim) for _ in range(2 * layers))
    batch, seq, past_len, total = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq},
               tuple({0: batch, 2: past_len} for _ in range(2 * layers)))
    with tempfile.TemporaryDirectory(prefix="onnx-export-", dir=path.parent) as tmp:
        raw = Path(tmp) / ONNX_FILE
        torch.onnx.export(_WithFlatCache(model).eval(), (ids, mask, pos, past), str(raw), input_names=names_in,
                          output_names=names_out, dynamic_shapes=dynamic, dynamo=True, opset_version=opset,
                          external_data=True, verbose=False)
        _strip_and_save(onnx.load(str(raw)), path)
    return {"opset": opset, "exporter": f"torch.onnx dynamo (torch {torch.__version__}, onnxscript "
                                        f"{version('onnxscript')})", "inputs": names_in[:3] + ["past_key_values.*"],
            "outputs": ["logits", "present.*"], "kv_cache": True, "num_layers": layers, "kv_heads": kv_heads,
            "head_dim": head_dim}


def quantize_onnx_weights(src: Path, dst: Path, o, lm_head: bool = True, embedding: bool = True,
                          linears: bool = True) -> dict[str, Any]:
    """ONNX Runtime quantization of the fp32 graph ``src`` into ``dst`` per ``o`` (``quantize.onnx``).

    blockwise (default): every Linear's MatMul becomes MatMulNBits — ``o.bits`` weights with one scale per
    ``o.block_size`` inputs; with accuracy_level 4 its input is rounded to int8 per block at run time (int8 dot
    products, the fast path on CPUs). ``o.head_bits`` gives the head and the embedding their own bits (8 with 4-bit
    Linears: the table that scores every token keeps its precision); ``o.symmetric=false`` gives the Linears a zero
    point per block. ``linears=False`` leaves the decoder's Linears in float (the benchmark's
    per-component costs). ``lm_head``: the output projection too; ``embedding``: the embedding Gather
    becomes GatherBlockQuantized, sharing a tied head's quantized table (quantize/onnx_head.py). Attention and
    rotary MatMuls stay float.
    dynamic: quantize_dynamic's MatMulInteger with int8 weights and one uint8 scale per activation tensor, computed
    at run time. Fine for small models; on SmolLM2 it fails twice: uint8×int8 products saturate on x86 CPUs without
    VNNI (ppl 55 -> 5e7; ``reduce_range`` avoids it) and one activation scale per tensor still costs +50%. It
    leaves the embedding in float."""
    big = (src.parent / EXTERNAL_DATA).is_file() or os.path.getsize(src) > PROTOBUF_LIMIT
    lib = f"onnxruntime {version_onnxruntime()}"
    if o.scheme == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=o.per_channel,
                         reduce_range=o.reduce_range, use_external_data_format=big)
        return {"scheme": "dynamic", "bits": 8, "weight_dtype": "int8", "library": lib,
                "weights": f"int8, symmetric, {'per output channel' if o.per_channel else 'per tensor'}"
                           f"{' (7-bit range)' if o.reduce_range else ''}",
                "activations": "uint8, one scale per tensor, computed at run time (dynamic)",
                "lm_head": True, "embedding": False}
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel

    from quantize.onnx_head import find_parts, quantize_gather, untie_head_weight

    model = onnx.load(str(src))
    parts = find_parts(model)
    if parts.head is None and lm_head:
        raise RuntimeError("no LM head MatMul found in the exported graph (quantize.lm_head=false skips it)")
    if parts.tied and lm_head:
        untie_head_weight(model, parts)
    head_bits = o.head_bits or o.bits
    # Only the Linear layers: MatMuls whose weight is a 2-D initializer (not rotary or attention products)
    weights = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    head = parts.head.name if parts.head is not None else None
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    linear = [n for n in matmuls if n != head] if linears else []
    heads = [head] if lm_head and head is not None else []
    model = _matmul_nbits(model, linear, o.bits, o.block_size, o.symmetric, o.accuracy_level)
    model = _matmul_nbits(model, heads, head_bits, o.block_size, True, o.accuracy_level)
    done = sum(n.op_type == "MatMulNBits" for n in model.graph.node)
    if done != len(linear) + len(heads):
        raise RuntimeError(f"MatMulNBits replaced {done} of {len(linear) + len(heads)} linear MatMuls")
    stored = None
    if embedding:
        head_q = next((n for n in model.graph.node if lm_head and n.output[0] == parts.head.output[0]), None)
        stored = quantize_gather(model, parts, head_bits, o.block_size, head_q if parts.tied else None)
    saved = ONNXModel(model)
    saved.clean_initializers()
    saved.save_model_to_file(str(dst), use_external_data_format=big)
    acts = {4: "int8, one scale per block, computed at run time", 3: "bfloat16", 2: "float16"}.get(
        o.accuracy_level, "float32")
    head_note = f"; head and embedding int{head_bits}, symmetric" if head_bits != o.bits or not o.symmetric else ""
    return {"scheme": "blockwise", "bits": o.bits, "head_bits": head_bits, "symmetric": o.symmetric,
            "weight_dtype": f"int{o.bits}", "library": lib,
            "weights": f"int{o.bits}, {'symmetric' if o.symmetric else 'asymmetric (zero point per block)'}, one "
                       f"scale per {o.block_size} inputs (MatMulNBits){head_note}",
            "activations": acts, "accuracy_level": o.accuracy_level, "block_size": o.block_size,
            "quantized_matmuls": done, "linears": linears, "lm_head": lm_head, "embedding": embedding,
            "tied_embedding": parts.tied,
            "embedding_storage": stored or "float32 (Gather)"}


def _matmul_nbits(model, names: list[str], bits: int, block_size: int, symmetric: bool, accuracy_level: int):
    """``model`` with the MatMuls named ``names`` (and no other) replaced by ORT's MatMulNBits of ``bits``."""
    if not names:
        return model
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    keep = set(names)
    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in keep]
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                     accuracy_level=accuracy_level, nodes_to_exclude=others,
                                     op_types_to_quantize=("MatMul",))
    quantizer.process()
    return quantizer.model.model


def onnx_weight_bytes(folder: Path) -> int:
    """Bytes of the served graph: model.onnx and its external data (not an extra fp32 copy kept beside it)."""
    return sum((folder / n).stat().st_size for n in (ONNX_FILE, EXTERNAL_DATA) if (folder / n).is_file())


def version_onnxruntime() -> str:
    import onnxruntime

    return onnxruntime.__version__
