"""Trace what a computed shape tensor holds: constants, or dims of other tensors read at runtime.

`x.view(x.size(0), -1)` and Paddle's `reshape(x, shape(x)[:2] + [-1])` build Reshape targets from
Shape ops; an entry that copies a tensor's own channel dim follows the pruned count by itself.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import onnx_graphsurgeon as gs

# a constant value, (tensor name, axis) read at runtime, or (tensor name, axis, factor): that dim times a constant
Entry = Union[int, tuple[str, int], tuple[str, int, int]]


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
    if op == "Where":
        return _unless_minus_one(node, ranks, depth)
    if op == "Mul" and len(node.inputs) == 2:
        return _scaled(*(trace(i, ranks, depth + 1) for i in node.inputs))
    return None


def _scaled(a: list[Entry] | None, b: list[Entry] | None) -> list[Entry] | None:
    """Entries times a one-entry constant (GQA's `num_key_value_heads * n_rep`)."""
    if a is not None and len(a) == 1 and isinstance(a[0], int) and b is not None:
        a, b = b, a
    if a is None or b is None or len(b) != 1 or not isinstance(b[0], int):
        return None
    f = b[0]
    return [e * f if isinstance(e, int) else (e[0], e[1], (e[2] if len(e) == 3 else 1) * f) for e in a]


def entry_value(e: Entry, shapes) -> int | None:
    """An entry's value given concrete shapes, None when its dim is unknown."""
    if isinstance(e, int):
        return e
    dims = shapes.get(e[0])
    d = dims[e[1]] if dims is not None and e[1] < len(dims) else None
    return d * (e[2] if len(e) == 3 else 1) if isinstance(d, int) else None


def _unless_minus_one(node: gs.Node, ranks: dict[str, int], depth: int) -> list[Entry] | None:
    """Where(Equal(s, -1), ones, s), TorchScript's guard on expand() sizes: s itself when s holds no -1."""
    cond, _, s = node.inputs
    test = cond.inputs[0] if len(cond.inputs) == 1 else None
    if test is None or test.op != "Equal" or s not in test.inputs:
        return None
    minus = test.inputs[1] if test.inputs[0] is s else test.inputs[0]
    if _filled_with(minus) != -1:
        return None
    entries = trace(s, ranks, depth + 1)
    return None if entries is None or -1 in entries else entries


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


def _filled_with(t: gs.Tensor, depth: int = 0) -> float | None:
    """The one value every entry of t holds (a constant, ConstantOfShape, or their product), else None."""
    if isinstance(t, gs.Constant):
        values = np.unique(np.asarray(t.values))
        return float(values[0]) if values.size == 1 else None
    if depth > 4 or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        return float(np.asarray(value.values).reshape(-1)[0]) if value is not None else 0.0
    if node.op == "Mul":
        a, b = (_filled_with(i, depth + 1) for i in node.inputs)
        return None if a is None or b is None else a * b
    return None
