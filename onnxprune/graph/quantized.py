"""Quantized weights in QDQ form: folded to float for the pipeline, re-quantized with their own scales on export.

A weight `DequantizeLinear(q, scale, zero_point)` of constants (optionally `QuantizeLinear` of a float constant
before it) becomes a float constant under the DequantizeLinear's output name, computed exactly as onnxruntime
computes it, so analysis, scores and merges read the real weight. When the model is exported, each such
constant goes back behind its DequantizeLinear: the scale and zero point keep the channels the weight kept on
the quantization axis, and the values are quantized again with them. A weight that was only sliced comes back
bit for bit; one a merge or a re-fit changed is rounded to its channel's grid (values outside the integer
range are clipped, and counted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..errors import OnnxPruneError
from .names import fresh

INTEGER_TYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32)


@dataclass
class QuantizedWeight:
    """One weight DequantizeLinear (and the QuantizeLinear of a float constant before it, if any)."""

    out: str  # the DequantizeLinear's output: the float constant the pipeline sees
    dq_node: str
    q_name: str  # the integer input of the DequantizeLinear
    scale_name: str
    zero_point_name: str | None
    scale: np.ndarray
    zero_point: np.ndarray | None
    dtype: np.dtype
    axis: int | None  # the quantization axis of the weight, None when per-tensor
    dq_attrs: dict[str, Any] = field(default_factory=dict)
    quantize_node: str | None = None  # a QuantizeLinear of a float constant feeding the DequantizeLinear
    float_name: str | None = None
    q_scale_name: str | None = None
    q_zero_point_name: str | None = None
    q_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def per_channel(self) -> bool:
        """Whether the weight has a scale per channel on one axis."""
        return self.axis is not None


@dataclass
class Requantized:
    """What putting the weights back did: how many, and how many values fell outside the integer range."""

    weights: int = 0
    clipped: int = 0
    per_channel: int = 0
    dynamic: int = 0  # of the weights, those of dynamic int8 ops (graph.dynamic_int8)
    nbits: int = 0  # of the weights, those of MatMulNBits ops (graph.nbits)


def _const(t: gs.Tensor | None) -> np.ndarray | None:
    return t.values if isinstance(t, gs.Constant) else None


def _optional(node: gs.Node, i: int) -> gs.Tensor | None:
    if i >= len(node.inputs):
        return None
    t = node.inputs[i]
    return None if (isinstance(t, gs.Variable) and not t.name) else t


def _quant_axis(node: gs.Node, scale: np.ndarray, rank: int) -> int | None:
    """The axis a per-axis scale runs along, None for a per-tensor scale."""
    if scale.size <= 1 and scale.ndim <= 1:
        return None
    axis = int(node.attrs.get("axis", 1))
    return axis + rank if axis < 0 else axis


def _check_types(node: gs.Node, label: str, q: np.ndarray, scale: np.ndarray) -> None:
    """Refuse integer and scale types this module does not quantize exactly."""
    if int(node.attrs.get("block_size", 0) or 0):
        raise OnnxPruneError(f"DequantizeLinear '{label}': block-wise quantization (block_size="
                             f"{node.attrs['block_size']}) is not supported")
    if q.dtype.type not in INTEGER_TYPES:
        raise OnnxPruneError(f"DequantizeLinear '{label}': weights of type {q.dtype} are not supported "
                             "(int8, uint8, int16, uint16 and int32 are)")
    if scale.dtype != np.float32:
        raise OnnxPruneError(f"DequantizeLinear '{label}': a {scale.dtype} scale is not supported (float32 is)")


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None) -> np.ndarray:
    """(q - zero_point) * scale in float32, as onnxruntime's DequantizeLinear computes it."""
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis] = -1
    zp = np.zeros((), np.int64) if zero_point is None else zero_point.astype(np.int64).reshape(shape)
    centred = (q.astype(np.int64) - zp).astype(np.float32)
    return centred * scale.astype(np.float32).reshape(shape if axis is not None else [])


def quantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None,
             dtype: np.dtype) -> tuple[np.ndarray, int]:
    """The integers whose dequantized values are nearest `values` on this grid, and how many were clipped."""
    shape = [1] * values.ndim
    if axis is not None:
        shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape if axis is not None else [])
    zp = np.zeros((), np.float64) if zero_point is None else zero_point.astype(np.float64).reshape(shape)
    q = np.rint(values.astype(np.float32) / s).astype(np.float64) + zp
    info = np.iinfo(dtype)
    clipped = int(np.count_nonzero((q < info.min) | (q > info.max)))
    return np.clip(q, info.min, info.max).astype(dtype), clipped


