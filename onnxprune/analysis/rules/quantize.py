"""QuantizeLinear / DequantizeLinear on activations (QDQ models): the channels pass through.

Weight DequantizeLinear nodes never reach the rules: loading folds them to float constants (graph.quantized)
and the export puts them back. On an activation, a per-tensor scale passes the channels through; a scale per
channel on the channel axis is sliced with them (and its zero point); one on another axis stays.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..builder import PASS, Builder
from . import Rule, register
from .common import norm_axis, passthrough


@register("QuantizeLinear", "DequantizeLinear")
class QuantizeRule(Rule):
    """y = quantize(x, scale, zero_point) or its inverse, element by element."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        name = f"{node.op} '{b.name(node)}'"
        scale = b.const(b.input(node, 1))
        zp_t = b.input(node, 2)
        if scale is None or (zp_t is not None and b.const(zp_t) is None):
            b.freeze(lay.elements, f"{name} has a computed scale or zero point")
            return
        if int(node.attrs.get("block_size", 0) or 0):
            b.freeze(lay.elements, f"{name} quantizes by blocks (block_size={node.attrs['block_size']})")
            return
        if scale.size > 1:
            rank = b.rank(node.inputs[0])
            if rank is None:
                b.freeze(lay.elements, f"{name}: a scale per channel on an input of unknown rank")
                return
            if norm_axis(int(node.attrs.get("axis", 1)), rank) == lay.axis:
                b.param(node, 1, 0, lay.elements, PASS, "scale")
                if zp_t is not None:
                    b.param(node, 2, 0, lay.elements, PASS, "zero point")
        passthrough(node, b, lay.axis, lay.elements)
