"""Element-wise ops: unary pass-through, and broadcasting ops that couple or scale channels."""
from __future__ import annotations

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


@register("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow", "Where")
class BroadcastRule(Rule):
    """Numpy broadcasting: channel tensors aligned on the output axis are coupled; constants with a
    per-channel dimension are sliced with them; a size-1 dimension broadcasts and couples nothing."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        ins = [t for t in node.inputs if t is not None and t.name]
        lays = [b.layout(t) for t in ins]
        if not any(lays):
            return
        ranks = [b.rank(t) for t in ins]
        name = f"{node.op} '{b.name(node)}'"
        every = np.concatenate([l.elements for l in lays if l is not None])
        if None in ranks:
            b.freeze(every, f"{name}: an input of unknown rank")
            return
        out_rank = max(ranks)
        axes = {l.axis + out_rank - r for l, r in zip(lays, ranks) if l is not None}
        if len(axes) > 1:
            b.freeze(every, f"{name} combines channels on different axes")
            return
        axis = axes.pop()
        ref = max((l.elements for l in lays if l is not None), key=len)
        for i, (t, lay, r) in enumerate(zip(ins, lays, ranks)):
            d = axis - (out_rank - r)
            if lay is not None and len(lay.elements) == 1 < len(ref):
                b.freeze(lay.elements, f"{name} broadcasts it over {len(ref)} channels")
            elif lay is not None:
                b.couple(ref, lay.elements)
            elif not self._broadcasts(b, t, d):
                self._operand(node, b, i, d, ref, name)
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