def drop_nodes(graph: gs.Graph, gone: set[int], sort: bool = True) -> None:
    """Remove these nodes (by id) and what only they computed; `sort`: put the graph in topological order again
    (a fold that appended nodes needs it)."""
    if gone:
        graph.nodes = [n for n in graph.nodes if id(n) not in gone]
        graph.cleanup(remove_unused_graph_inputs=False)
        if sort:
            graph.toposort()


def fold_weights(graph: gs.Graph) -> list[QuantizedWeight]:
    """Replace each weight DequantizeLinear of constants by its float values; return what was folded."""
    folded, gone = [], set()
    outputs = {t.name for t in graph.outputs}
    for node in graph.nodes:
        if node.op != "DequantizeLinear" or node.domain not in ("", "ai.onnx", None):
            continue
        record = _fold(node, outputs)
        if record is not None:
            folded.append(record)
            gone.add(id(node))
            if record.quantize_node is not None:
                gone.add(id(node.inputs[0].inputs[0]))
    drop_nodes(graph, gone, sort=False)  # nothing was appended: the order stays as it came
    return folded


def _fold(node: gs.Node, graph_outputs: set[str]) -> QuantizedWeight | None:
    """Fold one DequantizeLinear whose inputs are constants (or a QuantizeLinear of constants); else None."""
    label = node.name or node.outputs[0].name
    x, scale_t, zp_t = node.inputs[0], node.inputs[1], _optional(node, 2)
    scale, zp = _const(scale_t), _const(zp_t)
    if scale is None or (zp_t is not None and zp is None):
        return None
    quant = x.inputs[0] if isinstance(x, gs.Variable) and len(x.inputs) == 1 else None
    if quant is not None and not _folds_quantize(quant, x):
        return None
    if quant is None and not isinstance(x, gs.Constant):
        return None
    out = node.outputs[0]
    if out.name in graph_outputs:
        raise OnnxPruneError(f"DequantizeLinear '{label}': a dequantized constant is a graph output")
    if quant is not None:
        q = _quantize_node(quant, zp)
    else:
        q = x.values
    _check_types(node, label, q, scale)
    axis = _quant_axis(node, scale, q.ndim)
    values = dequantize(q, scale, zp, axis)
    record = QuantizedWeight(out.name, label, x.name, scale_t.name, zp_t.name if zp_t is not None else None,
                             np.array(scale), None if zp is None else np.array(zp), q.dtype, axis, dict(node.attrs))
    if quant is not None:
        qz = _optional(quant, 2)
        record.quantize_node = quant.name or x.name
        record.float_name = quant.inputs[0].name
        record.q_scale_name, record.q_zero_point_name = quant.inputs[1].name, qz.name if qz is not None else None
        record.q_attrs = dict(quant.attrs)
    node.outputs.clear()
    out.to_constant(values)
    return record


def _folds_quantize(quant: gs.Node, x: gs.Tensor) -> bool:
    """A QuantizeLinear of constants whose integer output only this DequantizeLinear reads."""
    return (quant.op == "QuantizeLinear" and len(x.outputs) == 1
            and all(isinstance(t, gs.Constant) for t in quant.inputs if t is not None and t.name))


def _quantize_node(quant: gs.Node, zp: np.ndarray | None) -> np.ndarray:
    """The integers a QuantizeLinear of constants yields (its own scale and zero point)."""
    w, scale = quant.inputs[0].values, quant.inputs[1].values
    qzp_t = _optional(quant, 2)
    qzp = qzp_t.values if qzp_t is not None else zp
    dtype = qzp.dtype if qzp is not None else np.dtype(np.uint8)
    if int(quant.attrs.get("block_size", 0) or 0) or np.dtype(dtype).type not in INTEGER_TYPES:
        raise OnnxPruneError(f"QuantizeLinear '{quant.name}': this quantization ({np.dtype(dtype)}"
                             f"{', block-wise' if quant.attrs.get('block_size') else ''}) is not supported")
    axis = _quant_axis(quant, scale, w.ndim)
    q, _ = quantize(np.asarray(w, np.float32), scale, qzp, axis, np.dtype(dtype))
    return q


