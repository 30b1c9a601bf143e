"""QOperator int8 (onnxruntime's quantize_static with QuantFormat.QOperator): each weight op folded to a float
op between a DequantizeLinear and a QuantizeLinear, and written back.

onnxruntime writes a statically quantized Conv, MatMul or Gemm as one integer op on uint8 activations:

    QLinearConv(xq, xs, xz, wq, ws, wz, ys, yz, B)          B int32 of scale xs * ws
    QLinearMatMul(aq, as, az, bq, bs, bz, ys, yz)
    QGemm(aq, as, az, bq, bs, bz, C, ys, yz)  (com.microsoft; without ys the output is float)

Loading turns each into `DequantizeLinear(xq, xs, xz) -> Conv|MatMul|Gemm(x, W, Bf) -> QuantizeLinear(y, ys, yz)`
with W = (wq - wz) * ws and Bf = B * xs * ws, the float op named like the integer op, so the rules, scores and
merges see a float layer; the activation ops between them (QLinearAdd, QLinearConcat...) keep their own rules.
Export puts the integer op back in place of the three nodes, with its name, inputs and attributes: the weight
quantized again with the scales and zero points of the channels it kept, the bias with xs * ws of those
channels. A node outside this form is refused with its name, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..errors import OnnxPruneError
from .names import fresh
from .quantized import Names, dequantize, drop_nodes, quantize

MS = "com.microsoft"
FLOAT_OP = {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "QGemm": "Gemm"}
# QLinear activation ops the rules follow (analysis.rules.qlinear); anything else QLinear stays refused
ACTIVATION_OPS = ("QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool",
                  "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax")
HANDLED = (*FLOAT_OP, *ACTIVATION_OPS)


@dataclass
class QLinearOp:
    """One integer weight op, folded to DequantizeLinear -> float op -> QuantizeLinear."""

    node: str  # the integer op's name, which the float op takes
    op: str
    domain: str
    weight_name: str
    scale_name: str
    zero_point_name: str | None
    scale: np.ndarray
    zero_point: np.ndarray | None
    dtype: np.dtype
    axis: int | None  # the weight's output-channel axis when its scale is per channel
    x_scale: np.ndarray
    dq: str  # the DequantizeLinear added before the float op
    q: str | None  # the QuantizeLinear added after it (None: QGemm with a float output)
    bias_name: str | None = None
    bias: np.ndarray | None = None  # the int32 bias as it came
    bias_float: np.ndarray | None = None  # ... and as the float op got it

    @property
    def per_channel(self) -> bool:
        """Whether the weight's scale is per output channel."""
        return self.axis is not None


def _refuse(node: gs.Node, why: str) -> None:
    """Raise the one-line refusal naming the node."""
    raise OnnxPruneError(f"{node.op} '{node.name}': {why} (onnxprune reads the QOperator form onnxruntime's "
                         "quantize_static writes)")


def _opt(node: gs.Node, i: int) -> gs.Tensor | None:
    """The i-th input, None when absent or empty."""
    if i >= len(node.inputs) or not node.inputs[i].name:
        return None
    return node.inputs[i]


def _const(node: gs.Node, i: int, what: str, required: bool = True) -> np.ndarray | None:
    """The values of a constant input (None when an optional one is absent); refuse a computed one."""
    t = _opt(node, i)
    if t is None:
        if required:
            _refuse(node, f"its {what} is missing")
        return None
    if not isinstance(t, gs.Constant):
        _refuse(node, f"its {what} '{t.name}' is computed")
    return np.asarray(t.values)


def _per_tensor(node: gs.Node, scales: tuple[int, ...]) -> None:
    """Activation scales (and the zero points after them) must be constants of one value."""
    for i in scales:
        for j, what in ((i, "scale"), (i + 1, "zero point")):
            v = _const(node, j, f"activation {what}", required=what == "scale")
            if v is not None and v.size != 1:
                _refuse(node, f"activation {what} '{node.inputs[j].name}' is not per tensor")


