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
        if w is None or w.ndim != 2 or rank is None or b.const(node.inputs[0]) is not None:
            b.freeze_inputs(node, f"MatMul '{b.name(node)}' is not an activation times a constant matrix")
            return
        lay = channel_input(node, b, 0, axis=rank - 1)
        out = b.produce(node, w.shape[1])
        b.set(node.outputs[0], rank - 1, out)
        if lay is not None:
            b.param(node, 1, 0, lay.elements, CONSUMER, "weight")
        b.param(node, 1, 1, out, PRODUCER, "weight")
