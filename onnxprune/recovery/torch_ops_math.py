"""Elementwise, activation, cast, reduction and softmax ops of the PyTorch interpreter (needs torch)."""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from .torch_registry import TORCH_TYPES, Node, axes_of, axis_of, op, scalar

UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Abs": torch.abs, "Neg": torch.neg, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Erf": torch.erf,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos,
    "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh,
    "Atanh": torch.atanh, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign,
    "Not": torch.logical_not, "IsNaN": torch.isnan, "Softsign": F.softsign, "Mish": F.mish,
    "Softplus": F.softplus, "Identity": lambda x: x,
}
BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor, "Equal": torch.eq, "Less": torch.lt, "LessOrEqual": torch.le,
    "Greater": torch.gt, "GreaterOrEqual": torch.ge, "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or, "BitwiseXor": torch.bitwise_xor,
}
VARIADIC: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Sum": torch.add, "Max": torch.maximum, "Min": torch.minimum,
}
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """An op function applying `fn` to the single input."""
    return lambda node, x: fn(x)


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """An op function applying `fn` to two broadcast inputs."""
    return lambda node, a, b: fn(a, b)


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """An op function folding `fn` over any number of broadcast inputs."""
    return lambda node, *xs: functools.reduce(fn, xs)


for _name, _fn in UNARY.items():
    op(_name)(_unary(_fn))
for _name, _fn in BINARY.items():
    op(_name)(_binary(_fn))
for _name, _fn in VARIADIC.items():
    op(_name)(_variadic(_fn))


