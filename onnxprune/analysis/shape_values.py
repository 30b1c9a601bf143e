"""Trace what a computed shape tensor holds: constants, or dims of other tensors read at runtime.

`x.view(x.size(0), -1)` and Paddle's `reshape(x, shape(x)[:2] + [-1])` build Reshape targets from
Shape ops; an entry that copies a tensor's own channel dim follows the pruned count by itself.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import onnx_graphsurgeon as gs

Entry = Union[int, tuple[str, int]]  # a constant value, or (tensor name, axis) read at runtime


def trace(t: gs.Tensor, ranks: dict[str, int], depth: int = 0) -> list[Entry] | None:
    """The entries of a 1-D int tensor, or None when they cannot be traced."""
    if isinstance(t, gs.Constant):
        return [int(v) for v in np.asarray(t.values).reshape(-1)]
    if depth > 8 or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    op = node.op
    if op == "Shape":
        rank = ranks.get(node.inputs[0].name)
        if rank is None:
            return None
        start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
        return [(node.inputs[0].name, a) for a in range(rank)][slice(start, end)]
    if op in ("Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape"):
        return trace(node.inputs[0], ranks, depth + 1)
    if op == "Concat":
        parts = [trace(i, ranks, depth + 1) for i in node.inputs]
        return None if any(p is None for p in parts) else [e for p in parts for e in p]
    if op in ("Slice", "Gather"):
        return _select(node, ranks, depth)
    return None


def _select(node: gs.Node, ranks: dict[str, int], depth: int) -> list[Entry] | None:
    """Slice or Gather of a traced 1-D tensor with constant bounds or indices."""
    src = trace(node.inputs[0], ranks, depth + 1)
    args = [np.asarray(i.values).reshape(-1) if isinstance(i, gs.Constant) else None for i in node.inputs[1:]]
    if src is None or any(a is None for a in args):
        return None
    if node.op == "Gather":
        return [src[int(i)] for i in args[0]]
    starts, ends = (args[0], args[1]) if len(args) >= 2 else (node.attrs.get("starts"), node.attrs.get("ends"))
    steps = args[3] if len(args) >= 4 else [1]
    if starts is None or len(starts) != 1:
        return None
    return src[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
