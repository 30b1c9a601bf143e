"""Shape, indexing and tensor-construction ops of the PyTorch interpreter (needs torch).

Shapes, axes and indices travel as int64 tensors and are read with .tolist() where an op needs them,
so shape computations follow whatever sizes the inputs have.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .torch_registry import Node, axes_of, axis_of, ints, op, scalar
from .torch_ops_nn import torch_pads


def _long(t: torch.Tensor, size: int) -> torch.Tensor:
    """Indices as int64 with negative ones counted from the end of an axis of `size`."""
    t = t.long()
    return torch.where(t < 0, t + size, t)


@op("Constant")
def constant(node: Node) -> torch.Tensor:
    """The node's value attribute in any of its spellings."""
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in node.attrs:
            return torch.tensor(node.attrs[key], dtype=dtype)
    if "value" not in node.attrs:
        raise node.fail(f"attribute {sorted(node.attrs)}")
    return node.attrs["value"]


@op("ConstantOfShape")
def constant_of_shape(node: Node, shape: torch.Tensor) -> torch.Tensor:
    """A tensor of the given shape filled with the one-element `value` (default float 0)."""
    value = node.attr("value")
    if value is None:
        return torch.zeros(ints(shape), dtype=torch.float32, device=shape.device)
    return torch.full(ints(shape), value.reshape(-1)[0].item(), dtype=value.dtype, device=shape.device)


@op("Shape")
def shape_(node: Node, x: torch.Tensor) -> torch.Tensor:
    """The input's dimensions (the [start, end) range of them from opset 15)."""
    rank = x.dim()
    start = min(max(axis_of(node.attr("start", 0), rank), 0), rank)
    end = min(max(axis_of(node.attr("end", rank), rank), 0), rank)
    return torch.tensor(list(x.shape)[start:end], dtype=torch.int64, device=x.device)