def fold_qoperator(graph: gs.Graph) -> list[QLinearOp]:
    """Replace every QLinearConv / QLinearMatMul / QGemm by DequantizeLinear -> float op -> QuantizeLinear."""
    records, gone = [], set()
    taken = set(graph.tensors()) | {n.name for n in graph.nodes}
    for node in list(graph.nodes):
        if node.op not in FLOAT_OP:
            continue
        if node.domain not in ((MS,) if node.op == "QGemm" else ("", "ai.onnx", None)):
            _refuse(node, f"the op of domain '{node.domain}' is not supported")
        if node.op == "QLinearMatMul" and not any(isinstance(t, gs.Constant) for t in node.inputs[:4:3]):
            continue  # two activations (attention scores): no weight; the rules follow it as it is
        node.name = node.name or fresh(node.op, taken)  # the float op and the records go by name
        records.append(_fold(graph, node, taken))
        gone.add(id(node))
    drop_nodes(graph, gone)
    return records


def _layout(node: gs.Node) -> tuple[int | None, int, int | None]:
    """(bias input, index of y_scale, weight output axis) of one integer op."""
    if node.op == "QLinearConv":
        return 8, 6, 0
    if node.op == "QLinearMatMul":
        return None, 6, 1
    if float(node.attrs.get("alpha", 1.0)) != 1.0:
        _refuse(node, f"alpha={node.attrs['alpha']} is not supported")
    return 6, 7, 0 if int(node.attrs.get("transB", 0)) else 1


def _fold(graph: gs.Graph, node: gs.Node, taken: set[str]) -> QLinearOp:
    """Check one integer op, put DequantizeLinear -> float op -> QuantizeLinear in its place; return its record."""
    bias_i, y_i, axis = _layout(node)
    if not isinstance(_opt(node, 0), gs.Variable):
        _refuse(node, "its input is a constant")
    _per_tensor(node, (1, y_i) if _opt(node, y_i) is not None or node.op != "QGemm" else (1,))
    q, scale = _const(node, 3, "weight"), _const(node, 4, "weight scale")
    zp = _const(node, 5, "weight zero point", required=False)
    rank_ok = q.ndim >= 3 if node.op == "QLinearConv" else q.ndim == 2
    if q.dtype.type not in (np.int8, np.uint8) or scale.dtype != np.float32 or not rank_ok:
        _refuse(node, f"a weight of type {q.dtype} and rank {q.ndim} with a {scale.dtype} scale is not supported")
    axis = _axis(node, q, scale, zp, axis)
    xs = np.asarray(node.inputs[1].values, np.float32).reshape(())
    w_t = node.inputs[3]
    values = dequantize(q, _flat(scale, axis), _flat(zp, axis), axis)
    weight = gs.Constant(fresh(f"{w_t.name}_dequantized", taken), values)
    inputs = [None, weight]
    record = QLinearOp(node.name, node.op, node.domain or "", w_t.name, node.inputs[4].name,
                       node.inputs[5].name if zp is not None else None, np.array(scale),
                       None if zp is None else np.array(zp), q.dtype, axis, xs, "", None)
    bias = _const(node, bias_i, "bias", required=False) if bias_i is not None else None
    if bias is not None:
        if bias.dtype != np.int32 or bias.ndim != 1:
            _refuse(node, f"a bias of type {bias.dtype} and rank {bias.ndim} is not supported")
        record.bias_name, record.bias = node.inputs[bias_i].name, np.array(bias)
        record.bias_float = bias.astype(np.float32) * _bias_scale(xs, scale, bias.size)
        inputs.append(gs.Constant(fresh(f"{record.bias_name}_dequantized", taken), record.bias_float))
    _insert(graph, node, record, inputs, y_i, taken)
    return record


def _flat(a: np.ndarray | None, axis: int | None) -> np.ndarray | None:
    """A per-channel scale or zero point as 1-D; a per-tensor one as it is."""
    return None if a is None else (a.reshape(-1) if axis is not None else a)


