"""Dynamic int8 (onnxruntime's quantize_dynamic): each integer op folded to a float op, and written back.

onnxruntime writes a dynamically quantized Conv or MatMul as

    x -> DynamicQuantizeLinear -> (xq, xs, xz)
    ConvInteger|MatMulInteger(xq, Wq, xz, wz) -> Cast(float) -> Mul(., Mul(xs, w_scale)) -> y

Loading turns that into `Conv|MatMul(x, W)` with W = (Wq - wz) * w_scale, named like the integer op, so
the rules, scores and merges see a float layer. Export puts the pattern back around the (pruned) float
op: the weight is quantized again on its own grid (the scale and zero point of the channels it kept),
the DynamicQuantizeLinear nodes come back shared as they were, with every name. A pattern that differs
from this is refused with the node named, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..errors import OnnxPruneError
from .quantized import INTEGER_TYPES, Names, dequantize, drop_nodes, quantize

FLOAT_OP = {"ConvInteger": "Conv", "MatMulInteger": "MatMul"}


@dataclass
class IntegerOp:
    """One integer op of constant weights and the dynamic-quantization nodes around it."""

    node: str  # the integer op's name, which the float op takes
    op: str
    attrs: dict[str, Any]
    q_name: str
    zero_point_name: str | None
    scale_name: str
    scale: np.ndarray
    zero_point: np.ndarray | None
    dtype: np.dtype
    axis: int | None  # the weight's output-channel axis when the scale is per channel
    x: str  # the float input of the DynamicQuantizeLinear
    dql: tuple[str, list[str]]  # its name and outputs (xq, xs, xz)
    scales: tuple[str, list[str], str]  # Mul(xs, w_scale): name, inputs in order, output
    cast: tuple[str, str, dict]  # name, output, attributes
    int_out: str
    scaled: tuple[str, list[str]]  # the last Mul: name, inputs in order (its output is the float op's)
    uses_x_zero_point: bool = True

    @property
    def per_channel(self) -> bool:
        """Whether the weight's scale is per output channel."""
        return self.axis is not None


def _only_reader(t: gs.Tensor) -> gs.Node | None:
    return t.outputs[0] if len(t.outputs) == 1 else None


def _refuse(node: gs.Node, why: str) -> None:
    raise OnnxPruneError(f"{node.op} '{node.name}': {why} (onnxprune reads the pattern onnxruntime's "
                         "quantize_dynamic writes)")


def fold_integer_ops(graph: gs.Graph) -> list[IntegerOp]:
    """Replace every ConvInteger / MatMulInteger pattern by its float op; return what was folded."""
    records, gone = [], set()
    for node in list(graph.nodes):
        if node.op in FLOAT_OP and node.domain in ("", "ai.onnx", None):
            record, removed = _fold(graph, node)
            records.append(record)
            gone |= removed
    drop_nodes(graph, gone)
    return records


def _fold(graph: gs.Graph, node: gs.Node) -> tuple[IntegerOp, set[int]]:
    """Check one integer op's pattern, put its float op in the graph; return the record and nodes replaced."""
    xq, w = node.inputs[0], node.inputs[1]
    xz = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    wz = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
    if not isinstance(w, gs.Constant) or (wz is not None and not isinstance(wz, gs.Constant)):
        _refuse(node, "its weight or weight zero point is computed")
    dql = xq.inputs[0] if len(xq.inputs) == 1 else None
    if dql is None or dql.op != "DynamicQuantizeLinear" or (xz is not None and xz is not dql.outputs[2]):
        _refuse(node, "its input is not quantized by a DynamicQuantizeLinear")
    cast = _only_reader(node.outputs[0])
    mul = _only_reader(cast.outputs[0]) if cast is not None and cast.op == "Cast" else None
    if mul is None or mul.op != "Mul":
        _refuse(node, "its output is not cast to float and scaled by one Mul")
    scales_t = mul.inputs[1] if mul.inputs[0] is cast.outputs[0] else mul.inputs[0]
    scales = scales_t.inputs[0] if len(scales_t.inputs) == 1 else None
    if scales is None or scales.op != "Mul" or _only_reader(scales_t) is not mul or \
            dql.outputs[1] not in scales.inputs:
        _refuse(node, "its output scale is not the input scale times a constant weight scale")
    w_scale = next((t for t in scales.inputs if t is not dql.outputs[1]), None)
    if not isinstance(w_scale, gs.Constant):
        _refuse(node, "its weight scale is computed")
    q, scale = np.asarray(w.values), np.asarray(w_scale.values)
    if q.dtype.type not in INTEGER_TYPES or scale.dtype != np.float32:
        _refuse(node, f"weights of type {q.dtype} with a {scale.dtype} scale are not supported")
    axis = _axis(node, q, scale)
    zp = None if wz is None else np.asarray(wz.values)
    record = IntegerOp(node.name, node.op, dict(node.attrs), w.name, wz.name if wz is not None else None,
                       w_scale.name, np.array(scale), None if zp is None else np.array(zp), q.dtype, axis,
                       dql.inputs[0].name, (dql.name, [t.name for t in dql.outputs]),
                       (scales.name, [t.name for t in scales.inputs], scales_t.name),
                       (cast.name, cast.outputs[0].name, dict(cast.attrs)), node.outputs[0].name,
                       (mul.name, [t.name for t in mul.inputs]), uses_x_zero_point=xz is not None)
    weight = gs.Constant(f"{w.name}_dequantized", _float_weight(q, scale, zp, axis))
    out = mul.outputs[0]
    mul.outputs.clear()
    graph.nodes.append(gs.Node(FLOAT_OP[node.op], name=node.name, attrs=dict(node.attrs),
                               inputs=[dql.inputs[0], weight], outputs=[out]))
    node.outputs.clear()
    return record, {id(node), id(cast), id(mul), id(scales)}