class Names:
    """Names already taken in a model, and fresh ones made from a base."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.taken = {t.name for t in g.initializer} | {n.name for n in g.node} | \
                     {o for n in g.node for o in n.output} | {i.name for i in g.input}

    def fresh(self, base: str) -> str:
        """`base` if free, else base_2, base_3..."""
        return fresh(base, self.taken)


def restore_weights(model: onnx.ModelProto, targets: dict[str, tuple[QuantizedWeight, np.ndarray | None]]
                    ) -> Requantized:
    """Put each target float initializer back behind its DequantizeLinear, in place; `targets` maps its name to
    the record and the channels it kept on the quantization axis (None: all)."""
    g = model.graph
    found = [(i, t) for i, t in enumerate(g.initializer) if t.name in targets]
    if not found:
        return Requantized()
    names, stats = Names(model), Requantized()
    shared: dict[str, tuple[str, bytes]] = {}
    new_nodes, new_inits = [], []
    for _, init in found:
        record, kept = targets[init.name]
        values = numpy_helper.to_array(init)
        scale, zp = _kept(record, kept, values.shape)
        q, clipped = quantize(values, scale, zp, record.axis, record.dtype)
        stats.weights, stats.clipped = stats.weights + 1, stats.clipped + clipped
        stats.per_channel += record.per_channel
        nodes, inits = _behind_dequantize(record, init.name, q, scale, zp, names, shared, values)
        new_nodes += nodes
        new_inits += inits
    drop = {t.name for _, t in found}
    kept_inits = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept_inits + new_inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(new_nodes + nodes)  # their inputs are initializers: first is a topological place
    return stats


def _kept(record: QuantizedWeight, kept: np.ndarray | None, shape: tuple[int, ...]
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """The scale and zero point of the channels the weight kept."""
    scale, zp = record.scale, record.zero_point
    if record.per_channel:
        if kept is not None:
            scale = scale.reshape(-1)[kept].reshape(-1)
            zp = None if zp is None else zp.reshape(-1)[kept].reshape(-1)
        if scale.size != shape[record.axis]:
            raise OnnxPruneError(f"weight '{record.out}': {scale.size} scales for {shape[record.axis]} channels "
                                 f"on axis {record.axis}")
    return scale, zp


def _behind_dequantize(record: QuantizedWeight, out: str, q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None,
                       names: Names, shared: dict[str, tuple[str, bytes]], values: np.ndarray
                       ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers that compute `out` from integers again."""
    inits: list[onnx.TensorProto] = []

    def constant(base: str, array: np.ndarray) -> str:
        key = array.dtype.str + str(array.shape)
        array = np.array(array, order="C")  # np.ascontiguousarray would make a scalar 1-D: a scale must stay [] to fuse
        data = key.encode() + array.tobytes()
        if base in shared and shared[base][1] == data:
            return shared[base][0]
        name = names.fresh(base)
        shared.setdefault(base, (name, data))
        inits.append(numpy_helper.from_array(array, name))
        return name

    scale_name = constant(record.scale_name, scale)
    zp_name = constant(record.zero_point_name, zp) if record.zero_point_name and zp is not None else ""
    if record.quantize_node is None:
        q_name = constant(record.q_name, q)
        nodes = []
    else:  # float weight -> QuantizeLinear -> DequantizeLinear, as it came
        exact = dequantize(q, scale, zp, record.axis)
        float_name = constant(record.float_name or out + "_float", exact.astype(values.dtype))
        q_scale = constant(record.q_scale_name or record.scale_name, scale)
        q_zp = constant(record.q_zero_point_name, zp) if record.q_zero_point_name and zp is not None else ""
        q_name = names.fresh(record.q_name)
        nodes = [onnx.helper.make_node("QuantizeLinear", [float_name, q_scale, *([q_zp] if q_zp else [])], [q_name],
                                       name=names.fresh(record.quantize_node), **record.q_attrs)]
    inputs = [q_name, scale_name, *([zp_name] if zp_name else [])]
    nodes.append(onnx.helper.make_node("DequantizeLinear", inputs, [out], name=names.fresh(record.dq_node),
                                       **record.dq_attrs))
    return nodes, inits