@op("Mean")
def mean(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """Elementwise mean of the inputs."""
    return functools.reduce(torch.add, xs) / len(xs)


@op("Div")
def div(node: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Division; integers truncate toward zero as onnxruntime's C++ division does."""
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


@op("Pow")
def pow_(node: Node, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x ** y in the type of x."""
    return torch.pow(x, y).to(x.dtype)


@op("Mod")
def mod(node: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Remainder: the sign of the divisor, or of the dividend when fmod=1."""
    return torch.fmod(a, b) if node.attr("fmod", 0) else torch.remainder(a, b)


@op("IsInf")
def is_inf(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Infinite entries of the selected signs."""
    pos = torch.isposinf(x) if node.attr("detect_positive", 1) else torch.zeros_like(x, dtype=torch.bool)
    neg = torch.isneginf(x) if node.attr("detect_negative", 1) else torch.zeros_like(x, dtype=torch.bool)
    return pos | neg


@op("Dropout")
def dropout(node: Node, x: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference dropout: the input unchanged and an all-true mask."""
    return x, torch.ones_like(x, dtype=torch.bool)


@op("LeakyRelu")
def leaky_relu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x, or alpha * x below zero."""
    return F.leaky_relu(x, node.attr("alpha", 0.01))


@op("PRelu")
def prelu(node: Node, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """x, or slope * x below zero (slope broadcast to x)."""
    return torch.where(x < 0, x * slope, x)


@op("Elu")
def elu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x, or alpha * (exp(x) - 1) below zero."""
    return F.elu(x, node.attr("alpha", 1.0))


@op("Celu")
def celu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    return F.celu(x, node.attr("alpha", 1.0))


@op("Selu")
def selu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """gamma * (x, or alpha * (exp(x) - 1) below zero)."""
    alpha, gamma = node.attr("alpha", SELU_ALPHA), node.attr("gamma", SELU_GAMMA)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("ThresholdedRelu")
def thresholded_relu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x above alpha, else 0."""
    return torch.where(x > node.attr("alpha", 1.0), x, torch.zeros_like(x))


@op("Shrink")
def shrink(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x -/+ bias outside [-lambd, lambd], 0 inside."""
    bias, lambd = node.attr("bias", 0.0), node.attr("lambd", 0.5)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@op("HardSigmoid")
def hard_sigmoid(node: Node, x: torch.Tensor) -> torch.Tensor:
    """clamp(alpha * x + beta, 0, 1)."""
    return torch.clamp(node.attr("alpha", 0.2) * x + node.attr("beta", 0.5), 0.0, 1.0)


@op("HardSwish")
def hard_swish(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x * clamp(x / 6 + 0.5, 0, 1)."""
    return x * torch.clamp(x / 6 + 0.5, 0.0, 1.0)


@op("Gelu")
def gelu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Gelu, exact or with the tanh approximation."""
    return F.gelu(x, approximate=node.attr("approximate", "none"))


@op("Clip")
def clip(node: Node, x: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
    """Clamp to [min, max]: attributes before opset 11, optional inputs from it."""
    if node.opset < 11:
        return torch.clamp(x, node.attr("min", -math.inf), node.attr("max", math.inf))
    if lo is None and hi is None:
        return x
    return torch.clamp(x, lo, hi)


@op("Cast")
def cast(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Convert to the `to` type (floats to integers truncate toward zero)."""
    to = node.attr("to")
    if to not in TORCH_TYPES:
        raise node.fail(f"cast to type {to}")
    return x.to(TORCH_TYPES[to])


@op("CastLike")
def cast_like(node: Node, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Convert to the type of the second input."""
    return x.to(like.dtype)


def _reduced(node: Node, x: torch.Tensor, axes: torch.Tensor | None) -> list[int] | None:
    """The axes a Reduce* node reduces, or None when it reduces none (noop_with_empty_axes)."""
    dims = axes_of(node, axes, x.dim(), 13 if node.op_type == "ReduceSum" else 18)
    if not dims:
        return None if node.attr("noop_with_empty_axes", 0) and node.opset >= 13 else list(range(x.dim()))
    return sorted(dims)


def _prod(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    """Product over several axes."""
    for d in dims:
        x = torch.prod(x, d, keepdim=True)
    return x if keep else x.squeeze(tuple(dims))


REDUCERS: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceSum": lambda x, d, k: torch.sum(x, d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}


def _reduce(node: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """Any Reduce* op: axes from attribute or input, keepdims, noop_with_empty_axes."""
    dims = _reduced(node, x, axes)
    if dims is None:  # no axis reduced, but the per-element part (abs, square, log ...) still applies
        x, dims = x.unsqueeze(0), [0]
        return REDUCERS[node.op_type](x, dims, False).to(x.dtype)
    if node.op_type == "ReduceMean" and not x.is_floating_point():
        out = torch.sum(x, dims, keepdim=bool(node.attr("keepdims", 1))) // math.prod(x.shape[d] for d in dims)
    else:
        out = REDUCERS[node.op_type](x, dims, bool(node.attr("keepdims", 1)))
    return out.to(x.dtype)  # torch sums integers as int64


for _name in REDUCERS:
    op(_name)(_reduce)


@op("ArgMax", "ArgMin")
def arg_extreme(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Index of the first (or last, select_last_index) maximum / minimum along an axis."""
    axis = axis_of(node.attr("axis", 0), x.dim())
    keep = bool(node.attr("keepdims", 1))
    fn = torch.argmax if node.op_type == "ArgMax" else torch.argmin
    if node.attr("select_last_index", 0):
        return x.shape[axis] - 1 - fn(x.flip(axis), axis, keep)
    return fn(x, axis, keep)


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the first maximum along `dim`."""
    return torch.zeros_like(x).scatter(dim, x.argmax(dim, keepdim=True), 1)


SOFTMAXES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "Softmax": lambda x, d: F.softmax(x, d), "LogSoftmax": lambda x, d: F.log_softmax(x, d), "Hardmax": _hardmax,
}


def _softmax(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Softmax family: over one axis from opset 13, over the flattened trailing axes before it."""
    fn = SOFTMAXES[node.op_type]
    if node.opset >= 13:
        return fn(x, axis_of(node.attr("axis", -1), x.dim()))
    axis = axis_of(node.attr("axis", 1), x.dim())
    return fn(x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:])), 1).reshape(x.shape)


for _name in SOFTMAXES:
    op(_name)(_softmax)


@op("CumSum")
def cumsum(node: Node, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along an axis, optionally exclusive and/or reversed."""
    dim = axis_of(int(scalar(axis)), x.dim())
    reverse = bool(node.attr("reverse", 0))
    if reverse:
        x = x.flip(dim)
    out = torch.cumsum(x, dim, dtype=x.dtype)
    if node.attr("exclusive", 0):
        out = out - x
    return out.flip(dim) if reverse else out
