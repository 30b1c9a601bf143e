"""How one op carries the relation a_n = k * a_m + o between a removed channel n and a kept channel m.

Neuron merging needs that relation at every consumer's input. A producer starts it (from its filters);
each op on the way maps it, one entry of this table per op type. Ops missing from the table stop
merging for their group, with the op named in the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import erf

# why a pair (n, m) cannot be merged; 0 = it can
OK, LOW_SIMILARITY, NEGATIVE_SCALE, NO_RULE, APPROXIMATE_OFF, SCALES_DISAGREE, NOT_VISIBLE, DEAD_TARGET, \
    NO_BIAS, GROUPED = range(10)
REASONS = {
    LOW_SIMILARITY: "no kept filter similar enough", NEGATIVE_SCALE: "scale <= 0 through an activation",
    NO_RULE: "an op on the way has no merge rule", APPROXIMATE_OFF: "a non-homogeneous activation on the way "
    "(allow with --merge-approximate)", SCALES_DISAGREE: "the group's producers disagree on the scale",
    NOT_VISIBLE: "a consumer sees the channel but not its match", DEAD_TARGET: "the match is a dead channel",
    NO_BIAS: "a consumer has no bias to take the residual", GROUPED: "a grouped convolution in the group",
}


@dataclass
class Relation:
    """a_n = k * a_m + o for every (removed n, candidate m) pair of a group: arrays [removed, candidates]."""

    k: np.ndarray
    o: np.ndarray


@dataclass
class Context:
    """What an op's relation rule may read: per-channel constants, options, the pairs' status."""

    channel_values: Callable[[int], np.ndarray | None]  # input index -> [removed, candidates, 2] (n, m)
    attrs: dict
    why: np.ndarray  # [removed, candidates] int codes, updated in place
    approximate: bool
    bn_mode: str
    fold_tolerance: float
    inputs_in_group: list[int]
    gate_input: int | None = None  # Mul: the input that is a sigmoid of the other one (SiLU / HardSwish)

    def refuse(self, where: np.ndarray, code: int) -> None:
        self.why[(self.why == OK) & where] = code


def _pass(rel: list[Relation], ctx: Context) -> Relation:
    return rel[0]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid(x, a):
    return np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)


# elementwise activations: exact on constant channels (k = 0) through f
ACTIVATIONS: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "Relu": lambda x, a: np.maximum(x, 0.0),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "Sigmoid": lambda x, a: _sigmoid(x),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda x, a: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Tanh": lambda x, a: np.tanh(x),
    "Elu": lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * np.expm1(np.minimum(x, 0))),
    "Selu": lambda x, a: a.get("gamma", 1.0507009873554805) * np.where(
        x > 0, x, a.get("alpha", 1.6732632423543772) * np.expm1(np.minimum(x, 0))),
    "Softplus": lambda x, a: np.logaddexp(0.0, x),
    "Gelu": lambda x, a: (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))))
    if a.get("approximate", "none") == "tanh" else 0.5 * x * (1 + erf(x / np.sqrt(2))),
    "Clip": lambda x, a: np.clip(x, a.get("min", -np.inf), a.get("max", np.inf)),
}
POSITIVE_HOMOGENEOUS = {"Relu", "LeakyRelu"}  # f(s x) = s f(x) for s > 0


def _activation(op: str) -> Callable[[list[Relation], Context], Relation]:
    f = ACTIVATIONS[op]

    def rule(rel: list[Relation], ctx: Context) -> Relation:
        k, o = rel[0].k, rel[0].o
        const = k == 0
        homogeneous = op in POSITIVE_HOMOGENEOUS
        if homogeneous:
            ctx.refuse(~const & (k < 0), NEGATIVE_SCALE)
        else:
            ctx.refuse(~const & ~np.full(k.shape, ctx.approximate), APPROXIMATE_OFF)
            ctx.refuse(~const & (k < 0), NEGATIVE_SCALE)
        # constants map exactly; otherwise f(k a + o) ~ k f(a): the offset is dropped (exact when o = 0)
        return Relation(k, np.where(const, f(o, ctx.attrs), 0.0))

    return rule


def _prelu(rel: list[Relation], ctx: Context) -> Relation:
    """PRelu: positive-homogeneous per channel; exact when n and m share the slope."""
    k, o = rel[0].k, rel[0].o
    slope = ctx.channel_values(1)
    if slope is None:
        return _refuse_all(rel, ctx)
    const = k == 0
    ctx.refuse(~const & (k < 0), NEGATIVE_SCALE)
    if not ctx.approximate:
        ctx.refuse(~const & ~np.isclose(slope[..., 0], slope[..., 1]), APPROXIMATE_OFF)
    return Relation(k, np.where(const, np.where(o >= 0, o, slope[..., 0] * o), 0.0))


def _refuse_all(rel: list[Relation], ctx: Context) -> Relation:
    ctx.refuse(np.ones_like(rel[0].k, bool), NO_RULE)
    return rel[0]


def _max_like(rel: list[Relation], ctx: Context) -> Relation:
    """Order statistics (MaxPool, ReduceMax): max(k a + o) = k max(a) + o for k > 0."""
    ctx.refuse(rel[0].k < 0, NEGATIVE_SCALE)
    return rel[0]


def _batch_norm(rel: list[Relation], ctx: Context) -> Relation:
    """y = gamma (x - mean) / sigma + beta, per channel; `paper` uses the authors' released factor."""
    k, o = rel[0].k, rel[0].o
    gamma, beta, mean, var = (ctx.channel_values(i) for i in (1, 2, 3, 4))
    eps = ctx.attrs.get("epsilon", 1e-5)
    sigma = np.sqrt(var + eps)
    g = gamma / sigma  # [r, c, 2]
    if ctx.fold_tolerance > 0:
        gamma = np.where(np.abs(g) <= ctx.fold_tolerance * np.abs(g).max(), 0.0, gamma)
    gn, gm = gamma[..., 0], gamma[..., 1]
    ctx.refuse((gm == 0) & (k != 0), DEAD_TARGET)
    with np.errstate(divide="ignore", invalid="ignore"):
        if ctx.bn_mode == "paper":  # the sigma ratio inverted, with variance for standard deviation
            new_k = k * (gn / gm) * ((var[..., 0] + eps) / (var[..., 1] + eps))
        else:
            new_k = k * (gn / gm) * (sigma[..., 1] / sigma[..., 0])
    new_k = np.where(k == 0, 0.0, np.nan_to_num(new_k))
    new_o = beta[..., 0] - new_k * beta[..., 1] + gn * (k * mean[..., 1] + o - mean[..., 0]) / sigma[..., 0]
    return Relation(new_k, new_o)