def _axis(node: gs.Node, q: np.ndarray, scale: np.ndarray) -> int | None:
    """The weight axis a per-channel scale runs along (Conv: 0, MatMul: 1), None when per tensor."""
    if scale.size <= 1:
        return None
    axis = 0 if node.op == "ConvInteger" else q.ndim - 1
    if scale.ndim != 1 or scale.size != q.shape[axis]:
        _refuse(node, f"a weight scale of shape {list(scale.shape)} does not run along its output channels")
    return axis


def _float_weight(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int | None) -> np.ndarray:
    if zp is not None and zp.size > 1 and axis is None:
        raise OnnxPruneError("a weight zero point per channel with a per-tensor scale is not supported")
    return dequantize(q, scale.reshape(-1) if axis is not None else scale, None if zp is None else
                      (zp.reshape(-1) if axis is not None else zp), axis)


def restore_integer_ops(model: onnx.ModelProto, targets: dict[str, tuple[IntegerOp, np.ndarray | None]]
                        ) -> tuple[int, int, int]:
    """Put each target float op (by node name) back into its integer pattern, in place.

    Returns (ops, per channel, values clipped)."""
    g = model.graph
    names = Names(model)
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    out_nodes, new_inits, drop = [], [], set()
    emitted = {n.name for n in g.node if n.op_type == "DynamicQuantizeLinear"}  # ones the fold left in place
    done = clipped = per_channel = 0
    for n in g.node:
        if n.name not in targets or n.op_type != FLOAT_OP[targets[n.name][0].op]:
            out_nodes.append(n)
            continue
        record, kept = targets[n.name]
        init = inits[n.input[1]]
        values = numpy_helper.to_array(init)
        scale, zp = _kept(record, kept, values.shape)
        q, c = quantize(values, scale.reshape(-1) if record.axis is not None else scale,
                        zp if zp is None or record.axis is None else zp.reshape(-1), record.axis, record.dtype)
        clipped, done, per_channel = clipped + c, done + 1, per_channel + record.per_channel
        if readers.get(init.name, 0) <= 1:
            drop.add(init.name)
        q_name, s_name = names.fresh(record.q_name), names.fresh(record.scale_name)
        z_name = names.fresh(record.zero_point_name) if record.zero_point_name and zp is not None else ""
        new_inits += [numpy_helper.from_array(q, q_name), numpy_helper.from_array(np.array(scale, order="C"), s_name)]
        if z_name:
            new_inits.append(numpy_helper.from_array(np.array(zp, order="C"), z_name))
        out_nodes += _pattern(record, n, q_name, s_name, z_name, emitted, names, values.ndim)
    kept_inits = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept_inits + new_inits)
    del g.node[:]
    g.node.extend(out_nodes)
    return done, per_channel, clipped


def _kept(record: IntegerOp, kept: np.ndarray | None, shape: tuple[int, ...]):
    scale, zp = record.scale, record.zero_point
    if record.per_channel:
        if kept is not None:
            scale = scale.reshape(-1)[kept]
            zp = None if zp is None else (zp.reshape(-1)[kept] if zp.size > 1 else zp)
        if scale.size != shape[record.axis]:
            raise OnnxPruneError(f"{record.op} '{record.node}': {scale.size} scales for {shape[record.axis]} "
                                 "output channels")
    return scale, zp


def _pattern(record: IntegerOp, float_node: onnx.NodeProto, q: str, scale: str, zp: str, emitted: set,
             names: Names, rank: int) -> list[onnx.NodeProto]:
    """The DynamicQuantizeLinear (once per input), the scale Mul, the integer op, Cast and output Mul."""
    make = onnx.helper.make_node
    nodes = []
    dql_name, (xq, xs, xz) = record.dql
    if dql_name not in emitted:
        emitted.add(dql_name)
        nodes.append(make("DynamicQuantizeLinear", [float_node.input[0]], [xq, xs, xz], name=dql_name))
    s_name, s_inputs, s_out = record.scales
    s_inputs = [scale if t == record.scale_name else t for t in s_inputs]
    nodes.append(make("Mul", s_inputs, [s_out], name=s_name))
    inputs = [xq, q, xz if record.uses_x_zero_point else "", zp]
    while inputs and not inputs[-1]:
        inputs.pop()
    nodes.append(make(record.op, inputs, [record.int_out], name=record.node, **record.attrs))
    c_name, c_out, c_attrs = record.cast
    nodes.append(make("Cast", [record.int_out], [c_out], name=c_name, **c_attrs))
    m_name, m_inputs = record.scaled
    out = float_node.output[0]
    bias = float_node.input[2] if len(float_node.input) > 2 and float_node.input[2] else None
    scaled = names.fresh(out + "_unbiased") if bias else out
    nodes.append(make("Mul", [c_out if t == c_out else s_out for t in m_inputs], [scaled], name=m_name))
    if bias:  # a bias a merge gave the float op: added after the scaling, per output channel
        shape_name = names.fresh(out + "_bias_shape")
        nodes.append(make("Constant", [], [shape_name],
                          value=numpy_helper.from_array(np.array([-1] + [1] * (rank - 2), np.int64))))
        nodes.append(make("Reshape", [bias, shape_name], [names.fresh(out + "_bias")]))
        nodes.append(make("Add", [scaled, nodes[-1].output[0]], [out], name=names.fresh(record.node + "_bias_add")))
    return nodes
