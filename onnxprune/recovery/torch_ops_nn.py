"""Convolution, matrix product and pooling ops of the PyTorch interpreter (needs torch)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .torch_registry import Node, op

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
Pads = tuple[list[int], list[int]]


def torch_pads(begin: list[int], end: list[int]) -> list[int]:
    """ONNX begin/end pads of the trailing axes in F.pad order (last axis first)."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


def window_pads(node: Node, x: torch.Tensor, kernel: list[int], strides: list[int],
                dilations: list[int]) -> Pads:
    """Begin and end pads of a sliding-window op: explicit `pads`, or those auto_pad implies."""
    n = len(kernel)
    auto = node.attr("auto_pad", "NOTSET")
    if auto == "VALID":
        return [0] * n, [0] * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        pads = node.attr("pads", [0] * 2 * n)
        return list(pads[:n]), list(pads[n:])
    begin, end = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        first = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return begin, end


def _geometry(node: Node, x: torch.Tensor, kernel: list[int]) -> tuple[list[int], list[int], Pads]:
    """Strides, dilations and pads of a conv or pool node."""
    n = len(kernel)
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    return strides, dilations, window_pads(node, x, kernel, strides, dilations)


@op("Conv")
def conv(node: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """N-d convolution with groups, dilations and explicit, asymmetric or automatic pads."""
    n = w.dim() - 2
    strides, dilations, (begin, end) = _geometry(node, x, list(w.shape[2:]))
    if begin != end:
        x, begin = F.pad(x, torch_pads(begin, end)), [0] * n
    return CONV[n](x, w, b, strides, begin, dilations, node.attr("group", 1))


def _transpose_pads(node: Node, x: torch.Tensor, w: torch.Tensor, strides: list[int],
                    dilations: list[int], extra: list[int]) -> Pads:
    """Begin and end crops of a ConvTranspose: explicit pads, or those output_shape / auto_pad imply."""
    n = w.dim() - 2
    auto = node.attr("auto_pad", "NOTSET")
    shape = node.attr("output_shape")
    if shape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        shape = [size * s for size, s in zip(x.shape[2:], strides)]
    if shape is None:
        if auto == "VALID":
            return [0] * n, [0] * n
        pads = node.attr("pads", [0] * 2 * n)
        return list(pads[:n]), list(pads[n:])
    begin, end = [], []
    for size, k, s, d, e, want in zip(x.shape[2:], w.shape[2:], strides, dilations, extra, shape[-n:]):
        total = s * (size - 1) + e + (k - 1) * d + 1 - want
        first = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return begin, end


@op("ConvTranspose")
def conv_transpose(node: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """N-d transposed convolution: the full result, then output_padding added and pads cropped."""
    n = w.dim() - 2
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    extra = list(node.attr("output_padding", [0] * n))
    begin, end = _transpose_pads(node, x, w, strides, dilations, extra)
    y = CONV_T[n](x, w, None, strides, 0, 0, node.attr("group", 1), dilations)
    # F.pad crops with negative amounts; the output_padding rows get no input, only the bias
    y = F.pad(y, torch_pads([-p for p in begin], [e - p for e, p in zip(extra, end)]))
    return y if b is None else y + b.reshape(1, -1, *[1] * n)


@op("Gemm")
def gemm(node: Node, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """alpha * A' @ B' + beta * C, with A' and B' optionally transposed."""
    if node.attr("transA", 0):
        a = a.t()
    if node.attr("transB", 0):
        b = b.t()
    y = a @ b
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return y


@op("MatMul")
def matmul(node: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matrix product with numpy semantics (batched, 1-D operands)."""
    return torch.matmul(a, b)


@op("Einsum")
def einsum(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """Einstein summation by the node's equation."""
    return torch.einsum(node.attr("equation"), *xs)


def _native(begin: list[int], end: list[int], kernel: list[int], dilations: list[int]) -> bool:
    """Whether torch's pooling can apply these pads itself (symmetric, at most half the window)."""
    return begin == end and all(2 * p <= (k - 1) * d + 1 for p, k, d in zip(begin, kernel, dilations))


@op("MaxPool")
def max_pool(node: Node, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Max pooling with pads, auto_pad, dilations and ceil_mode; the optional Indices output too."""
    kernel = list(node.attr("kernel_shape"))
    n = len(kernel)
    strides, dilations, (begin, end) = _geometry(node, x, kernel)
    ceil = bool(node.attr("ceil_mode", 0))
    want_indices = len(node.outputs) > 1 and bool(node.outputs[1])
    if _native(begin, end, kernel, dilations):
        if not want_indices:
            return MAX_POOL[n](x, kernel, strides, begin, dilations, ceil)
        if node.attr("storage_order", 0):
            raise node.fail("Indices with storage_order=1")
        y, idx = MAX_POOL[n](x, kernel, strides, begin, dilations, ceil, return_indices=True)
        plane = math.prod(x.shape[2:])
        offsets = torch.arange(math.prod(x.shape[:2]), device=x.device).reshape(*x.shape[:2], *[1] * n)
        return y, idx + offsets * plane
    if want_indices:
        raise node.fail("Indices with asymmetric or large pads")
    x = F.pad(x, torch_pads(begin, end), value=-math.inf)
    return MAX_POOL[n](x, kernel, strides, 0, dilations, ceil)


@op("AveragePool")
def average_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Average pooling with pads, auto_pad, ceil_mode and count_include_pad."""
    kernel = list(node.attr("kernel_shape"))
    n = len(kernel)
    strides, dilations, (begin, end) = _geometry(node, x, kernel)
    if any(d != 1 for d in dilations):
        raise node.fail("dilations other than 1")
    ceil, include = bool(node.attr("ceil_mode", 0)), bool(node.attr("count_include_pad", 0))
    if _native(begin, end, kernel, dilations):
        return AVG_POOL[n](x, kernel, strides, begin, ceil, include)
    pads = torch_pads(begin, end)
    y = AVG_POOL[n](F.pad(x, pads), kernel, strides, 0, ceil, True)
    if include:
        return y
    # divide by the count of real (unpadded) elements under each window instead
    ones = F.pad(torch.ones_like(x[:1, :1]), pads)
    return y / AVG_POOL[n](ones, kernel, strides, 0, ceil, True)


@op("GlobalAveragePool")
def global_average_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Mean over all spatial axes, kept as size-1 axes."""
    return x.mean(tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Max over all spatial axes, kept as size-1 axes."""
    return x.amax(tuple(range(2, x.dim())), keepdim=True)
