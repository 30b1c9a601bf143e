"""Apply a checked plan to a prepared graph: slice parameters, run the rules' rewrite hooks."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.analyze import Analysis
from ..analysis.rules import rule_for
from ..errors import OnnxPruneError
from ..graph.shapes import skeleton_model
from ..analysis.builder import PRODUCER
from ..graph.dynamic_int8 import IntegerOp
from ..graph.names import fresh
from ..graph.nbits import NBitsOp
from ..graph.qoperator import QLinearOp
from ..graph.quantized import QuantizedWeight
from ..loading import Prepared, Targets, export, target_key
from .merging import Compensation, apply_weight_updates


class Rewriter:
    """What the rules' rewrite hooks see: which channels stay, and a way to replace constant inputs."""

    def __init__(self, prep: Prepared, analysis: Analysis, removed: dict[str, list[int]]):
        self.prep, self.analysis, self.opset = prep, analysis, prep.opset
        self.gone_class = analysis.removed_classes(removed)
        self.names = {t for t in prep.graph.tensors()}
        self.added = False  # nodes were added: the graph needs sorting again

    def kept(self, elements: np.ndarray) -> np.ndarray:
        """True at each position whose channel stays."""
        return ~self.gone_class[self.analysis.resolution.cls[elements]]

    def note(self, node: gs.Node) -> dict[str, Any]:
        """What the node's rule noted during analysis ({} for a node the rewrite added)."""
        name = self.prep.names.get(id(node))  # None for a node the rewrite added
        return self.analysis.notes.get(name, {}) if name is not None else {}

    def fresh_name(self, base: str) -> str:
        """A tensor name not yet in the graph, made from `base`."""
        return fresh(base, self.names)

    def set_input(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        """Give this node alone a new constant input (shape constants may be shared with other nodes)."""
        while len(node.inputs) <= index:
            node.inputs.append(gs.Variable.empty())
        base = node.inputs[index].name or f"{self.prep.names[id(node)]}_input{index}"
        node.inputs[index] = gs.Constant(self.fresh_name(base + "_pruned"), np.asarray(values))

    def set_entry(self, node: gs.Node, index: int, position: int, value: int) -> None:
        """Replace one entry of a 1-D int input (a shape): in a copy of a constant, or, for a shape built
        from Shape ops at run time, by a ScatterElements after it."""
        source = node.inputs[index]
        if isinstance(source, gs.Constant):
            values = np.array(source.values).reshape(-1)
            values[position] = value
            self.set_input(node, index, values)
            return
        base = f"{self.prep.names[id(node)]}_input{index}"
        out = gs.Variable(self.fresh_name(base + "_pruned"), dtype=np.int64)
        where = gs.Constant(self.fresh_name(base + "_at"), np.array([position], np.int64))
        count = gs.Constant(self.fresh_name(base + "_count"), np.array([value], np.int64))
        scatter = gs.Node("ScatterElements", name=self.fresh_name(base + "_scatter"),
                          inputs=[source, where, count], outputs=[out])
        self.prep.graph.nodes.append(scatter)
        node.inputs[index] = out
        self.added = True


def _slice(values: np.ndarray, masks: dict[int, np.ndarray]) -> np.ndarray:
    for axis, mask in sorted(masks.items()):
        values = np.compress(mask, values, axis=axis)
    return values


def slice_parameters(rw: Rewriter) -> None:
    """Slice every parameter member; a constant shared by differently sliced users is cloned."""
    by_node = {id(n): n for n in rw.prep.graph.nodes}
    by_name = {rw.prep.names[k]: n for k, n in by_node.items()}
    masks: dict[tuple[str, int], dict[int, np.ndarray]] = defaultdict(dict)
    for m in rw.analysis.members:
        if m.input_index is None:
            continue
        keep = rw.kept(m.elements)
        if not keep.all():
            masks[(m.node, m.input_index)][m.axis] = keep
    users: dict[str, list[tuple[gs.Node, int]]] = defaultdict(list)
    for node in rw.prep.graph.nodes:
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Constant):
                users[t.name].append((node, i))
    done: set[tuple[str, int]] = set()
    for (node_name, index), spec in masks.items():
        if (node_name, index) in done:
            continue
        node = by_name[node_name]
        tensor = node.inputs[index]
        key = _key(spec)
        uses = users[tensor.name]
        if all(_key(masks.get((rw.prep.names[id(n)], i), {})) == key for n, i in uses):
            tensor.values = _slice(tensor.values, spec)
            done.update((rw.prep.names[id(n)], i) for n, i in uses)
        else:
            rw.set_input(node, index, _slice(tensor.values, spec))
            done.add((node_name, index))


def _key(spec: dict[int, np.ndarray]) -> tuple:
    return tuple((axis, mask.tobytes()) for axis, mask in sorted(spec.items()))


def attach_biases(rw: Rewriter, new_bias: dict[int, np.ndarray]) -> None:
    """Give bias-less consumers the bias a merge folded into them, sliced like their output channels."""
    for node in rw.prep.graph.nodes:
        if id(node) not in new_bias:
            continue
        name = rw.prep.names[id(node)]
        out = next((m for m in rw.analysis.members if m.node == name and m.role == PRODUCER and m.kind == "weight"),
                   None)
        values = new_bias[id(node)]
        if out is not None:
            values = values[rw.kept(out.elements)]
        values = values.astype(node.inputs[1].values.dtype)
        if node.op == "MatMul":
            _bias_add(rw, node, values)
        else:
            rw.set_input(node, 2, values)


