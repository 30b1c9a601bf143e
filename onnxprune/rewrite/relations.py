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
OK, LOW_SIMILARITY, NEGATIVE_SCALE, NO_RULE, SPLIT_PATHS, SCALES_DISAGREE, NOT_VISIBLE, DEAD_TARGET, \
    NO_BIAS, GROUPED, REPEATED, BLOCK = range(12)
REASONS = {
    LOW_SIMILARITY: "no kept filter similar enough", NEGATIVE_SCALE: "scale <= 0 through an activation",
    NO_RULE: "an op on the way has no merge rule", SPLIT_PATHS: "the two channels reach the consumer along "
    "different paths (Split ... Concat)", SCALES_DISAGREE: "the group's producers disagree on the scale",
    NOT_VISIBLE: "a consumer sees the channel but not its match", DEAD_TARGET: "the match is a dead channel",
    NO_BIAS: "a consumer has no bias to take the residual", GROUPED: "a grouped convolution in the group",
    REPEATED: "the channel is repeated (Concat) with different per-channel parameters on the copies",
    BLOCK: "the channel is a block of several positions (an attention head, say) with different parameters at "
    "each: merging relates one value per channel",
}

# why a merge or fold is approximate; 0 = exact. Each refuses merges unless --merge-approximate (a
# refusal's code is NOT_EXACT + the reason's code); folds are made and marked.
SIMILARITY, OFFSET, NON_HOMOGENEOUS, PAD_CONSTANT, BORDER, UNEVEN, SCALES, PAPER, FOLD_TOLERANCE, \
    SLOPES = range(1, 11)
APPROXIMATE = {
    SIMILARITY: "the filters are not exact multiples", OFFSET: "a nonzero offset through a positive-homogeneous "
    "activation (Relu, LeakyRelu, PRelu)", NON_HOMOGENEOUS: "a non-homogeneous "
    "activation on the way", PAD_CONSTANT: "a Pad constant at which the relation does not hold",
    BORDER: "zero-padded borders: exact only away from them", UNEVEN: "a ConvTranspose consumer: the "
    "constant reaches its outputs unevenly (its mean is folded)", SCALES: "the producers' scales differ "
    "(within 5%)", PAPER: "the authors' BatchNorm factor (--merge-mode paper)", FOLD_TOLERANCE: "a near-zero "
    "filter or gamma folded (--fold-tolerance)", SLOPES: "PRelu slopes differ",
}
NOT_EXACT = 32
REASONS.update({NOT_EXACT + c: f"not exact: {t} (allow with --merge-approximate)" for c, t in APPROXIMATE.items()})
ZERO = 1e-6  # an offset this small (relative to 1 + |k|) is float noise: exact multiples in float32 leave it


