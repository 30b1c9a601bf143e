"""Resize and Upsample for the PyTorch interpreter (needs torch), one axis at a time.

Nearest, linear and cubic interpolation are separable, so each resized axis is resampled on its own:
source coordinates are computed in float32 the way onnxruntime computes them, then rounded (nearest)
or turned into gather indices and weights (linear, cubic).
"""
from __future__ import annotations

import math

import torch

from .torch_registry import Node, axis_of, ints, op

TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric",
              "tf_half_pixel_for_nn")


def _source(mode: str, out: int, size: int, scale: float, device: torch.device) -> torch.Tensor:
    """Source coordinate of every output position along one axis."""
    x = torch.arange(out, dtype=torch.float32, device=device)
    s = torch.tensor(scale, dtype=torch.float32)
    if mode == "half_pixel":
        return (x + 0.5) / s - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / s - 0.5 if out > 1 else torch.zeros_like(x)
    if mode == "align_corners":
        return torch.zeros_like(x) if out == 1 else x * (size - 1) / (out - 1)
    if mode == "asymmetric":
        return x / s
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / s
    adjustment = out / (scale * size)  # half_pixel_symmetric
    return size / 2 * (1 - adjustment) + (x + 0.5) / s - 0.5


def _nearest(coord: torch.Tensor, rounding: str, upsampling: bool) -> torch.Tensor:
    """Round source coordinates to source indices by the nearest_mode."""
    floor = torch.floor(coord)
    half = coord - floor == 0.5
    if rounding == "round_prefer_floor":
        return torch.where(half, floor, torch.round(coord))
    if rounding == "round_prefer_ceil":
        return torch.where(half, floor + 1, torch.round(coord))
    if rounding == "floor":
        return floor
    if rounding == "ceil":
        return torch.ceil(coord)
    return torch.trunc(coord) if upsampling else torch.ceil(coord)  # opset < 11 ("simple")


def _along(weights: torch.Tensor, axis: int, rank: int) -> torch.Tensor:
    """A per-position weight vector shaped to broadcast along `axis`."""
    shape = [1] * rank
    shape[axis] = -1
    return weights.reshape(shape)


def _cubic_weights(t: torch.Tensor, a: float) -> list[torch.Tensor]:
    """Keys cubic weights of the four taps at offsets -1, 0, 1, 2 from floor(coordinate)."""
    out = []
    for offset in (-1, 0, 1, 2):
        d = torch.abs(t - offset)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        out.append(torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d))))
    return out


def _resample(x: torch.Tensor, axis: int, out: int, scale: float, node: Node, legacy: bool) -> torch.Tensor:
    """Resize one axis of x to `out` positions."""
    size = x.shape[axis]
    mode = node.attr("mode", "nearest")
    transform = "asymmetric" if legacy else node.attr("coordinate_transformation_mode", "half_pixel")
    if transform not in TRANSFORMS:
        raise node.fail(f"coordinate_transformation_mode={transform}")
    coord = _source(transform, out, size, scale, x.device)
    if mode == "nearest":
        rounding = "simple" if legacy else node.attr("nearest_mode", "round_prefer_floor")
        index = _nearest(coord, rounding, scale >= 1).long().clamp(0, size - 1)
        return x.index_select(axis, index)
    if mode in ("linear", "bilinear", "trilinear"):
        coord = coord.clamp(0, size - 1)
        low = torch.floor(coord).long()
        high = (low + 1).clamp(max=size - 1)
        frac = _along(coord - low, axis, x.dim()).to(x.dtype)
        return x.index_select(axis, low) * (1 - frac) + x.index_select(axis, high) * frac
    if mode in ("cubic", "bicubic"):
        return _cubic(x, axis, coord, node)
    raise node.fail(f"mode={mode}")


def _cubic(x: torch.Tensor, axis: int, coord: torch.Tensor, node: Node) -> torch.Tensor:
    """Cubic interpolation along one axis; taps outside the input repeat the edge (or drop out)."""
    size = x.shape[axis]
    base = torch.floor(coord)
    weights = _cubic_weights(coord - base, node.attr("cubic_coeff_a", -0.75))
    taps = [(base + offset).long() for offset in (-1, 0, 1, 2)]
    if node.attr("exclude_outside", 0):
        weights = [torch.where((t >= 0) & (t < size), w, torch.zeros_like(w)) for t, w in zip(taps, weights)]
        total = sum(weights)
        weights = [w / total for w in weights]
    out = 0
    for t, w in zip(taps, weights):
        out = out + x.index_select(axis, t.clamp(0, size - 1)) * _along(w, axis, x.dim()).to(x.dtype)
    return out


def _inputs(node: Node, x: torch.Tensor, rest: tuple) -> tuple[list[float] | None, list[int] | None]:
    """The scales and sizes a Resize / Upsample node gives, by op and opset (None when absent)."""
    if node.op_type == "Upsample" and node.opset < 9:
        return list(node.attr("scales")), None
    if node.op_type == "Upsample" or node.opset < 11:
        return [float(v) for v in rest[0].reshape(-1).tolist()], None
    scales = rest[1] if len(rest) > 1 else None
    sizes = rest[2] if len(rest) > 2 else None
    if scales is not None and scales.numel():
        return [float(v) for v in scales.reshape(-1).tolist()], None
    return None, ints(sizes)


def _targets(node: Node, x: torch.Tensor, axes: list[int], scales: list[float] | None,
             sizes: list[int] | None) -> tuple[list[int], list[float]]:
    """Output size and scale of every resized axis."""
    inputs = [x.shape[a] for a in axes]
    if scales is not None:
        return [int(math.floor(n * s)) for n, s in zip(inputs, scales)], scales
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return sizes, [o / n for o, n in zip(sizes, inputs)]
    pick = min if policy == "not_larger" else max
    scale = pick(o / n for o, n in zip(sizes, inputs))
    return [int(math.floor(n * scale + 0.5)) for n in inputs], [scale] * len(inputs)


@op("Resize", "Upsample")
def resize(node: Node, x: torch.Tensor, *rest: torch.Tensor | None) -> torch.Tensor:
    """Resize (nearest / linear / cubic, every coordinate transformation but tf_crop_and_resize)."""
    if node.attr("antialias", 0):
        raise node.fail("antialias=1")
    scales, sizes = _inputs(node, x, rest)
    axes = [axis_of(a, x.dim()) for a in node.attr("axes", range(x.dim()))]
    outs, factors = _targets(node, x, axes, scales, sizes)
    legacy = node.op_type == "Upsample" or node.opset < 11
    for axis, out, factor in zip(axes, outs, factors):
        if out != x.shape[axis] or factor != 1.0:
            x = _resample(x, axis, out, factor, node, legacy)
    return x
