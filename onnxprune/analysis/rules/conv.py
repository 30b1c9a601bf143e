"""Conv and ConvTranspose: producers of new channels, consumers of their input channels.

Grouped convolutions are pruned by whole groups: each group's input and output channels are
coupled into one unit, so removing a unit removes its slice of both sides and `group` shrinks.
Depthwise conv is the case of one input channel per group.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import CONSUMER, PRODUCER, Builder
from . import RewriteContext, Rule, register
from .common import channel_input


def _grouped(node: gs.Node, b: Builder, lay, out: np.ndarray, cin_g: int, cout_g: int) -> None:
    """Couple each group's input and output channels into one unit."""
    b.couple_blocks(out, cout_g)
    if lay is None:
        b.freeze(out, f"{node.op} '{b.name(node)}' (group={node.attrs['group']}) can drop only whole "
                      "groups, and its input channels cannot be sliced")
        return
    b.couple_blocks(lay.elements, cin_g)
    b.couple(lay.elements[::cin_g], out[::cout_g])


def _set_group(node: gs.Node, rw, elements: np.ndarray, per_group: int) -> None:
    """Shrink `group` to the number of whole groups kept."""
    if node.attrs.get("group", 1) > 1:
        kept = int(rw.kept(elements).sum())
        node.attrs["group"] = kept // per_group


@register("Conv")
class ConvRule(Rule):
    """Y[N, Cout, ...] = X[N, Cin, ...] * W[Cout, Cin/group, k...] + B[Cout]."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        w = b.const(b.input(node, 1))
        lay = channel_input(node, b, 0, axis=1)
        if w is None:
            b.freeze(lay.elements if lay else None, f"Conv '{b.name(node)}' has a computed weight")
            return
        group = node.attrs.get("group", 1)
        cout, cin_g = w.shape[0], w.shape[1]
        out = b.produce(node, cout)
        b.set(node.outputs[0], 1, out)
        b.note(node, out=out)
        if group == 1:
            if lay is not None:
                b.param(node, 1, 1, lay.elements, CONSUMER, "weight")
        else:
            _grouped(node, b, lay, out, cin_g, cout // group)
        b.param(node, 1, 0, out, PRODUCER, "weight")
        if b.input(node, 2) is not None:
            b.param(node, 2, 0, out, PRODUCER, "bias")

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        group = node.attrs.get("group", 1)
        if group > 1:
            out = rw.note(node)["out"]
            _set_group(node, rw, out, len(out) // group)


@register("ConvTranspose")
class ConvTransposeRule(Rule):
    """Y[N, Cout, ...] from X[N, Cin, ...] and W[Cin, Cout/group, k...], B[Cout]."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        w = b.const(b.input(node, 1))
        lay = channel_input(node, b, 0, axis=1)
        if w is None:
            b.freeze(lay.elements if lay else None, f"ConvTranspose '{b.name(node)}' has a computed weight")
            return
        group = node.attrs.get("group", 1)
        cin, cout_g = w.shape[0], w.shape[1]
        out = b.produce(node, cout_g * group)
        b.set(node.outputs[0], 1, out)
        if lay is not None:
            b.param(node, 1, 0, lay.elements, CONSUMER, "weight")
            b.note(node, inp=lay.elements)
        if group == 1:
            b.param(node, 1, 1, out, PRODUCER, "weight")
        else:
            _grouped(node, b, lay, out, cin // group, cout_g)
        if b.input(node, 2) is not None:
            b.param(node, 2, 0, out, PRODUCER, "bias")

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        group = node.attrs.get("group", 1)
        inp = rw.note(node).get("inp")
        if group > 1 and inp is not None:
            _set_group(node, rw, inp, len(inp) // group)
