"""Element-wise ops: unary pass-through, and broadcasting ops that couple or scale channels."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import PASS, Builder
from . import Rule, register
from .common import passthrough

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Erf", "Mish", "ThresholdedRelu", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Atan", "Asin", "Acos", "Sinh", "Cosh",
    "IsNaN", "IsInf", "Not", "Identity", "Cast", "CastLike", "Dropout", "Clip", "Shrink",
)
# What a per-channel constant operand does, by op and operand position (the oracle and merging care).
KIND = {"Add": "addend", "Sub": "addend", "Mul": "factor", "Div": ("factor", "divisor"), "PRelu": "slope",
        "Pow": ("factor", "exponent"), "Max": "bound", "Min": "bound", "Sum": "addend", "Mean": "addend"}


@register(*UNARY)
class UnaryRule(Rule):
    """Acts on each element alone; extra inputs (Clip bounds, CastLike target) are scalars or types."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        for t in node.inputs[1:]:
            if b.layout(t) is not None or (t is not None and t.name and _size(b, t) not in (None, 1)):
                b.freeze(lay.elements, f"{node.op} '{b.name(node)}' has a non-scalar extra input")
        passthrough(node, b, lay.axis, lay.elements)


def _size(b: Builder, t: gs.Tensor) -> int | None:
    s = b.shape(t)
    return None if s is None or not all(isinstance(d, int) for d in s) else int(np.prod(s))


def aligned(b: Builder, ins: list[gs.Tensor], lays: list, name: str) -> tuple[int, np.ndarray] | None:
    """The output axis the operands' channels line up on, and the widest layout; None when they cannot line up
    (frozen, with the reason)."""
    ranks = [b.rank(t) for t in ins]
    every = np.concatenate([l.elements for l in lays if l is not None])
    if None in ranks:
        b.freeze(every, f"{name}: an input of unknown rank")
        return None
    out_rank = max(ranks)
    axes = {l.axis + out_rank - r for l, r in zip(lays, ranks) if l is not None}
    if len(axes) > 1:
        b.freeze(every, f"{name} combines channels on different axes")
        return None
    return axes.pop(), max((l.elements for l in lays if l is not None), key=len)


def couple_operands(b: Builder, ins: list[gs.Tensor], lays: list, axis: int, ref: np.ndarray, name: str,
                    other: Callable[[int, int], None]) -> None:
    """Couple each channel operand with `ref` (a single channel broadcast over many freezes it); an operand
    without channels that does not broadcast on the axis goes to `other(index, its axis)`."""
    out_rank = max(b.rank(t) for t in ins)
    for i, (t, lay) in enumerate(zip(ins, lays)):
        d = axis - (out_rank - b.rank(t))
        if lay is not None and len(lay.elements) == 1 < len(ref):
            b.freeze(lay.elements, f"{name} broadcasts it over {len(ref)} channels")
        elif lay is not None:
            b.couple(ref, lay.elements)
        elif not BroadcastRule._broadcasts(b, t, d):
            other(i, d)


@register("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow", "Where")
class BroadcastRule(Rule):
    """Numpy broadcasting: channel tensors aligned on the output axis are coupled; constants with a
    per-channel dimension are sliced with them; a size-1 dimension broadcasts and couples nothing."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        ins = [t for t in node.inputs if t is not None and t.name]
        lays = [b.layout(t) for t in ins]
        if not any(lays):
            return
        name = f"{node.op} '{b.name(node)}'"
        found = aligned(b, ins, lays, name)
        if found is not None:
            axis, ref = found
            couple_operands(b, ins, lays, axis, ref, name, lambda i, d: self._operand(node, b, i, d, ref, name))
            passthrough(node, b, axis, ref)

    @staticmethod
    def _broadcasts(b: Builder, t: gs.Tensor, d: int) -> bool:
        """True when the operand has no channel dimension or a size-1 one."""
        s = b.shape(t)
        return d < 0 or (s is not None and s[d] == 1)

    @staticmethod
    def _operand(node: gs.Node, b: Builder, i: int, d: int, ref: np.ndarray, name: str) -> None:
        """A per-channel constant is sliced with the channels; anything else freezes them."""
        if b.const(node.inputs[i]) is None or node.op == "Where":
            b.freeze(ref, f"{name}: operand '{node.inputs[i].name}' may carry channels nobody slices")
            return
        kind = KIND[node.op]
        kind = kind if isinstance(kind, str) else kind[min(i, 1)]
        b.param(node, i, d, ref, PASS, kind)
