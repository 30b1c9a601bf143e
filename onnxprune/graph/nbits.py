"""onnxruntime's MatMulNBits (2- to 8-bit block-quantized weights, as onnxruntime-genai LLMs ship them): each
node folded to a float MatMul, and written back as MatMulNBits.

`MatMulNBits(A, B, scales, zero_points)`, attributes K, N, bits, block_size: B is [N, K/block, block*bits/8]
uint8 with the values of each block packed low bits first, scales [N, K/block] (or flat), zero points packed
the same way along the blocks (absent: 2^(bits-1)). The float weight is W[k, n] = (q - zp) * scale of k's
block. Output channels (N) keep their own scales and zero points; input channels (K) can only go in whole
blocks, which the analysis enforces by coupling each block's input channels (`consumer_block`), so the
kept weights are quantized again on their own grid, exactly where they were only sliced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..errors import OnnxPruneError
from .quantized import Names, drop_nodes

MS = "com.microsoft"


@dataclass
class NBitsOp:
    """One MatMulNBits node of constant weights, folded to a float MatMul of the same name."""

    node: str
    attrs: dict[str, Any]
    inputs: list[str]  # B, scales, zero points names ("" when absent)
    scales: np.ndarray  # [N, blocks]
    zero_points: np.ndarray | None  # [N, blocks], unpacked
    scales_shape: tuple[int, ...]
    zero_points_shape: tuple[int, ...] | None
    bits: int
    block: int
    axis: int = 1  # the float weight [K, N] keeps a scale per output channel

    @property
    def per_channel(self) -> bool:
        """Always: each output row has its own scales."""
        return True

    @property
    def consumer_block(self) -> int:
        """Input channels go in whole blocks of this many."""
        return self.block


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` values of each row of `packed` (uint8, values packed low bits first)."""
    per_byte = 8 // bits
    rows = packed.reshape(packed.shape[0], -1)
    values = np.stack([(rows >> (bits * i)) & ((1 << bits) - 1) for i in range(per_byte)], axis=-1)
    return values.reshape(rows.shape[0], -1)[:, :count].astype(np.uint8)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Rows of small unsigned values packed into bytes, low bits first (rows padded with zeros)."""
    per_byte = 8 // bits
    n, count = values.shape
    padded = np.zeros((n, math.ceil(count / per_byte) * per_byte), np.uint8)
    padded[:, :count] = values
    groups = padded.reshape(n, -1, per_byte).astype(np.uint16)
    return sum((groups[..., i] << (bits * i)) for i in range(per_byte)).astype(np.uint8)


def fold_nbits(graph: gs.Graph) -> list[NBitsOp]:
    """Replace every MatMulNBits of constant weights by a float MatMul of the same name."""
    records, gone = [], set()
    for node in list(graph.nodes):
        if node.op == "MatMulNBits" and node.domain == MS:
            records.append(_fold(graph, node))
            gone.add(id(node))
    drop_nodes(graph, gone)
    return records


def _fold(graph: gs.Graph, node: gs.Node) -> NBitsOp:
    label = f"MatMulNBits '{node.name}'"
    given = [t if t is not None and t.name else None for t in node.inputs] + [None] * 6
    b, scales_t, zp_t = given[1], given[2], given[3]
    if any(t is not None for t in given[4:6]):
        raise OnnxPruneError(f"{label}: a g_idx or bias input is not supported")
    if not isinstance(b, gs.Constant) or not isinstance(scales_t, gs.Constant) or \
            (zp_t is not None and not isinstance(zp_t, gs.Constant)):
        raise OnnxPruneError(f"{label}: its weights, scales or zero points are computed")
    k, n, bits, block = (int(node.attrs[a]) for a in ("K", "N", "bits", "block_size"))
    if bits not in (2, 4, 8) or b.values.dtype != np.uint8:
        raise OnnxPruneError(f"{label}: {bits}-bit weights of type {b.values.dtype} are not supported")
    blocks = math.ceil(k / block)
    scales = np.asarray(scales_t.values).reshape(n, blocks)
    zps = None
    if zp_t is not None:
        if zp_t.values.dtype != np.uint8:
            raise OnnxPruneError(f"{label}: zero points of type {zp_t.values.dtype} are not supported (uint8 are)")
        zps = _unpack(np.asarray(zp_t.values).reshape(n, -1), bits, blocks)
    q = _unpack(np.asarray(b.values).reshape(n, -1), bits, blocks * block).reshape(n, blocks, block)
    zp = np.full((n, blocks), 1 << (bits - 1), np.int32) if zps is None else zps.astype(np.int32)
    w = (q.astype(np.int32) - zp[:, :, None]).astype(np.float32) * scales[:, :, None].astype(np.float32)
    weight = w.reshape(n, -1)[:, :k].T.astype(scales.dtype)
    record = NBitsOp(node.name, dict(node.attrs), [b.name, scales_t.name, zp_t.name if zp_t is not None else ""],
                     np.array(scales), zps, tuple(scales_t.values.shape),
                     tuple(zp_t.values.shape) if zp_t is not None else None, bits, block)
    out = node.outputs[0]
    node.outputs.clear()
    graph.nodes.append(gs.Node("MatMul", name=node.name, inputs=[node.inputs[0], gs.Constant(f"{b.name}_dequantized",
                                                                                           np.ascontiguousarray(weight))],
                               outputs=[out]))
    return record


def restore_nbits(model: onnx.ModelProto, targets: dict[str, tuple[NBitsOp, dict[int, np.ndarray]]]
                  ) -> tuple[int, int]:
    """Put each target float MatMul (by node name) back as MatMulNBits, in place; (nodes, values clipped)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    names, new_inits, drop = Names(model), [], set()
    done = clipped = 0
    for i, n in enumerate(g.node):
        if n.name not in targets or n.op_type != "MatMul":
            continue
        record, masks = targets[n.name]
        weight = n.input[1]
        node, made, c = _nbits_node(record, n, numpy_helper.to_array(inits[weight]), masks, names)
        g.node[i].CopyFrom(node)  # n is g.node[i]: it reads the new inputs from here on
        new_inits += made
        drop.add(weight)
        done, clipped = done + 1, clipped + c
    kept = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    return done, clipped


