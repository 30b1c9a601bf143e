"""Normalisations: per-channel ones pass channels through; ones that mix channels freeze them."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..builder import PASS, Builder
from . import RewriteContext, Rule, register
from .common import channel_input, norm_axis, passthrough

BN_PARAMS = ((1, "scale"), (2, "shift"), (3, "mean"), (4, "var"))


@register("BatchNormalization")
class BatchNormRule(Rule):
    """Inference-mode BN: scale, B, mean and var are per channel on axis 1."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = channel_input(node, b, 0, axis=1)
        if lay is None:
            return
        if len([o for o in node.outputs if o.outputs or o in b.graph.outputs]) > 1:
            b.freeze(lay.elements, f"BatchNormalization '{b.name(node)}' is in training mode")
            return
        for index, kind in BN_PARAMS:
            b.param(node, index, 0, lay.elements, PASS, kind)
        passthrough(node, b, 1, lay.elements, outputs=1)


@register("InstanceNormalization")
class InstanceNormRule(Rule):
    """Statistics per sample and channel; scale and B per channel."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = channel_input(node, b, 0, axis=1)
        if lay is None:
            return
        b.param(node, 1, 0, lay.elements, PASS, "scale")
        b.param(node, 2, 0, lay.elements, PASS, "shift")
        passthrough(node, b, 1, lay.elements)


@register("GroupNormalization")
class GroupNormRule(Rule):
    """Statistics per group of C/num_groups channels: only whole groups can go."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = channel_input(node, b, 0, axis=1)
        if lay is None:
            return
        groups = node.attrs["num_groups"]
        size = len(lay.elements) // groups
        b.couple_blocks(lay.elements, size)
        scale = b.const(b.input(node, 1))
        per = lay.elements if scale is not None and scale.shape[0] == len(lay.elements) else lay.elements[::size]
        b.param(node, 1, 0, per, PASS, "scale")
        b.param(node, 2, 0, per, PASS, "shift")
        b.note(node, elements=lay.elements, size=size)
        passthrough(node, b, 1, lay.elements)

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        note = rw.note(node)
        if note:
            node.attrs["num_groups"] = int(rw.kept(note["elements"]).sum()) // note["size"]


def _axes_from(node: gs.Node, rank: int) -> set[int]:
    """The axes an axis-wise op normalises over."""
    axis = norm_axis(node.attrs.get("axis", -1), rank)
    if node.op == "LayerNormalization":
        return set(range(axis, rank))
    if node.op in ("Softmax", "LogSoftmax", "Hardmax") and node.attrs.get("axis") is None:
        return set(range(rank - 1, rank))
    return {axis}


@register("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
class AxisWiseRule(Rule):
    """Ops whose result mixes values along some axes: exact only when channels are not among them."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        rank = b.rank(node.inputs[0])
        if lay is None:
            return
        axes = _axes_from(node, rank) if rank is not None else None
        if node.op in ("Softmax", "LogSoftmax", "Hardmax") and b.graph.opset < 13 and rank is not None:
            axes = set(range(norm_axis(node.attrs.get("axis", 1), rank), rank))  # coerced to 2-D
        if axes is None or lay.axis in axes:
            b.freeze(lay.elements, f"{node.op} '{b.name(node)}' mixes values across the channel axis")
            return
        passthrough(node, b, lay.axis, lay.elements, outputs=1)
