"""Ops that move, merge or broadcast axes: the channel axis is followed or the channels frozen.

Merging the channel axis with the axes after it (Flatten, Reshape to [N, C*H*W]) repeats each
channel element over its H*W features, so a consumer Gemm slices all of a channel's rows at once.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import Builder
from . import RewriteContext, Rule, register
from ...graph.shape_values import trace
from .common import attr_or_input, norm_axis, passthrough, static, volume


def _merged(elements: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Layout of a channel axis flattened with `outer` leading and `inner` trailing elements."""
    return np.tile(np.repeat(elements, inner), outer)


@register("Flatten")
class FlattenRule(Rule):
    """[d0..d(k-1), dk..] -> [prod(d0..), prod(dk..)]: channels after k merge into axis 1."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay, shape = b.layout(node.inputs[0]), b.shape(node.inputs[0])
        if lay is None:
            return
        k = norm_axis(node.attrs.get("axis", 1), len(shape)) if shape is not None else None
        inner = volume(shape[lay.axis + 1:]) if shape is not None else None
        outer = volume(shape[k:lay.axis]) if k is not None and k <= lay.axis else None
        if not isinstance(inner, int) or not isinstance(outer, int):
            b.freeze(lay.elements, f"Flatten '{b.name(node)}': channel axis not after a static split point")
            return
        passthrough(node, b, 1, _merged(lay.elements, inner, outer))


def _prefix_matches(a, b_) -> bool:
    """Same leading dims: equal dim by dim, or equal static products."""
    if len(a) == len(b_) and all(x == y and x is not None for x, y in zip(a, b_)):
        return True
    pa, pb = volume(a), volume(b_)
    return pa is not None and pa == pb


@register("Reshape")
class ReshapeRule(Rule):
    """Channels stay an axis of their own, or merge with the trailing axes; a split freezes them."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        name = f"Reshape '{b.name(node)}'"
        s_in, s_out = b.shape(node.inputs[0]), b.shape(node.outputs[0])
        target = trace(node.inputs[1], {k: len(v) for k, v in b.shapes.items()})
        if s_in is None or s_out is None or target is None or len(target) != len(s_out):
            b.freeze(lay.elements, f"{name}: shapes unknown or target not traceable")
            return
        c, a = len(lay.elements), lay.axis
        for j in range(len(s_out)):
            if not _prefix_matches(s_in[:a], s_out[:j]):
                continue
            for end in range(a + 1, len(s_in) + 1):
                inner = volume(s_in[a + 1:end])
                if isinstance(inner, int) and s_out[j] == c * inner and _prefix_matches(s_in[end:], s_out[j + 1:]):
                    problem = self._entry_problem(node, target[j], a, c * inner, j, b.graph.opset)
                    if problem and b.reads_count(target[j][:2] if isinstance(target[j], tuple) else None,
                                                 lay.elements) and (target[j][2:] or (1,))[0] == inner:
                        problem = None  # a channel dim read at runtime (times the merged dims): follows
                    if problem:
                        b.freeze(lay.elements, f"{name}: {problem}")
                        return
                    b.note(node, index=j, inner=inner, elements=lay.elements, entry=_rewritten(target[j]))
                    passthrough(node, b, j, np.repeat(lay.elements, inner))
                    return
        if self._split(node, b, lay, s_in, s_out, target):
            return
        if a > 0 and not isinstance(s_in[a - 1], int) and not _prefix_matches(s_in[:a], s_out[:a]):
            if _batch_fold(node, b, lay, s_in, s_out, target):
                return
            b.freeze(lay.elements, f"{name} merges the channel axis into the dynamic axis before it "
                                   f"({list(s_in)} -> {list(s_out)}): batch and heads in one axis are not followed")
            return
        b.freeze(lay.elements, f"{name} splits or reorders the channel axis ({list(s_in)} -> {list(s_out)})")

    def _split(self, node: gs.Node, b: Builder, lay, s_in, s_out, target) -> bool:
        """[.., C, ..] -> [.., (O,) U, D, ..]: channels split into U units of D (heads of head_dim).

        Each unit's D channels are coupled and the units become the channel axis; with outer
        axes (fused QKV [.., 3, H, D]) the unit u of every outer slice is coupled with unit u of
        the first, so a head leaves Q, K and V together.
        """
        c, a = len(lay.elements), lay.axis
        for j in range(len(s_out)):
            if not _prefix_matches(s_in[:a], s_out[:j]):
                continue
            for k in range(j + 2, len(s_out) + 1):
                dims = s_out[j:k]
                if not static(dims) or math.prod(dims) != c or not _prefix_matches(s_in[a + 1:], s_out[k:]):
                    continue
                units, block = dims[-2], dims[-1]
                unit_axis = k - 2
                problem = self._entry_problem(node, target[unit_axis], a, units, unit_axis,
                                              b.graph.opset, own=False)
                if problem is None and any(target[i] not in (dims[i - j], -1) for i in range(j, k) if i != unit_axis):
                    problem = "target entries of the split axes are not constants"
                if problem:
                    b.freeze(lay.elements, f"Reshape '{b.name(node)}': {problem}")
                    return True
                grid = lay.elements.reshape(-1, units, block)
                b.couple_blocks(lay.elements, block)
                for outer in grid[1:]:
                    b.couple(grid[0][:, 0], outer[:, 0])
                b.note(node, index=unit_axis, inner=1, per=block * len(grid), elements=lay.elements,
                       entry=_rewritten(target[unit_axis]))
                passthrough(node, b, unit_axis, grid[0][:, 0])
                return True
        return False

    @staticmethod
    def _entry_problem(node: gs.Node, entry, axis: int, size: int, j: int, opset: int = 13,
                       own: bool = True) -> str | None:
        """Why the target entry for the channel axis cannot follow pruning, or None if it can."""
        if entry == -1 or (own and (entry == (node.inputs[0].name, axis) or (entry == 0 and j == axis))):
            return None
        if entry == size and (isinstance(node.inputs[1], gs.Constant) or opset >= 11):
            return None  # a computed target gets its entry replaced by a ScatterElements
        return f"target entry {j} ({entry}) fixes the channel count and cannot be rewritten"

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        note = rw.note(node)
        if note["entry"]:
            count = int(rw.kept(note["elements"]).sum()) * note["inner"] // note.get("per", 1)
            rw.set_entry(node, 1, note["index"], count)


