"""Gemm and MatMul with a constant weight: fully connected producers and consumers."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..builder import CONSUMER, PRODUCER, Builder
from . import Rule, register
from .common import channel_input


@register("Gemm")
class GemmRule(Rule):
    """Y[M, N] = alpha * A'[M, K] @ B'[K, N] + beta * C, A' and B' optionally transposed."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
        w = b.const(b.input(node, 1))
        lay = channel_input(node, b, 0, axis=0 if trans_a else 1)
        if w is None or b.const(b.input(node, 0)) is not None:
            b.freeze_inputs(node, f"Gemm '{b.name(node)}' multiplies two computed tensors")
            return
        k_axis, n_axis = (1, 0) if trans_b else (0, 1)
        out = b.produce(node, w.shape[n_axis])
        b.set(node.outputs[0], 1, out)
        if lay is not None:
            b.param(node, 1, k_axis, lay.elements, CONSUMER, "weight")
        b.param(node, 1, n_axis, out, PRODUCER, "weight")
        bias = b.const(b.input(node, 2))
        if bias is not None and bias.ndim and bias.shape[-1] == len(out) and len(out) > 1:
            b.param(node, 2, bias.ndim - 1, out, PRODUCER, "bias")
        elif b.input(node, 2) is not None and (bias is None or bias.size > 1):
            b.freeze(out, f"Gemm '{b.name(node)}': bias C of shape "
                          f"{None if bias is None else list(bias.shape)} cannot be sliced")


@register("MatMul")
class MatMulRule(Rule):
    """Y[..., N] = A[..., K] @ W[K, N] with W a constant matrix."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        w = b.const(b.input(node, 1))
        rank = b.rank(node.inputs[0])
        if w is None and b.const(node.inputs[0]) is None:
            two_activations(node, b)
            return
        if w is None or w.ndim != 2 or rank is None or b.const(node.inputs[0]) is not None:
            b.freeze_inputs(node, f"MatMul '{b.name(node)}' is not an activation times a constant matrix")
            return
        lay = channel_input(node, b, 0, axis=rank - 1)
        out = b.produce(node, w.shape[1])
        b.set(node.outputs[0], rank - 1, out)
        if lay is not None:
            b.param(node, 1, 0, lay.elements, CONSUMER, "weight")
        b.param(node, 1, 1, out, PRODUCER, "weight")


def _place(lay, rank: int, out_rank: int, left: bool) -> tuple[str, int | None]:
    """Where an operand's channel axis goes in A @ B: a batch or row/column axis, or contracted."""
    if lay.axis < rank - 2:
        return "batch", lay.axis + out_rank - rank
    contracted = rank - 1 if left else rank - 2
    if lay.axis == contracted:
        return "contracted", None
    return ("row", out_rank - 2) if left else ("column", out_rank - 1)


def two_activations(node: gs.Node, b: Builder, operands: tuple[int, int] = (0, 1)) -> None:
    """A @ B of two computed tensors (attention scores Q @ K^T, then P @ V).

    Channels on a batch axis (heads) pair up index by index; channels contracted on both sides
    pair up and leave the output; rows of A and columns of B pass to the output.
    """
    a, c = node.inputs[operands[0]], node.inputs[operands[1]]
    lays, ranks = [b.layout(a), b.layout(c)], [b.rank(a), b.rank(c)]
    name = f"MatMul '{b.name(node)}'"
    if not any(lays):
        return
    if None in ranks or min(ranks) < 2:
        b.freeze_inputs(node, f"{name}: an operand of unknown rank or a vector")
        return
    out_rank = max(ranks)
    places = [None if l is None else _place(l, r, out_rank, i == 0) for i, (l, r) in enumerate(zip(lays, ranks))]
    kinds = {p[0] for p in places if p is not None}
    if len(kinds) > 1:
        b.freeze_inputs(node, f"{name} carries channels on two different axes")
        return
    kind = kinds.pop()
    if all(lays):
        if kind in ("row", "column") or (kind == "batch" and places[0][1] != places[1][1]):
            b.freeze_inputs(node, f"{name} carries channels on two different axes")
            return
        b.couple(lays[0].elements, lays[1].elements)
    else:
        i = 0 if lays[0] is not None else 1
        other = [a, c][1 - i]
        if kind == "contracted" or (kind == "batch" and not _broadcasts(b, other, places[i][1], out_rank)):
            b.freeze(lays[i].elements, f"{name}: the other operand '{other.name}' carries the same "
                                       "channels and nothing slices it")
            return
    for t in (a, c):
        b.member(node, t)
    if kind != "contracted":
        lay = lays[0] or lays[1]
        b.set(node.outputs[0], places[0 if lays[0] else 1][1], lay.elements)
        b.member(node, node.outputs[0])


def _broadcasts(b: Builder, t: gs.Tensor, out_axis: int, out_rank: int) -> bool:
    """True when t has size 1 on the output's batch axis (or lacks the axis): nothing to slice."""
    shape = b.shape(t)
    d = out_axis - (out_rank - len(shape)) if shape is not None else None
    return d is not None and (d < 0 or shape[d] == 1)