def _axis(node: gs.Node, q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> int | None:
    """The weight axis a per-channel scale runs along, None when per tensor."""
    if zp is not None and zp.dtype != q.dtype:
        _refuse(node, f"a weight zero point of type {zp.dtype} for {q.dtype} weights")
    if scale.size <= 1:
        if zp is not None and zp.size > 1:
            _refuse(node, "a weight zero point per channel with a per-tensor scale is not supported")
        return None
    if scale.ndim != 1 or scale.size != q.shape[axis] or (zp is not None and zp.size not in (1, scale.size)):
        _refuse(node, f"a weight scale of shape {list(scale.shape)} does not run along its output channels")
    return axis


def _bias_scale(xs: np.ndarray, scale: np.ndarray, size: int) -> np.ndarray:
    """xs * ws per output channel, in float32."""
    return np.broadcast_to((xs * scale.astype(np.float32).reshape(-1)).astype(np.float32), (size,))


def _insert(graph: gs.Graph, node: gs.Node, record: QLinearOp, inputs: list, y_i: int, taken: set[str]) -> None:
    """Put the DequantizeLinear, the float op and (with an output scale) the QuantizeLinear in the graph."""
    xq, yq = node.inputs[0], node.outputs[0]
    x = gs.Variable(fresh(f"{xq.name}_dequantized", taken), dtype=np.float32, shape=xq.shape)
    record.dq = fresh(f"{node.name}_DequantizeLinear", taken)
    graph.nodes.append(gs.Node("DequantizeLinear", name=record.dq, inputs=[xq, *node.inputs[1:3]], outputs=[x]))
    inputs[0] = x
    out = yq
    if _opt(node, y_i) is not None:
        out = gs.Variable(fresh(f"{yq.name}_float", taken), dtype=np.float32, shape=yq.shape)
        record.q = fresh(f"{node.name}_QuantizeLinear", taken)
        graph.nodes.append(gs.Node("QuantizeLinear", name=record.q, inputs=[out, *node.inputs[y_i:y_i + 2]],
                                   outputs=[yq]))
    node.outputs.clear()
    graph.nodes.append(gs.Node(FLOAT_OP[node.op], name=node.name, attrs=dict(node.attrs), inputs=inputs,
                               outputs=[out]))


def restore_qoperator(model: onnx.ModelProto, targets: dict[str, tuple[QLinearOp, np.ndarray | None]]
                      ) -> tuple[int, int, int]:
    """Put each target float op (by node name) back as its integer op, in place. Returns (ops, per channel, clipped)."""
    g = model.graph
    names, inits = Names(model), {t.name: t for t in g.initializer}
    by_name = {n.name: n for n in g.node}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    replaced: dict[str, onnx.NodeProto] = {}
    gone, drop = set(), set()
    shared = _Shared(names)
    done = per_channel = clipped = 0
    for record, kept in targets.values():
        fnode = by_name.get(record.node)
        if fnode is None or fnode.op_type != FLOAT_OP[record.op]:
            continue
        dq, q = _around(record, fnode, by_name)
        made, used, c = _integer_op(record, kept, fnode, inits, shared)
        drop |= {u for u in used if readers.get(u, 0) <= 1}
        replaced[(q or fnode).name] = _node(record, fnode, dq, q, made)
        gone |= {fnode.name, dq.name}
        done, per_channel, clipped = done + 1, per_channel + record.per_channel, clipped + c
    out_nodes = [replaced.get(n.name, n) for n in g.node if n.name not in gone or n.name in replaced]
    del g.node[:]
    g.node.extend(out_nodes)
    kept_inits = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept_inits + shared.inits)
    return done, per_channel, clipped


class _Shared:
    """Initializers made for the integer ops: one tensor for equal values of one base name (onnxruntime's quantizer
    shares equal int32 biases), a fresh name otherwise."""

    def __init__(self, names: Names):
        self.names, self.inits, self.made = names, [], {}

    def add(self, base: str, array: np.ndarray) -> str:
        """The name of an initializer holding `array`, made from `base`."""
        array = np.array(array, order="C")  # a scalar stays [] (np.ascontiguousarray would make it [1])
        key = (base, array.dtype.str, array.shape, array.tobytes())
        if key not in self.made:
            self.made[key] = self.names.fresh(base)
            self.inits.append(numpy_helper.from_array(array, self.made[key]))
        return self.made[key]


