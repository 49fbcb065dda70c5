"""Where the bytes of a quantized checkpoint go: the quantized linear layers against their fp16 size, and the rest
(embeddings, norms, an untied lm_head) that stays in float. Read from the safetensors headers only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# safetensors dtype codes -> bytes per element
ITEM_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
              "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _tensors(folder: Path) -> dict[str, tuple[str, list[int], int]]:
    """name -> (dtype, shape, bytes) for every tensor of the folder's safetensors files."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            out[name] = (info["dtype"], info["shape"], info["data_offsets"][1] - info["data_offsets"][0])
    return out


def breakdown(folder: Path) -> dict[str, Any] | None:
    """Bytes of the quantized layers (GPTQ ``qweight``/``qzeros``/``scales``/``g_idx``, or int8 ``weight`` +
    ``weight_scale``), the fp16 bytes the same layers would take, and the bytes of everything else. None for a
    folder without quantized layers."""
    tensors = _tensors(folder)
    modules: dict[str, int] = {}  # module prefix -> number of weights
    for name, (_dtype, shape, _) in tensors.items():
        if name.endswith(".qweight"):  # GPTQ: int32 words packing 32/bits values along the input dimension
            prefix = name[: -len(".qweight")]
            bits = _gptq_bits(folder)
            modules[prefix] = round(shape[0] * 32 / bits) * shape[1]
        elif name.endswith(".weight_scale") and f"{name[: -len('_scale')]}" in tensors:
            prefix = name[: -len(".weight_scale")]
            modules[prefix] = math.prod(tensors[f"{prefix}.weight"][1])
    if not modules:
        return None
    quant = sum(b for n, (_, _, b) in tensors.items() if n.rsplit(".", 1)[0] in modules)
    total = sum(b for _, _, b in tensors.values())
    fp16 = 2 * sum(modules.values())
    return {"quantized_layers": len(modules), "quantized_layer_bytes": quant, "quantized_layers_fp16_bytes": fp16,
            "quantized_layers_vs_fp16": quant / fp16, "unquantized_bytes": total - quant}


def _gptq_bits(folder: Path) -> int:
    cfg = json.loads((Path(folder) / "config.json").read_text())
    return int(cfg["quantization_config"]["bits"])