def _bias_add(rw: Rewriter, node: gs.Node, values: np.ndarray) -> None:
    """A bias for a MatMul that has none: an Add after it, which takes over its output tensor."""
    name = rw.prep.names[id(node)]
    out = node.outputs[0]
    product = gs.Variable(rw.fresh_name(f"{name}_product"), dtype=out.dtype)
    node.outputs[0] = product
    bias = gs.Constant(rw.fresh_name(f"{name}_bias"), values)
    rw.prep.graph.nodes.append(gs.Node("Add", name=rw.fresh_name(f"{name}_bias_add"), inputs=[product, bias],
                                       outputs=[out]))
    rw.added = True


def rewrite(prep: Prepared, analysis: Analysis, removed: dict[str, list[int]],
            compensation: Compensation | None = None) -> onnx.ModelProto:
    """Apply the removal (after the compensation's weight updates) and return a checked model."""
    rw = Rewriter(prep, analysis, removed)
    graph = prep.graph
    original_outputs = {t.name: t.shape for t in graph.outputs}
    slots = quantized_slots(prep)
    if compensation is not None:
        apply_weight_updates(compensation)
    slice_parameters(rw)
    attach_biases(rw, compensation.new_bias if compensation is not None else {})
    for node in graph.nodes:
        rule = rule_for(node)
        if rule is not None and rw.note(node):  # a rewrite reads only what its analysis noted
            rule.rewrite(node, rw)
    if rw.added:
        graph.toposort()
    keep = {t.name for t in [*graph.inputs, *graph.outputs]}
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in keep:
            t.shape = None
    model = export(prep, graph, requantize=requantize_targets(rw, slots))
    if compensation is not None and prep.quantized and prep.requantized is not None:
        q = prep.requantized
        compensation.requantized = {"weights": q.weights, "per_channel": q.per_channel, "clipped": q.clipped,
                                    "dynamic": q.dynamic, "nbits": q.nbits}
    _release_weights(graph)
    return finish(model, original_outputs)


Slot = tuple[gs.Node, int, QuantizedWeight | IntegerOp | NBitsOp | QLinearOp]


def quantized_slots(prep: Prepared) -> list[Slot]:
    """Where the folded quantized weights are read (node, input index), before any update renames a copy."""
    folded = {w.out: w for w in prep.quantized if isinstance(w, QuantizedWeight)}
    ops = {w.node: w for w in prep.quantized if isinstance(w, (IntegerOp, NBitsOp, QLinearOp))}
    return [(node, i, folded[t.name]) for node in prep.graph.nodes for i, t in enumerate(node.inputs)
            if isinstance(t, gs.Constant) and t.name in folded] + \
        [(node, 1, ops[node.name]) for node in prep.graph.nodes if node.name in ops]


def requantize_targets(rw: Rewriter, slots: list[Slot]) -> Targets:
    """Each folded weight as the rewrite left it, with the channels it kept on its quantization axis."""
    sliced: dict[tuple[str, int], list] = defaultdict(list)  # one pass over the members, not one per weight
    for m in rw.analysis.members:
        if m.input_index is not None:
            sliced[(m.node, m.input_index)].append(m)
    targets = {}
    for node, i, record in slots:
        t = node.inputs[i]
        if not isinstance(t, gs.Constant):
            continue
        masks = {m.axis: rw.kept(m.elements) for m in sliced[(rw.prep.names.get(id(node)), i)]}
        kept = masks if isinstance(record, NBitsOp) else masks.get(record.axis) if record.per_channel else None
        targets[target_key(record)] = (record, kept)
    return targets


def _release_weights(graph: gs.Graph, keep_bytes: int = 4096) -> None:
    """The exported model holds the weights now: the graph keeps only their shapes and types (for the
    recount), so a big model is not held twice while it is checked and written."""
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant) and t.values.nbytes > keep_bytes:
            t.values = np.broadcast_to(np.zeros((), t.values.dtype), t.values.shape)


def finish(model: onnx.ModelProto, outputs: dict[str, Any]) -> onnx.ModelProto:
    """Re-infer shapes and refuse a model that is invalid or whose outputs changed shape.

    Checks run on a skeleton (weights declared, not copied): weights come from numpy arrays,
    so their encoding cannot be wrong; what can be is structure, types and shapes.
    """
    skel = skeleton_model(model)
    try:
        skel = onnx.shape_inference.infer_shapes(skel, check_type=True, data_prop=True)
        onnx.checker.check_model(skel, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxPruneError(f"the rewritten model does not check: {first}") from None
    weights = {t.name for t in model.graph.initializer}
    del model.graph.value_info[:]
    model.graph.value_info.extend(v for v in skel.graph.value_info if v.name not in weights)
    inferred = {o.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                         for d in o.type.tensor_type.shape.dim] for o in skel.graph.output}
    for name, shape in outputs.items():
        new = inferred.get(name)
        if shape is not None and new and any(isinstance(a, int) and isinstance(c, int) and a != c
                                             for a, c in zip(shape, new)):
            raise OnnxPruneError(f"the rewritten model changes the shape of output '{name}' ({shape} -> {new})")
    return model