SCALE_TOLERANCE = 0.05  # relative spread allowed between the scales of coupled producers


def _sum(rel: list[Relation], ctx: Context) -> Relation:
    """Add / Sum of channel tensors (a residual join): their scales must agree, offsets add up."""
    k = np.mean([r.k for r in rel], axis=0)
    for r in rel:
        ctx.refuse(~np.isclose(r.k, k, rtol=SCALE_TOLERANCE, atol=1e-12), SCALES_DISAGREE)
    return Relation(k, np.sum([r.o for r in rel], axis=0))


def _product(rel: list[Relation], ctx: Context) -> Relation:
    """Mul of two channel tensors: x * sigmoid(x) is an activation; another gate (SE) is refused."""
    both_const = (rel[0].k == 0) & (rel[1].k == 0)
    constant = Relation(np.zeros_like(rel[0].k), rel[0].o * rel[1].o)
    if ctx.gate_input is None:
        ctx.refuse(~both_const, NO_RULE)
        return constant
    x = rel[1 - ctx.gate_input]
    if not ctx.approximate:
        ctx.refuse(~both_const, APPROXIMATE_OFF)
    ctx.refuse(~both_const & (x.k < 0), NEGATIVE_SCALE)
    return Relation(np.where(both_const, 0.0, x.k), np.where(both_const, constant.o, 0.0))


def _arithmetic(op: str) -> Callable[[list[Relation], Context], Relation]:
    """Add, Sub, Mul, Div, Sum: of channel tensors, or of one channel tensor and a constant c.

    x + c: K stays, B += c_n - K c_m.  x * c: K *= c_n / c_m, B *= c_n.  x - c and x / c likewise.
    """
    def rule(rel: list[Relation], ctx: Context) -> Relation:
        if len(rel) > 1:
            return _sum(rel, ctx) if op in ("Add", "Sum") else _product(rel, ctx) if op == "Mul" else \
                _refuse_all(rel, ctx)
        index = ctx.inputs_in_group[0]
        c = ctx.channel_values(1 - index) if op != "Sum" and index in (0, 1) else None
        if c is None or (op in ("Sub", "Div") and index != 0):
            return _refuse_all(rel, ctx)
        r = rel[0]
        if op in ("Add", "Sub"):
            c = c if op == "Add" else -c
            return Relation(r.k, r.o + c[..., 0] - r.k * c[..., 1])
        cn, cm = (c[..., 0], c[..., 1]) if op == "Mul" else (1.0 / c[..., 0], 1.0 / c[..., 1])
        ctx.refuse((cm == 0) & (r.k != 0), DEAD_TARGET)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(r.k == 0, 0.0, np.nan_to_num(r.k * cn / cm))
        return Relation(k, r.o * cn)

    return rule


LINEAR = ("Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
          "Slice", "AveragePool", "GlobalAveragePool", "Pad", "Resize", "Upsample", "ReduceMean", "Expand", "Tile")
RULES: dict[str, Callable[[list[Relation], Context], Relation]] = {
    **{op: _pass for op in LINEAR},
    **{op: _activation(op) for op in ACTIVATIONS},
    "PRelu": _prelu, "MaxPool": _max_like, "GlobalMaxPool": _max_like, "ReduceMax": _max_like,
    "BatchNormalization": _batch_norm, **{op: _arithmetic(op) for op in ("Add", "Sub", "Mul", "Div", "Sum")},
}