def _around(record: QLinearOp, fnode: onnx.NodeProto, by_name: dict[str, onnx.NodeProto]
            ) -> tuple[onnx.NodeProto, onnx.NodeProto | None]:
    """The DequantizeLinear before the float op and the QuantizeLinear after it, checked."""
    dq, q = by_name.get(record.dq), by_name.get(record.q) if record.q else None
    if dq is None or fnode.input[0] != dq.output[0] or (record.q and (q is None or q.input[0] != fnode.output[0])):
        raise OnnxPruneError(f"{record.op} '{record.node}': the rewrite changed the nodes around its float op "
                             "(a bias added after a QLinearMatMul?); it cannot be written back as an integer op")
    return dq, q


def _integer_op(record: QLinearOp, kept: np.ndarray | None, fnode: onnx.NodeProto, inits: dict, shared: _Shared
                ) -> tuple[list[str], list[str], int]:
    """Names of the integer weight, its scale and zero point ("" when absent) and the int32 bias (when the float op
    has one); the float initializers they replace; how many values were clipped."""
    init = inits[fnode.input[1]]
    values = numpy_helper.to_array(init)
    scale, zp = record.scale, record.zero_point
    if record.per_channel and kept is not None:
        scale = scale.reshape(-1)[kept]
        zp = None if zp is None else (zp.reshape(-1)[kept] if zp.size > 1 else zp)
    if record.per_channel and scale.size != values.shape[record.axis]:
        raise OnnxPruneError(f"{record.op} '{record.node}': {scale.size} scales for {values.shape[record.axis]} "
                             "output channels")
    wq, clipped = quantize(values, _flat(scale, record.axis), _flat(zp, record.axis), record.axis, record.dtype)
    made = [shared.add(record.weight_name, wq), shared.add(record.scale_name, scale),
            shared.add(record.zero_point_name, zp) if record.zero_point_name and zp is not None else ""]
    used = [init.name]
    if len(fnode.input) > 2 and fnode.input[2]:
        bias, c = _bias(record, kept, numpy_helper.to_array(inits[fnode.input[2]]), scale)
        made.append(shared.add(record.bias_name or f"{record.node}_bias_quantized", bias))
        used.append(fnode.input[2])
        clipped += c
    return made, used, clipped


def _bias(record: QLinearOp, kept: np.ndarray | None, values: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, int]:
    """The int32 bias of scale xs * ws of the kept channels: the original integers where only sliced."""
    if record.bias is not None:
        orig, orig_f = record.bias, record.bias_float
        if kept is not None and kept.size == orig.size:
            orig, orig_f = orig[kept], orig_f[kept]
        if orig_f.shape == values.shape and np.array_equal(orig_f, values):
            return np.array(orig), 0
    bs = _bias_scale(record.x_scale, scale, values.size).astype(np.float64)
    q = np.rint(values.astype(np.float64) / bs)
    info = np.iinfo(np.int32)
    clipped = int(np.count_nonzero((q < info.min) | (q > info.max)))
    return np.clip(q, info.min, info.max).astype(np.int32), clipped


def _node(record: QLinearOp, fnode: onnx.NodeProto, dq, q, made: list[str]) -> onnx.NodeProto:
    """The integer op with the float op's attributes (a rewrite may have changed `group`)."""
    x = [dq.input[0], dq.input[1], dq.input[2] if len(dq.input) > 2 else ""]
    w = made[:3]
    bias = [made[3]] if len(made) > 3 else [""]
    y = [q.input[1], q.input[2] if len(q.input) > 2 else ""] if q is not None else []
    inputs = [*x, *w, *(bias + y if record.op == "QGemm" else y + bias if record.op == "QLinearConv" else y)]
    while inputs and not inputs[-1]:
        inputs.pop()
    out = q.output[0] if q is not None else fnode.output[0]
    node = onnx.helper.make_node(record.op, inputs, [out], name=record.node, domain=record.domain or None)
    node.attribute.extend(fnode.attribute)
    return node