def _rewritten(entry) -> bool:
    """A target entry that holds the count itself (a positive constant); -1, 0 and dims read at run time follow."""
    return isinstance(entry, int) and entry > 0


FOLD_PASS = {"Identity", "Cast", "Transpose", "Mul", "Div"}  # ops a batch-folded tensor may go through


def _batch_fold(node: gs.Node, b: Builder, lay, s_in, s_out, target) -> bool:
    """[B, H, ..] -> [B*H, ..] -> (Transpose of the other axes, scalar scaling) -> [B, H, ..].

    The dynamo exporter transposes K this way for its attention. While batch and heads share an
    axis, no channel layout is set; the Reshape that splits them again gets the heads back.
    """
    if lay.axis != 1 or target[0] != -1 or len(s_out) != len(s_in) - 1 or not _prefix_matches(s_in[2:], s_out[1:]):
        return False
    t = node.outputs[0]
    while True:
        if len(t.outputs) != 1 or t in b.graph.outputs:
            return False
        n = t.outputs[0]
        if n.op == "Reshape":
            return _unfold(n, b, t, lay, s_in)
        if n.op not in FOLD_PASS or n.inputs[0] is not t:
            return False
        if n.op == "Transpose" and (n.attrs.get("perm") or [None])[0] != 0:
            return False
        if n.op in ("Mul", "Div") and (b.const(n.inputs[1]) is None or b.const(n.inputs[1]).size != 1):
            return False
        t = n.outputs[0]


