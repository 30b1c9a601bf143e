"""Small helpers shared by the rules."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import Builder


def norm_axis(axis: int, rank: int) -> int:
    """A possibly negative axis as a non-negative one."""
    return axis + rank if axis < 0 else axis


def static(dims: Sequence) -> bool:
    """Every dim is a known integer."""
    return all(isinstance(d, int) for d in dims)


def volume(dims: Sequence) -> int | str | None:
    """Product of dims: an int, a probe token `~a,b` when dynamic dims are involved, else None."""
    if static(dims):
        return math.prod(dims)
    probes = [(d, d) if isinstance(d, int) else _token(d) for d in dims]
    if any(p is None for p in probes):
        return None
    a, b = math.prod(p[0] for p in probes), math.prod(p[1] for p in probes)
    return a if a == b else f"~{a},{b}"


def _token(d) -> tuple[int, int] | None:
    """The two probe values of a dynamic dim token (see shapes.probe_shapes)."""
    if isinstance(d, str) and d.startswith("~"):
        a, _, b = d[1:].partition(",")
        return int(a), int(b)
    return None


def attr_or_input(node: gs.Node, b: Builder, attr: str, index: int) -> np.ndarray | None:
    """A list-valued argument given as an attribute (old opsets) or a constant input (new opsets).

    Returns None when it is absent, and raises LookupError when it is a computed input.
    """
    if attr in node.attrs:
        return np.asarray(node.attrs[attr], dtype=np.int64)
    t = b.input(node, index)
    if t is None:
        return None
    value = b.const(t)
    if value is None:
        raise LookupError(f"{node.op} '{b.name(node)}': '{attr}' is computed at runtime")
    return np.asarray(value, dtype=np.int64).reshape(-1)


def channel_input(node: gs.Node, b: Builder, index: int = 0, axis: int | None = None):
    """The layout of an input, frozen and dropped if it sits on another axis than required."""
    lay = b.layout(b.input(node, index))
    if lay is not None and axis is not None and lay.axis != axis:
        b.freeze(lay.elements, f"{node.op} '{b.name(node)}' expects channels on axis {axis}, "
                               f"found them on axis {lay.axis}")
        return None
    return lay


def passthrough(node: gs.Node, b: Builder, axis: int, elements: np.ndarray, outputs: int | None = None) -> None:
    """Give outputs the same channel layout and record the node as a pass-through member."""
    for out in node.outputs[:outputs]:
        b.set(out, axis, elements)
        b.member(node, out)