def _nbits_node(record: NBitsOp, float_node: onnx.NodeProto, w: np.ndarray, masks: dict[int, np.ndarray],
                names: Names) -> tuple[onnx.NodeProto, list[onnx.TensorProto], int]:
    """The MatMulNBits computing this float weight [K', N'] on the grid of the rows and blocks it kept."""
    k_new, n_new = w.shape
    rows = masks.get(1, np.ones(record.scales.shape[0], bool))
    block_kept = _whole_blocks(record, masks.get(0))
    scales = record.scales[rows][:, block_kept]
    zp = (np.full(scales.shape, 1 << (record.bits - 1), np.int32) if record.zero_points is None
          else record.zero_points[rows][:, block_kept].astype(np.int32))
    blocks = scales.shape[1]
    if blocks != math.ceil(k_new / record.block) or scales.shape[0] != n_new:
        raise OnnxPruneError(f"MatMulNBits '{record.node}': {scales.shape} scales for a {k_new}x{n_new} weight")
    padded = np.zeros((n_new, blocks * record.block), np.float32)
    padded[:, :k_new] = w.T
    grid = padded.reshape(n_new, blocks, record.block) / scales[:, :, None].astype(np.float32)
    q = np.rint(grid) + zp[:, :, None]
    top = (1 << record.bits) - 1
    clipped = int(np.count_nonzero((q < 0) | (q > top)))
    q = np.clip(q, 0, top).astype(np.uint8).reshape(n_new, -1)
    b_name, s_name, z_name = (names.fresh(x) if x else "" for x in record.inputs)
    made = [numpy_helper.from_array(_pack(q, record.bits).reshape(n_new, blocks, -1), b_name),
            numpy_helper.from_array(scales.reshape(-1 if len(record.scales_shape) == 1 else (n_new, blocks)), s_name)]
    inputs = [float_node.input[0], b_name, s_name]
    if record.zero_points is not None:
        packed = _pack(zp.astype(np.uint8), record.bits)
        made.append(numpy_helper.from_array(packed.reshape(-1) if len(record.zero_points_shape) == 1 else packed,
                                            z_name))
        inputs.append(z_name)
    attrs = {**record.attrs, "K": k_new, "N": n_new}
    node = onnx.helper.make_node("MatMulNBits", inputs, list(float_node.output), name=record.node, domain=MS, **attrs)
    return node, made, clipped


def _whole_blocks(record: NBitsOp, kept: np.ndarray | None) -> np.ndarray:
    """Which blocks of K stay; refuse a removal that cuts a block (the analysis couples blocks, so it never does)."""
    blocks = record.scales.shape[1]
    if kept is None:
        return np.ones(blocks, bool)
    padded = np.concatenate([kept, np.repeat(kept[-1:], blocks * record.block - len(kept))])
    per_block = padded.reshape(blocks, record.block)
    if not (per_block.all(axis=1) | ~per_block.any(axis=1)).all():
        raise OnnxPruneError(f"MatMulNBits '{record.node}': input channels removed from inside a block of "
                             f"{record.block}")
    return per_block[:, 0]
