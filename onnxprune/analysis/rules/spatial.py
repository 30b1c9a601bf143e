"""Spatial ops that leave channels alone (Pad, Resize) and ops that only read a shape."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import Builder
from . import RewriteContext, Rule, register
from .common import attr_or_input, norm_axis, passthrough


@register("Pad")
class PadRule(Rule):
    """Padding must not touch the channel axis."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay, rank = b.layout(node.inputs[0]), b.rank(node.inputs[0])
        if lay is None:
            return
        try:
            pads = attr_or_input(node, b, "pads", 1)
            axes = attr_or_input(node, b, "axes", 3)
        except LookupError as exc:
            b.freeze(lay.elements, str(exc))
            return
        if rank is None or pads is None:
            b.freeze(lay.elements, f"Pad '{b.name(node)}': rank or pads unknown")
            return
        axes = [norm_axis(int(a), rank) for a in axes] if axes is not None else list(range(rank))
        n = len(axes)
        if lay.axis in axes and (pads[axes.index(lay.axis)] or pads[n + axes.index(lay.axis)]):
            b.freeze(lay.elements, f"Pad '{b.name(node)}' pads the channel axis")
            return
        passthrough(node, b, lay.axis, lay.elements)


@register("Resize", "Upsample")
class ResizeRule(Rule):
    """Scale 1 on the channel axis; a `sizes` input holding the channel count is rewritten."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        name = f"{node.op} '{b.name(node)}'"
        if node.attrs.get("axes") is not None:
            b.freeze(lay.elements, f"{name}: the 'axes' attribute is not supported")
            return
        scales_at = 1 if node.op == "Upsample" or b.graph.opset < 11 else 2
        scales = node.attrs.get("scales")
        scales = b.const(b.input(node, scales_at)) if scales is None else np.asarray(scales)
        sizes = b.const(b.input(node, 3)) if node.op == "Resize" and b.graph.opset >= 11 else None
        if scales is not None and scales.size:
            if scales.reshape(-1)[lay.axis] != 1:
                b.freeze(lay.elements, f"{name} scales the channel axis")
                return
        elif sizes is not None and sizes.size:
            b.note(node, elements=lay.elements, axis=lay.axis, sizes=np.array(sizes).reshape(-1))
        else:
            b.freeze(lay.elements, f"{name}: scales and sizes computed at runtime")
            return
        passthrough(node, b, lay.axis, lay.elements)

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        note = rw.note(node)
        sizes = np.array(note["sizes"])
        sizes[note["axis"]] = int(rw.kept(note["elements"]).sum())
        rw.set_input(node, 3, sizes)


@register("Shape", "Size")
class ShapeOfRule(Rule):
    """Reads a tensor's shape at runtime, so it follows whatever the channel count becomes."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        return
