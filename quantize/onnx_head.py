"""The embedding and the LM head of an exported graph, quantized like its Linear layers (ONNX Runtime contrib ops).

Rules:
- The embedding is the ``Gather`` of a 2-D initializer [vocab, hidden] indexed by ``input_ids``; the head is the
  ``MatMul`` whose weight is a [hidden, vocab] initializer (untied), or ``Transpose`` of the embedding (tied: the
  torch exporter keeps one table and transposes it at run time).
- The head becomes ``MatMulNBits`` (the Linears' blocks, bits and accuracy level). A tied head's weight is made an
  initializer first, so ORT's own ``MatMulNBitsQuantizer`` quantizes it with the other Linears.
- The embedding becomes ``GatherBlockQuantized`` (uint8 data, ``bits`` 4 or 8, blocks of ``block_size`` along
  hidden, symmetric: the default zero point 2^(bits-1), as MatMulNBits uses). Its data layout is MatMulNBits' B
  [vocab, blocks, block bytes] read as [vocab, hidden * bits / 8], and its scales are MatMulNBits' [vocab, blocks].
  So a tied, quantized embedding is stored once: the Gather reads the head's quantized weight and scales (through a
  Reshape of the constant). ORT's quantizer itself only makes 4-bit Gathers; the values here come from its
  ``DefaultWeightOnlyQuantizer.qbits_block_quant``, the routine that quantizes the MatMuls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HeadParts:
    gather: object          # the embedding Gather node
    embedding: str          # its table's initializer name
    vocab: int
    hidden: int
    head: object | None     # the head MatMul node (None: not found)
    tied: bool


def find_parts(model) -> HeadParts:
    """The embedding Gather and head MatMul of an exported causal LM graph (``onnx.ModelProto``)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    gathers = [n for n in g.node if n.op_type == "Gather" and n.input[0] in inits
               and len(inits[n.input[0]].dims) == 2 and n.input[1] == "input_ids"]
    if len(gathers) != 1:
        raise RuntimeError(f"expected one embedding Gather on input_ids, found {len(gathers)}")
    gather = gathers[0]
    vocab, hidden = inits[gather.input[0]].dims
    producer = {o: n for n in g.node for o in n.output}
    head, tied = None, False
    for n in g.node:
        if n.op_type != "MatMul":
            continue
        w = n.input[1]
        if w in inits and list(inits[w].dims) == [hidden, vocab]:
            head = n
        elif w in producer and producer[w].op_type == "Transpose" and producer[w].input[0] == gather.input[0]:
            head, tied = n, True
    return HeadParts(gather=gather, embedding=gather.input[0], vocab=vocab, hidden=hidden, head=head, tied=tied)


def untie_head_weight(model, parts: HeadParts) -> str:
    """Make a tied head's weight a [hidden, vocab] initializer (the embedding transposed) so the MatMul quantizer
    sees it; the Transpose node goes. Returns the new initializer's name."""
    from onnx import numpy_helper

    g = model.graph
    table = numpy_helper.to_array(next(t for t in g.initializer if t.name == parts.embedding))
    name = f"{parts.embedding}.T"
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(table.T), name))
    transposed = parts.head.input[1]
    parts.head.input[1] = name
    users = [n for n in g.node if transposed in n.input]
    if not users:
        keep = [n for n in g.node if transposed not in n.output]
        del g.node[:]
        g.node.extend(keep)
    return name


def quantize_gather(model, parts: HeadParts, bits: int, block_size: int, head_node=None) -> str:
    """Replace the embedding Gather by GatherBlockQuantized. ``head_node``: the tied head's MatMulNBits, whose
    weight and scales it then shares. Returns how the table is stored (for the manifest)."""
    from onnx import helper, numpy_helper

    g = model.graph
    gather = next(n for n in g.node if n.output[0] == parts.gather.output[0])
    row_bytes = parts.hidden * bits // 8
    new_nodes = []
    if head_node is not None:
        data, scales = f"{head_node.input[1]}_rows", head_node.input[2]
        shape = numpy_helper.from_array(np.array([parts.vocab, row_bytes], np.int64), f"{data}_shape")
        g.initializer.append(shape)
        new_nodes.append(helper.make_node("Reshape", [head_node.input[1], shape.name], [data],
                                          name=f"{gather.name}_rows"))
        stored = "shared with the head's MatMulNBits (stored once)"
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            DefaultWeightOnlyQuantizer,
        )

        table = numpy_helper.to_array(next(t for t in g.initializer if t.name == parts.embedding))
        cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=bits)
        packed, sc, _ = DefaultWeightOnlyQuantizer(cfg).qbits_block_quant(np.ascontiguousarray(table.T))
        data, scales = f"{parts.embedding}_Q{bits}", f"{parts.embedding}_scales"
        g.initializer.extend([numpy_helper.from_array(packed.reshape(parts.vocab, -1), data),
                              numpy_helper.from_array(sc, scales)])
        stored = "its own quantized table"
    new_nodes.append(helper.make_node("GatherBlockQuantized", [data, gather.input[1], scales], [gather.output[0]],
                                      name=f"{gather.name}_Q{bits}", domain="com.microsoft", gather_axis=0,
                                      quantize_axis=1, block_size=block_size, bits=bits))
    nodes = []
    for n in g.node:
        nodes.extend(new_nodes if n.output[0] == gather.output[0] else [n])
    del g.node[:]
    g.node.extend(nodes)
    return stored
