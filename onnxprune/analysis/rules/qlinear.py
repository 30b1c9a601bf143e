"""onnxruntime's QLinear activation ops (QOperator models, domain com.microsoft): channels pass through uint8
tensors as through float ones.

Weight ops (QLinearConv, QLinearMatMul, QGemm) never reach the rules: loading folds them to float ops between a
DequantizeLinear and a QuantizeLinear (graph.qoperator). Between them, QLinearAdd / QLinearMul couple their two
operands like Add / Mul, QLinearConcat joins its inputs' channels like Concat, the pools and QLinearSigmoid /
QLinearLeakyRelu pass them through, and QLinearSoftmax freezes them when it normalises over the channel axis.
Every scale and zero point must be one value: one per channel would need slicing nobody does.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import Builder
from . import Rule, register
from .common import channel_input, norm_axis, passthrough
from .concat_split import ConcatRule
from .contrib import _ms
from .elementwise import aligned, couple_operands
from .linear import two_activations


def _label(node: gs.Node, b: Builder) -> str:
    """How a reason names the node."""
    return f"{node.op} '{b.name(node)}'"


def _per_tensor(node: gs.Node, b: Builder, indices, elements: np.ndarray) -> bool:
    """The scales and zero points at `indices` are constants of one value; else freeze `elements`."""
    for i in indices:
        t = b.input(node, i)
        if t is None:
            continue
        value = b.const(t)
        if value is None or value.size != 1:
            b.freeze(elements, f"{_label(node, b)}: scale or zero point '{t.name}' is not one constant value")
            return False
    return True


@register(*_ms("QLinearAdd", "QLinearMul"))
class QLinearBinaryRule(Rule):
    """C = A + B or A * B on quantized tensors (A input 0, B input 3): channels of A and B are coupled."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        ins = [b.input(node, 0), b.input(node, 3)]
        lays = [b.layout(t) for t in ins]
        if not any(lays):
            return
        every = np.concatenate([lay.elements for lay in lays if lay is not None])
        if not _per_tensor(node, b, (1, 2, 4, 5, 6, 7), every):
            return
        name = _label(node, b)
        found = aligned(b, ins, lays, name)
        if found is not None:
            axis, ref = found
            couple_operands(b, ins, lays, axis, ref, name, lambda i, _: b.freeze(
                ref, f"{name}: operand '{ins[i].name}' holds values per channel nobody slices"))
            passthrough(node, b, axis, ref)


@register("QLinearMatMul")
class QLinearMatMulRule(Rule):
    """A QLinearMatMul of two activations (attention scores in a QOperator transformer; one with a constant
    weight is folded to a float MatMul at loading): followed like a MatMul of two activations, A = input 0 and
    B = input 3, its scales per tensor."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lays = [b.layout(b.input(node, i)) for i in (0, 3)]
        if not any(lays):
            return
        every = np.concatenate([lay.elements for lay in lays if lay is not None])
        if _per_tensor(node, b, (1, 2, 4, 5, 6, 7), every):
            two_activations(node, b, (0, 3))


@register(*_ms("QLinearConcat"))
class QLinearConcatRule(Rule):
    """Inputs Y_scale, Y_zero_point, then (X, scale, zero point) triples; the Xs are joined like Concat's inputs."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        xs = [node.inputs[i] for i in range(2, len(node.inputs), 3)]
        lays = [b.layout(t) for t in xs]
        if not any(lays):
            return
        every = np.concatenate([lay.elements for lay in lays if lay is not None])
        scales = [i for i in range(len(node.inputs)) if i < 2 or (i - 2) % 3]
        rank = b.rank(node.outputs[0]) or next(b.rank(t) for t, lay in zip(xs, lays) if lay)
        if not _per_tensor(node, b, scales, every):
            return
        if rank is None:
            b.freeze(every, f"{_label(node, b)}: rank unknown")
            return
        axis = norm_axis(int(node.attrs["axis"]), rank)
        if any(lay is not None and lay.axis != axis for lay in lays):
            ConcatRule._other_axis(node, b, lays, axis)
            return
        parts = []
        for t, lay in zip(xs, lays):
            size = None if lay is not None else (b.shape(t) or [None] * rank)[axis]
            if lay is None and not isinstance(size, int):
                b.freeze(every, f"{_label(node, b)}: input '{t.name}' has an unknown channel count")
                return
            parts.append(lay.elements if lay is not None else b.opaque(
                node, size, f"{_label(node, b)} joins channels of '{t.name}', which nothing can slice"))
        passthrough(node, b, axis, np.concatenate(parts))


@register(*_ms("QLinearGlobalAveragePool", "QLinearAveragePool"))
class QLinearPoolRule(Rule):
    """Average pooling of each channel on its own; `channels_last` puts the channels on the last axis."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        rank = b.rank(node.inputs[0])
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        if rank is None:
            b.freeze(lay.elements, f"{_label(node, b)}: rank unknown")
            return
        lay = channel_input(node, b, 0, axis=rank - 1 if int(node.attrs.get("channels_last", 0)) else 1)
        if lay is not None and _per_tensor(node, b, (1, 2, 3, 4), lay.elements):
            passthrough(node, b, lay.axis, lay.elements)


@register(*_ms("QLinearSigmoid", "QLinearLeakyRelu"))
class QLinearUnaryRule(Rule):
    """Acts on each element alone."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is not None and _per_tensor(node, b, (1, 2, 3, 4), lay.elements):
            passthrough(node, b, lay.axis, lay.elements)


@register(*_ms("QLinearSoftmax"))
class QLinearSoftmaxRule(Rule):
    """Softmax over `axis` (attribute `opset` < 13: over every axis from it on): frozen when that is the channels'."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay, rank = b.layout(node.inputs[0]), b.rank(node.inputs[0])
        if lay is None:
            return
        if rank is None:
            b.freeze(lay.elements, f"{_label(node, b)}: rank unknown")
            return
        axis = norm_axis(int(node.attrs.get("axis", -1)), rank)
        axes = set(range(axis, rank)) if int(node.attrs.get("opset", 13)) < 13 else {axis}
        if lay.axis in axes:
            b.freeze(lay.elements, f"{_label(node, b)} mixes values across the channel axis")
            return
        if _per_tensor(node, b, (1, 2, 3, 4), lay.elements):
            passthrough(node, b, lay.axis, lay.elements)
