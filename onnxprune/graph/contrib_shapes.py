"""Stand-ins for onnxruntime's fused `com.microsoft` ops, so onnx's shape inference sees through them.

onnx knows no schema for these ops and leaves their outputs (and everything after them) without a
shape. In the inference skeleton only, each one is replaced by default-domain nodes whose outputs
have the same shapes (never run: they only carry shapes). An op, or an output, not listed here keeps
an unknown shape.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
SAME_SHAPE = {"Gelu", "QuickGelu", "FastGelu", "BiasGelu", "BiasAdd"}
SKIP_NORMS = {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization"}


class _Nodes:
    """Builds the stand-in nodes of one contrib node, with temporary names private to it."""

    def __init__(self, node: gs.Node, opset: int):
        self.node, self.opset, self.protos = node, opset, []
        self.prefix = f"{node.outputs[0].name}__shape_stand_in"

    def add(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        """Append one node; returns its output name (a fresh one unless given)."""
        out = output or f"{self.prefix}_{len(self.protos)}"
        self.protos.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(self, values) -> str:
        """A Constant node holding these values."""
        return self.add("Constant", [], value=numpy_helper.from_array(np.asarray(values)))

    def reduce_sum(self, x: str, axes: list[int], keepdims: int) -> str:
        """ReduceSum with axes as an attribute (before opset 13) or an input."""
        if self.opset < 13:
            return self.add("ReduceSum", [x], axes=axes, keepdims=keepdims)
        return self.add("ReduceSum", [x, self.const(np.array(axes, np.int64))], keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        """Unsqueeze with axes as an attribute (before opset 13) or an input."""
        if self.opset < 13:
            return self.add("Unsqueeze", [x], axes=axes)
        return self.add("Unsqueeze", [x, self.const(np.array(axes, np.int64))])


def _name(node: gs.Node, i: int, io: str = "in") -> str | None:
    """The name of an input or output, None when absent or empty."""
    tensors = node.inputs if io == "in" else node.outputs
    return tensors[i].name if i < len(tensors) and tensors[i].name else None


def _same_shape(n: _Nodes) -> None:
    """Element-wise ops: output 0 (and a skip norm's input_skip_bias_sum) shaped like input 0."""
    n.add("Identity", [_name(n.node, 0)], n.node.outputs[0].name)
    if n.node.op in SKIP_NORMS and _name(n.node, 3, "out"):
        n.add("Identity", [_name(n.node, 0)], _name(n.node, 3, "out"))


def _embed(n: _Nodes) -> None:
    """EmbedLayerNormalization: [B, S] ids -> [B, S, hidden]; mask_index [B]."""
    ids, table = _name(n.node, 0), _name(n.node, 2)
    for i in (0, 2):
        if _name(n.node, i, "out"):
            n.add("Gather", [table, ids], _name(n.node, i, "out"), axis=0)
    if _name(n.node, 1, "out"):
        n.add("Gather", [ids, n.const(np.array(0, np.int64))], _name(n.node, 1, "out"), axis=1)


def _attention(n: _Nodes) -> None:
    """Attention: input [B, S, in] times packed weights [in, q + k + v] -> output [B, S, v]."""
    w = n.node.inputs[1] if len(n.node.inputs) > 1 else None
    if not isinstance(w, gs.Constant) or w.values.ndim != 2:
        return
    sizes = n.node.attrs.get("qkv_hidden_sizes")
    v = int(sizes[2]) if sizes is not None and len(sizes) == 3 else w.values.shape[1] // 3
    zero = n.const(np.zeros((), w.values.dtype))
    proj = n.add("Expand", [zero, n.const(np.array([w.values.shape[0], v], np.int64))])
    n.add("MatMul", [_name(n.node, 0), proj], n.node.outputs[0].name)


def _multi_head(n: _Nodes) -> None:
    """MultiHeadAttention with separate Q [B, S, *], K and V: output [B, S, v_hidden].

    V is [B, L, v_hidden] or [B, N, L, H]: summing over its axis -2 (L in both) and flattening after
    the batch gives v_hidden either way; the packed layouts (no value input) keep unknown shapes.
    """
    q, v = _name(n.node, 0), _name(n.node, 2)
    if v is None or _name(n.node, 1) is None:
        return
    per_v = n.unsqueeze(n.add("Flatten", [n.reduce_sum(v, [-2], 0)], axis=1), [1])  # [B, 1, v_hidden]
    per_q = n.reduce_sum(q, [2], 1)  # [B, S, 1]
    n.add("Mul", [per_q, per_v], n.node.outputs[0].name)


def _group_query(n: _Nodes) -> None:
    """GroupQueryAttention: output [B, S, num_heads * head_size], packed QKV or not."""
    q = _name(n.node, 0)
    if _name(n.node, 1) is not None:
        n.add("Identity", [q], n.node.outputs[0].name)
        return
    heads, kv = int(n.node.attrs.get("num_heads", 0)), int(n.node.attrs.get("kv_num_heads", 0))
    if heads <= 0 or kv <= 0:
        return
    split = n.add("Reshape", [q, n.const(np.array([0, 0, heads + 2 * kv, -1], np.int64))])
    first = n.add("Gather", [split, n.const(np.arange(heads, dtype=np.int64))], axis=2)
    n.add("Reshape", [first, n.const(np.array([0, 0, -1], np.int64))], n.node.outputs[0].name)


def _qlinear_elementwise(n: _Nodes) -> None:
    """QLinearAdd / QLinearMul: the broadcast of inputs 0 and 3, in the output's integer type."""
    node = n.node
    a = n.add("Cast", [_name(node, 0)], to=TensorProto.FLOAT)
    b = n.add("Cast", [_name(node, 3)], to=TensorProto.FLOAT)
    n.add("Cast", [n.add("Add", [a, b])], node.outputs[0].name, to=_out_type(node, 7))


def _out_type(node: gs.Node, zp_index: int) -> int:
    """The ONNX type of the output: its zero point's (uint8 without one)."""
    zp = node.inputs[zp_index] if zp_index < len(node.inputs) else None
    dtype = zp.values.dtype if isinstance(zp, gs.Constant) else np.dtype(np.uint8)
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _qlinear_concat(n: _Nodes) -> None:
    """QLinearConcat: inputs 2, 5, 8... joined on `axis`."""
    node = n.node
    xs = [_name(node, i) for i in range(2, len(node.inputs), 3)]
    n.add("Concat", xs, node.outputs[0].name, axis=int(node.attrs.get("axis", 0)))


def _qlinear_pool(n: _Nodes) -> None:
    """QLinear(Global)AveragePool, channels first: the float pool's shape, in the output's integer type."""
    node = n.node
    if int(node.attrs.get("channels_last", 0)):
        return
    x = n.add("Cast", [_name(node, 0)], to=TensorProto.FLOAT)
    attrs = {k: v for k, v in node.attrs.items() if k != "channels_last"}
    op = "GlobalAveragePool" if node.op == "QLinearGlobalAveragePool" else "AveragePool"
    n.add("Cast", [n.add(op, [x], **attrs)], node.outputs[0].name, to=_out_type(node, 4))


QLINEAR_STAND_INS = {"QLinearAdd": _qlinear_elementwise, "QLinearMul": _qlinear_elementwise, "QLinearConcat": _qlinear_concat,
                     "QLinearGlobalAveragePool": _qlinear_pool, "QLinearAveragePool": _qlinear_pool,
                     "QLinearSigmoid": _same_shape, "QLinearLeakyRelu": _same_shape, "QLinearSoftmax": _same_shape}


STAND_INS: dict[str, Callable[[_Nodes], None]] = {
    **{op: _same_shape for op in SAME_SHAPE | SKIP_NORMS},
    **QLINEAR_STAND_INS,
    "EmbedLayerNormalization": _embed,
    "Attention": _attention,
    "MultiHeadAttention": _multi_head,
    "GroupQueryAttention": _group_query,
}


def stand_in(node: gs.Node, opset: int) -> list[onnx.NodeProto] | None:
    """Default-domain nodes shaped like a fused com.microsoft node's outputs, or None (keep the node)."""
    make = STAND_INS.get(node.op) if node.domain == MS else None
    if make is None or not node.outputs or not _name(node, 0):
        return None
    n = _Nodes(node, opset)
    make(n)
    return n.protos or None