def is_zero(o: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Offsets that are zero up to float32 rounding of exact multiples."""
    return np.abs(o) <= ZERO * (1 + np.abs(k))


@dataclass
class Relation:
    """a_n = k * a_m + o for every (removed n, candidate m) pair of a group: arrays [removed, candidates].

    `carried` marks the pairs whose two channels both travel in this tensor (None: every pair); a Split
    part or a Slice carries only its own channels, and a Concat joins the pairs of its inputs.
    """

    k: np.ndarray
    o: np.ndarray
    carried: np.ndarray | None = None


@dataclass
class Context:
    """What an op's relation rule may read: per-channel constants, options, the pairs' status."""

    channel_values: Callable[[int], np.ndarray | None]  # input index -> [removed, candidates, 2] (n, m)
    attrs: dict
    why: np.ndarray  # [removed, candidates] int codes, updated in place
    approx: np.ndarray  # [removed, candidates] approximation codes, updated in place
    approximate: bool
    bn_mode: str
    fold_tolerance: float
    inputs_in_group: list[int]
    gate_input: int | None = None  # Mul: the input that is a sigmoid of the other one (SiLU / HardSwish)
    carried: np.ndarray | bool = True  # the pairs this op sees: refusals and approximations apply to them alone

    def refuse(self, where: np.ndarray, code: int) -> None:
        self.why[(self.why == OK) & where & self.carried] = code

    def inexact(self, where: np.ndarray, code: int, k: np.ndarray) -> None:
        mark_inexact(self.why, self.approx, where & self.carried, code, k, self.approximate)


def mark_inexact(why: np.ndarray, approx: np.ndarray, where: np.ndarray, code: int, k: np.ndarray,
                 allowed: bool) -> None:
    """Pairs carried only approximately: merges (k != 0) are refused unless approximations are `allowed`;
    folds (k = 0) go on, marked, since dropping the constant changes every output."""
    if not allowed:
        why[(why == OK) & where & (k != 0)] = NOT_EXACT + code
    approx[(approx == 0) & (why == OK) & where] = code


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
        if None in (ctx.attrs.get("min", 0), ctx.attrs.get("max", 0)):  # Clip bounds computed at run time
            return _refuse_all(rel, ctx)
        k, o = rel[0].k, rel[0].o
        const = k == 0
        ctx.refuse(~const & (k < 0), NEGATIVE_SCALE)
        if op in POSITIVE_HOMOGENEOUS:  # f(k a + o) = k f(a) for k > 0 only when o = 0
            ctx.inexact(~const & ~is_zero(o, k), OFFSET, k)
        else:  # f(a) = f(a): exact for k = 1, o = 0 alone
            ctx.inexact(~const & ~(np.isclose(k, 1.0, rtol=ZERO, atol=0) & is_zero(o, k)), NON_HOMOGENEOUS, k)
        return Relation(k, np.where(const, f(o, ctx.attrs), 0.0))

    return rule


def _prelu(rel: list[Relation], ctx: Context) -> Relation:
    """PRelu: positive-homogeneous per channel; exact when n and m share the slope and o = 0."""
    k, o = rel[0].k, rel[0].o
    slope = ctx.channel_values(1)
    if slope is None:
        return _refuse_all(rel, ctx)
    const = k == 0
    ctx.refuse(~const & (k < 0), NEGATIVE_SCALE)
    ctx.inexact(~const & ~np.isclose(slope[..., 0], slope[..., 1]), SLOPES, k)
    ctx.inexact(~const & ~is_zero(o, k), OFFSET, k)
    return Relation(k, np.where(const, np.where(o >= 0, o, slope[..., 0] * o), 0.0))


def _refuse_all(rel: list[Relation], ctx: Context) -> Relation:
    ctx.refuse(np.ones_like(rel[0].k, bool), NO_RULE)
    return rel[0]


def _max_like(rel: list[Relation], ctx: Context) -> Relation:
    """Order statistics (MaxPool, ReduceMax): max(k a + o) = k max(a) + o for k > 0 (pads are -inf)."""
    ctx.refuse(rel[0].k < 0, NEGATIVE_SCALE)
    return rel[0]


def _pad(rel: list[Relation], ctx: Context) -> Relation:
    """Edge, reflect and wrap pads copy values; a constant c keeps a_n = k a_m + o only where c = k c + o."""
    r = rel[0]
    if ctx.attrs.get("mode", "constant") != "constant":
        return r
    c = ctx.channel_values(2)
    if c is None and ctx.attrs.get("value", 0.0) is None:  # a computed pad value
        return _refuse_all(rel, ctx)
    c = np.full(r.k.shape, float(ctx.attrs.get("value", 0.0))) if c is None else c[..., 0]
    with np.errstate(over="ignore", invalid="ignore"):
        holds = np.isclose(c, r.k * c + r.o, rtol=ZERO, atol=ZERO)
    ctx.inexact(~holds, BORDER if not np.any(c) else PAD_CONSTANT, r.k)
    return r


def _average_pool(rel: list[Relation], ctx: Context) -> Relation:
    """An average over the window is affine; zero pads counted in it meet the offset like a zero Pad."""
    r = rel[0]
    pads = ctx.attrs.get("pads")
    padded = bool(pads and any(pads)) or ctx.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
    if padded and ctx.attrs.get("count_include_pad", 0):
        ctx.inexact(~is_zero(r.o, r.k), BORDER, r.k)
    return r


def _batch_norm(rel: list[Relation], ctx: Context) -> Relation:
    """y = gamma (x - mean) / sigma + beta, per channel; `paper` uses the authors' released factor."""
    k, o = rel[0].k, rel[0].o
    gamma, beta, mean, var = (ctx.channel_values(i) for i in (1, 2, 3, 4))
    eps = ctx.attrs.get("epsilon", 1e-5)
    sigma = np.sqrt(var + eps)
    g = gamma / sigma  # [r, c, 2]
    if ctx.fold_tolerance > 0:
        snapped = (np.abs(g) <= ctx.fold_tolerance * np.abs(g).max()) & (gamma != 0)
        ctx.inexact(snapped[..., 0], FOLD_TOLERANCE, np.zeros_like(k))
        gamma = np.where(snapped, 0.0, gamma)
    gn, gm = gamma[..., 0], gamma[..., 1]
    ctx.refuse((gm == 0) & (k != 0), DEAD_TARGET)
    with np.errstate(divide="ignore", invalid="ignore"):
        if ctx.bn_mode == "paper":  # the sigma ratio inverted, with variance for standard deviation
            new_k = k * (gn / gm) * ((var[..., 0] + eps) / (var[..., 1] + eps))
            ctx.inexact((k != 0) & ~np.isclose(var[..., 0], var[..., 1]), PAPER, k)
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
        ctx.inexact(~np.isclose(r.k, k, rtol=ZERO, atol=0), SCALES, k)
    return Relation(k, np.sum([r.o for r in rel], axis=0))


def _product(rel: list[Relation], ctx: Context) -> Relation:
    """Mul of two channel tensors: x * sigmoid(x) is an activation; another gate (SE) is refused."""
    both_const = (rel[0].k == 0) & (rel[1].k == 0)
    constant = Relation(np.zeros_like(rel[0].k), rel[0].o * rel[1].o)
    if ctx.gate_input is None:
        ctx.refuse(~both_const, NO_RULE)
        return constant
    x = rel[1 - ctx.gate_input]
    ctx.refuse(~both_const & (x.k < 0), NEGATIVE_SCALE)
    identical = np.isclose(x.k, 1.0, rtol=ZERO, atol=0) & is_zero(x.o, x.k)  # x sigmoid(x) = x sigmoid(x)
    ctx.inexact(~both_const & ~identical, NON_HOMOGENEOUS, x.k)
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
        with np.errstate(divide="ignore"):  # dividing by a zero constant: refused below (dead target)
            cn, cm = (c[..., 0], c[..., 1]) if op == "Mul" else (1.0 / c[..., 0], 1.0 / c[..., 1])
        ctx.refuse((cm == 0) & (r.k != 0), DEAD_TARGET)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            k = np.where(r.k == 0, 0.0, np.nan_to_num(r.k * cn / cm))
        return Relation(k, r.o * cn)

    return rule


LINEAR = ("Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
          "Slice", "GlobalAveragePool", "Resize", "Upsample", "ReduceMean", "Expand", "Tile")
RULES: dict[str, Callable[[list[Relation], Context], Relation]] = {
    **{op: _pass for op in LINEAR},
    **{op: _activation(op) for op in ACTIVATIONS},
    "PRelu": _prelu, "Pad": _pad, "AveragePool": _average_pool, "MaxPool": _max_like, "GlobalMaxPool": _max_like, "ReduceMax": _max_like,
    "BatchNormalization": _batch_norm, **{op: _arithmetic(op) for op in ("Add", "Sub", "Mul", "Div", "Sum")},
}