@op("Size")
def size(node: Node, x: torch.Tensor) -> torch.Tensor:
    """The number of elements as an int64 scalar."""
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@op("Reshape")
def reshape(node: Node, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Reshape; a 0 copies the input's dimension unless allowzero=1."""
    dims = ints(shape)
    if not node.attr("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def flatten(node: Node, x: torch.Tensor) -> torch.Tensor:
    """2-D view: the axes before `axis` times the axes from it."""
    axis = axis_of(node.attr("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Transpose")
def transpose(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Permute axes (default: reverse them)."""
    return x.permute(node.attr("perm", list(range(x.dim() - 1, -1, -1))))


@op("Squeeze")
def squeeze(node: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """Drop the given size-1 axes (all size-1 axes when none are given)."""
    dims = axes_of(node, axes, x.dim(), 13)
    return x.squeeze() if dims is None else x.squeeze(tuple(dims))


@op("Unsqueeze")
def unsqueeze(node: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """Insert size-1 axes at the given positions of the output."""
    raw = node.attr("axes") if node.opset < 13 else ints(axes)
    for axis in sorted(axis_of(a, x.dim() + len(raw)) for a in raw):
        x = x.unsqueeze(axis)
    return x


@op("Concat")
def concat(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """Join along an axis."""
    return torch.cat(xs, axis_of(node.attr("axis"), xs[0].dim()))


@op("Split")
def split(node: Node, x: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Split along an axis: sizes as attribute (< 13) or input, else equal parts (the last may be smaller)."""
    axis = axis_of(node.attr("axis", 0), x.dim())
    parts = node.attr("split") if node.opset < 13 else (ints(sizes) if sizes is not None else None)
    if not parts:
        count = node.attr("num_outputs", len(node.outputs))
        chunk = math.ceil(x.shape[axis] / count)
        parts = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    return torch.split(x, list(parts), axis)


def _slice_bounds(start: int, end: int, step: int, size: int) -> tuple[int, int]:
    """Start and end of one sliced axis, made non-negative and clamped as ONNX specifies."""
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        return min(max(start, 0), size), min(max(end, 0), size)
    return min(max(start, 0), size - 1), min(max(end, -1), size - 1)


@op("Slice")
def slice_(node: Node, x: torch.Tensor, starts: torch.Tensor | None = None, ends: torch.Tensor | None = None,
           axes: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> torch.Tensor:
    """Slice with negative and out-of-range bounds, steps of either sign, attributes before opset 10."""
    if node.opset < 10:
        begin, stop, dims = node.attr("starts"), node.attr("ends"), node.attr("axes")
        strides = None
    else:
        begin, stop = ints(starts), ints(ends)
        dims, strides = (ints(axes) if axes is not None else None), (ints(steps) if steps is not None else None)
    dims = list(range(len(begin))) if dims is None else dims
    strides = [1] * len(begin) if strides is None else strides
    index: list[slice] = [slice(None)] * x.dim()
    backwards = []
    for b, e, a, s in zip(begin, stop, dims, strides):
        a = axis_of(a, x.dim())
        b, e = _slice_bounds(b, e, s, x.shape[a])
        if s > 0:
            index[a] = slice(b, max(b, e), s)
        else:
            backwards.append((a, torch.arange(b, e, s, device=x.device)))
    x = x[tuple(index)]
    for a, picks in backwards:
        x = x.index_select(a, picks)
    return x


@op("Gather")
def gather(node: Node, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Pick entries along an axis; the indices' shape replaces that axis; negative indices count back."""
    axis = axis_of(node.attr("axis", 0), x.dim())
    picked = x.index_select(axis, _long(indices, x.shape[axis]).reshape(-1))
    return picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1:]))


@op("GatherElements")
def gather_elements(node: Node, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """torch.gather with ONNX's negative indices."""
    axis = axis_of(node.attr("axis", 0), x.dim())
    return torch.gather(x, axis, _long(indices, x.shape[axis]))


@op("GatherND")
def gather_nd(node: Node, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Gather slices by index tuples in the last indices axis, after `batch_dims` shared leading axes."""
    batch_dims = node.attr("batch_dims", 0)
    depth = indices.shape[-1]
    batch = math.prod(x.shape[:batch_dims])
    data = x.reshape(batch, *x.shape[batch_dims:])
    picks = indices.long().reshape(batch, -1, depth)
    sizes = torch.tensor(x.shape[batch_dims:batch_dims + depth], device=x.device)
    picks = torch.where(picks < 0, picks + sizes, picks)
    rows = torch.arange(batch, device=x.device).reshape(-1, 1).expand(batch, picks.shape[1])
    out = data[(rows, *picks.unbind(-1))]
    return out.reshape((*indices.shape[:-1], *x.shape[batch_dims + depth:]))


@op("ScatterND")
def scatter_nd(node: Node, x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    """A copy of x with the slices at the index tuples replaced (or reduced) by the updates."""
    out = x.clone()
    where = tuple(indices.long().unbind(-1))  # torch indexing counts negative indices back, as ONNX does
    reduction = node.attr("reduction", "none")
    if reduction == "none":
        out[where] = updates
    elif reduction == "add":
        out.index_put_(where, updates, accumulate=True)
    else:
        raise node.fail(f"reduction={reduction}")
    return out


@op("ScatterElements")
def scatter_elements(node: Node, x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    """torch.scatter / scatter_reduce with ONNX's negative indices and reductions."""
    axis = axis_of(node.attr("axis", 0), x.dim())
    index = _long(indices, x.shape[axis])
    reduction = node.attr("reduction", "none")
    if reduction == "none":
        return torch.scatter(x, axis, index, updates)
    names = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}
    return torch.scatter_reduce(x, axis, index, updates, names[reduction], include_self=True)


@op("Expand")
def expand(node: Node, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Broadcast to the shape (broadcasting both ways, as numpy does)."""
    return x.expand(torch.broadcast_shapes(x.shape, tuple(ints(shape))))


@op("Tile")
def tile(node: Node, x: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    """Repeat the whole tensor along each axis."""
    return x.repeat(ints(repeats))


@op("Range")
def range_(node: Node, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """start, start + delta, ... below limit, in the inputs' type."""
    return torch.arange(scalar(start), scalar(limit), scalar(delta), dtype=start.dtype, device=start.device)


@op("Where")
def where(node: Node, condition: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x where the condition holds, else y (all broadcast)."""
    return torch.where(condition.bool(), x, y)


@op("NonZero")
def non_zero(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Indices of the non-zero entries, one row per axis."""
    return torch.nonzero(x).t().contiguous()


@op("Trilu")
def trilu(node: Node, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
    """The upper or lower triangle relative to diagonal k."""
    diagonal = int(scalar(k, 0))
    return torch.triu(x, diagonal) if node.attr("upper", 1) else torch.tril(x, diagonal)


def _pad_index(mode: str, size: int, begin: int, end: int, device: torch.device) -> torch.Tensor:
    """Source positions of one padded axis for the edge, reflect and wrap modes."""
    i = torch.arange(-begin, size + end, device=device)
    if mode == "edge":
        return i.clamp(0, size - 1)
    if mode == "wrap":
        return i % size
    period = 2 * (size - 1)
    if period == 0:
        return torch.zeros_like(i)
    i = i % period
    return torch.where(i < size, i, period - i)


@op("Pad")
def pad(node: Node, x: torch.Tensor, pads: torch.Tensor | None = None, value: torch.Tensor | None = None,
        axes: torch.Tensor | None = None) -> torch.Tensor:
    """Pad (or crop, for negative pads) in constant, edge, reflect or wrap mode."""
    if node.opset < 11:
        amounts, fill = node.attr("pads"), node.attr("value", 0.0)
    else:
        amounts, fill = ints(pads), scalar(value, 0)
    dims = list(range(x.dim())) if axes is None else [axis_of(a, x.dim()) for a in ints(axes)]
    begin, end = amounts[:len(dims)], amounts[len(dims):]
    mode = node.attr("mode", "constant")
    if mode == "constant":
        full_begin, full_end = [0] * x.dim(), [0] * x.dim()
        for a, b, e in zip(dims, begin, end):
            full_begin[a], full_end[a] = b, e
        return F.pad(x, torch_pads(full_begin, full_end), value=fill)
    if mode not in ("edge", "reflect", "wrap"):
        raise node.fail(f"mode={mode}")
    for a, b, e in zip(dims, begin, end):
        x = x.index_select(a, _pad_index(mode, x.shape[a], b, e, x.device))
    return x


@op("DepthToSpace")
def depth_to_space(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Move channel blocks into spatial blocks (DCR or CRD order)."""
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    if node.attr("mode", "DCR") == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return t.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth")
def space_to_depth(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Move spatial blocks into channels."""
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return t.reshape(n, c * b * b, h // b, w // b)
