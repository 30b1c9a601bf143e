"""Pools (per channel) and reductions (per channel unless they reduce the channel axis)."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..builder import Builder
from . import Rule, register
from .common import attr_or_input, channel_input, norm_axis, passthrough

REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
AXES_AS_INPUT_SINCE = {"ReduceSum": 13}  # the others moved axes to an input in opset 18


@register("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxRoiPool")
class PoolRule(Rule):
    """Pooling over spatial axes, each channel on its own."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = channel_input(node, b, 0, axis=1)
        if lay is None:
            return
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            b.freeze(lay.elements, f"{node.op} '{b.name(node)}' returns flat indices that encode channels")
            return
        passthrough(node, b, 1, lay.elements, outputs=1)


@register(*REDUCE)
class ReduceRule(Rule):
    """Reducing other axes keeps channels (shifting the axis without keepdims); reducing it freezes."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        rank = b.rank(node.inputs[0])
        if lay is None:
            return
        name = f"{node.op} '{b.name(node)}'"
        try:
            axes = attr_or_input(node, b, "axes", 1)
        except LookupError as exc:
            b.freeze(lay.elements, str(exc))
            return
        if rank is None:
            b.freeze(lay.elements, f"{name}: input rank unknown")
            return
        if axes is None or len(axes) == 0:
            if node.attrs.get("noop_with_empty_axes", 0):
                passthrough(node, b, lay.axis, lay.elements)
            else:
                b.freeze(lay.elements, f"{name} reduces over every axis, channels included")
            return
        axes = {norm_axis(int(a), rank) for a in axes}
        if lay.axis in axes:
            b.freeze(lay.elements, f"{name} reduces over the channel axis")
            return
        keep = node.attrs.get("keepdims", 1)
        passthrough(node, b, lay.axis if keep else lay.axis - sum(a < lay.axis for a in axes), lay.elements)