def _unfold(n: gs.Node, b: Builder, t: gs.Tensor, lay, s_in) -> bool:
    """The Reshape that splits the folded axis back into [B, H, ..]: it carries the heads again."""
    s_t, s_out = b.shape(t), b.shape(n.outputs[0])
    target = trace(n.inputs[1], {k: len(v) for k, v in b.shapes.items()})
    c = len(lay.elements)
    if s_t is None or s_out is None or target is None or len(s_out) != len(s_t) + 1:
        return False
    if s_out[0] != s_in[0] or s_out[1] != c or not _prefix_matches(s_t[1:], s_out[2:]):
        return False
    entry = target[1]
    if entry != -1 and not b.reads_count(entry, lay.elements):
        if entry != c:
            return False
        b.note(n, index=1, inner=1, elements=lay.elements, entry=True)
    b.set(n.outputs[0], 1, lay.elements)
    b.member(n, n.outputs[0])
    return True


@register("Squeeze", "Unsqueeze")
class SqueezeRule(Rule):
    """Removing or inserting size-1 axes shifts the channel axis."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        try:
            axes = attr_or_input(node, b, "axes", 1)
        except LookupError as exc:
            b.freeze(lay.elements, str(exc))
            return
        rank_in, rank_out = b.rank(node.inputs[0]), b.rank(node.outputs[0])
        if axes is None or rank_in is None or rank_out is None:
            b.freeze(lay.elements, f"{node.op} '{b.name(node)}': axes or ranks unknown")
            return
        if node.op == "Squeeze":
            axes = {norm_axis(int(x), rank_in) for x in axes}
            axis = lay.axis - sum(x < lay.axis for x in axes)
        else:
            axes = {norm_axis(int(x), rank_out) for x in axes}
            axis = next(o for o in range(rank_out) if o not in axes and
                        (o - sum(x < o for x in axes)) == lay.axis)
        if node.op == "Squeeze" and lay.axis in axes:
            b.freeze(lay.elements, f"Squeeze '{b.name(node)}' removes the channel axis")
            return
        passthrough(node, b, axis, lay.elements)


@register("Transpose")
class TransposeRule(Rule):
    """The channel axis moves to where the permutation puts it."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        rank = b.rank(node.inputs[0])
        perm = node.attrs.get("perm", list(range(rank))[::-1] if rank is not None else None)
        if perm is None:
            b.freeze(lay.elements, f"Transpose '{b.name(node)}': rank unknown")
            return
        passthrough(node, b, list(perm).index(lay.axis), lay.elements)


@register("Expand", "Tile")
class BroadcastShapeRule(Rule):
    """Expand's shape or Tile's repeats at the channel axis must be 1 or (Expand) the channel count.

    A computed Expand shape (GQA's repeat of K/V heads, built from Shape ops) is traced; its
    channel entry may be the channel count, which the rewrite replaces.
    """

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        rank_in = b.rank(node.inputs[0])
        arg = trace(node.inputs[1], {k: len(v) for k, v in b.shapes.items()}) if node.op == "Expand" else None
        if node.op == "Tile" and b.const(node.inputs[1]) is not None:
            arg = [int(v) for v in np.asarray(b.const(node.inputs[1])).reshape(-1)]
        if arg is None or rank_in is None:
            b.freeze(lay.elements, f"{node.op} '{b.name(node)}': shape argument computed at runtime")
            return
        offset = max(len(arg) - rank_in, 0) if node.op == "Expand" else 0
        index, c = lay.axis + offset, len(lay.elements)
        entry = arg[index]
        own = b.reads_count(entry, lay.elements)
        if entry == 1 or own or (node.op == "Expand" and entry == c):
            b.note(node, index=index, elements=lay.elements, entry=node.op == "Expand" and _rewritten(entry) and entry > 1)
            passthrough(node, b, index, lay.elements)
        else:
            b.freeze(lay.elements, f"{node.op} '{b.name(node)}' repeats along the channel axis")

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        note = rw.note(node)
        if note["entry"]:
            rw.set_entry(node, 1, note["index"], int(rw.kept(note["elements"]).sum()))
