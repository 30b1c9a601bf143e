"""Concat, Split, Slice and Gather: along the channel axis they map channel offsets, elsewhere they couple."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import Builder
from . import RewriteContext, Rule, register
from .common import attr_or_input, norm_axis, passthrough


def _count(rw, elements: np.ndarray) -> int:
    return int(rw.kept(elements).sum())


@register("Concat")
class ConcatRule(Rule):
    """On the channel axis the output is the inputs' channels end to end (DenseNet, CSP, YOLO)."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lays = [b.layout(t) for t in node.inputs]
        if not any(lays):
            return
        rank = b.rank(node.outputs[0]) or next(b.rank(t) for t, l in zip(node.inputs, lays) if l)
        if rank is None:
            b.freeze_inputs(node, f"Concat '{b.name(node)}': rank unknown")
            return
        axis = norm_axis(node.attrs["axis"], rank)
        if any(l is not None and l.axis != axis for l in lays):
            self._other_axis(node, b, lays, axis)
            return
        parts = []
        for t, lay in zip(node.inputs, lays):
            if lay is not None:
                parts.append(lay.elements)
                continue
            size = (b.shape(t) or [None] * rank)[axis]
            if not isinstance(size, int):
                b.freeze_inputs(node, f"Concat '{b.name(node)}': input '{t.name}' has an unknown channel count")
                return
            parts.append(b.opaque(node, size, f"Concat '{b.name(node)}' joins channels of '{t.name}', "
                                              "which nothing can slice"))
        passthrough(node, b, axis, np.concatenate(parts))

    @staticmethod
    def _other_axis(node: gs.Node, b: Builder, lays, axis: int) -> None:
        """Concat along another axis: all inputs must carry the same channels on one axis."""
        axes = {l.axis for l in lays if l is not None}
        if len(axes) > 1 or not all(lays):
            b.freeze_inputs(node, f"Concat '{b.name(node)}' joins tensors whose channels cannot all be sliced")
            return
        ref = lays[0].elements
        for lay in lays[1:]:
            b.couple(ref, lay.elements)
        passthrough(node, b, axes.pop(), ref)


@register("Split")
class SplitRule(Rule):
    """On the channel axis each output takes a contiguous range; the sizes are rewritten."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay, rank = b.layout(node.inputs[0]), b.rank(node.inputs[0])
        if lay is None:
            return
        axis = norm_axis(node.attrs.get("axis", 0), rank) if rank is not None else None
        if axis != lay.axis:
            if axis is None:
                b.freeze(lay.elements, f"Split '{b.name(node)}': rank unknown")
            else:
                passthrough(node, b, lay.axis, lay.elements)
            return
        try:
            sizes = attr_or_input(node, b, "split", 1)
        except LookupError as exc:
            b.freeze(lay.elements, str(exc))
            return
        n = len(node.outputs)
        if sizes is None:
            chunk = -(-len(lay.elements) // n)
            sizes = [min(chunk, len(lay.elements) - i * chunk) for i in range(n)]
        bounds = np.cumsum([0, *sizes])
        parts = [lay.elements[bounds[i]:bounds[i + 1]] for i in range(n)]
        for out, part in zip(node.outputs, parts):
            b.set(out, axis, part)
            b.member(node, out)
            b.keep_some(node, part)
        b.note(node, parts=parts)

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        parts = rw.note(node).get("parts")
        if parts is None:
            return
        sizes = np.array([_count(rw, p) for p in parts], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if "split" in node.attrs or rw.opset < 13:
            node.attrs["split"] = [int(s) for s in sizes]
        else:
            rw.set_input(node, 1, sizes)


@register("Slice")
class SliceRule(Rule):
    """A step-1 slice of the channel axis takes a contiguous range; its bounds are rewritten."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay, rank = b.layout(node.inputs[0]), b.rank(node.inputs[0])
        if lay is None:
            return
        name = f"Slice '{b.name(node)}'"
        if rank is None:
            b.freeze(lay.elements, f"{name}: rank unknown")
            return
        try:
            axes = attr_or_input(node, b, "axes", 3)
            if axes is not None and lay.axis not in {norm_axis(int(a), rank) for a in axes}:
                passthrough(node, b, lay.axis, lay.elements)  # bounds elsewhere may be computed
                return
            starts, ends = attr_or_input(node, b, "starts", 1), attr_or_input(node, b, "ends", 2)
            steps = attr_or_input(node, b, "steps", 4)
        except LookupError as exc:
            b.freeze(lay.elements, str(exc))
            return
        axes = [norm_axis(int(a), rank) for a in (axes if axes is not None else range(len(starts)))]
        if lay.axis not in axes:
            passthrough(node, b, lay.axis, lay.elements)
            return
        i = axes.index(lay.axis)
        if steps is not None and steps[i] != 1:
            b.freeze(lay.elements, f"{name} steps by {steps[i]} along the channel axis")
            return
        start, stop, _ = slice(int(starts[i]), int(ends[i])).indices(len(lay.elements))
        stop = max(start, stop)
        b.note(node, position=i, elements=lay.elements, start=start, stop=stop, bounds=(starts, ends))
        b.keep_some(node, lay.elements[start:stop])
        passthrough(node, b, lay.axis, lay.elements[start:stop])

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        note = rw.note(node)
        els, i = note["elements"], note["position"]
        start = _count(rw, els[:note["start"]])
        stop = start + _count(rw, els[note["start"]:note["stop"]])
        if "starts" in node.attrs:
            node.attrs["starts"] = [*node.attrs["starts"][:i], start, *node.attrs["starts"][i + 1:]]
            node.attrs["ends"] = [*node.attrs["ends"][:i], stop, *node.attrs["ends"][i + 1:]]
            return
        for index, value, noted in ((1, start, note["bounds"][0]), (2, stop, note["bounds"][1])):
            arr = np.array(noted).reshape(-1)
            arr[i] = value
            rw.set_input(node, index, arr.astype(node.inputs[index].values.dtype))


@register("Gather")
class GatherRule(Rule):
    """Picking along another axis keeps the channels (the axis shifts by the indices' rank)."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay, rank = b.layout(node.inputs[0]), b.rank(node.inputs[0])
        b.freeze(getattr(b.layout(node.inputs[1]), "elements", None),
                 f"Gather '{b.name(node)}' uses channels as indices")
        if lay is None:
            return
        index_rank = b.rank(node.inputs[1])
        if rank is None or index_rank is None:
            b.freeze(lay.elements, f"Gather '{b.name(node)}': rank unknown")
            return
        axis = norm_axis(node.attrs.get("axis", 0), rank)
        if axis == lay.axis:
            b.freeze(lay.elements, f"Gather '{b.name(node)}' picks along the channel axis")
            return
        passthrough(node, b, lay.axis if lay.axis < axis else lay.axis - 1 + index_rank, lay.elements)
