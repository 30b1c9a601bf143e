"""Neuron merging (Kim et al., NeurIPS 2020): fold each removed channel into a kept one's consumers.

For a removed channel n the producers' filters (bias appended) are matched to every kept channel m;
the relation a_n = K a_m + B is carried op by op to each consumer (rewrite/relations.py), and a
usable match adds K times n's input slice to m's and B times n's slice sum to the bias. A channel
whose activation is a constant (K = 0) is folded into the consumers' biases alone. Every match is
computed from the original weights, before any merge changes them (the authors' convention).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.analyze import Analysis
from ..analysis.builder import CONSUMER, PRODUCER, Member
from ..analysis.groups import Group
from ..errors import OnnxPruneError
from ..loading import Prepared
from ..scoring.slices import channel_matrix, zeroed
from ..graph.patterns import matmul_bias
from .relations import (APPROXIMATE, BLOCK, BORDER, GROUPED, LOW_SIMILARITY, NO_BIAS, NO_RULE, NOT_VISIBLE, OK, PAPER,
                        REASONS, REPEATED, RULES, SIMILARITY, SPLIT_PATHS, UNEVEN, Context, Relation, is_zero,
                        mark_inexact)

EXACT_COSINE = 1 - 1e-9  # filters that are exact multiples in float32 have a cosine within 1e-14 of 1
NOT_A_MULTIPLE = "no kept filter is an exact multiple (approximate merges need --merge-approximate)"

MODES = ("merge", "fold", "reconstruct", "mean", "none")
BN_MODES = ("exact", "paper")
ORDERS = ("original", "sequential")


@dataclass(frozen=True)
class MergeOptions:
    """How removed channels are compensated; the field names are the API's keywords (checked on creation)."""

    compensate: str = "merge"
    merge_threshold: float = 0.3  # minimum cosine similarity of [filter | bias]; 0.3 beat 0.45 in docs/neuron_merging.md
    merge_lambda: float = 0.85  # ranking weight of the cosine distance against the normalised bias residual
    merge_mode: str = "exact"  # BatchNorm factor: exact, or the authors' released code's
    merge_approximate: bool = False  # also merges that are not exact (similar filters, offsets through Relu...)
    fold_tolerance: float = 0.0  # |gamma|/sigma (or a filter norm) this far below the layer's max counts as 0
    merge_order: str = "original"  # match on original rows (the authors' code) or on rows after earlier merges

    def __post_init__(self) -> None:
        for value, name, allowed in ((self.compensate, "compensation", MODES), (self.merge_order, "merge order", ORDERS),
                                     (self.merge_mode, "merge mode", BN_MODES)):
            if value not in allowed:
                raise OnnxPruneError(f"unknown {name} '{value}' (choose from {', '.join(allowed)})")
        if not (0 <= self.merge_threshold <= 1 and 0 <= self.merge_lambda <= 1 and 0 <= self.fold_tolerance < 1):
            raise OnnxPruneError("--merge-threshold and --merge-lambda must lie in [0, 1], --fold-tolerance in [0, 1)")

    @classmethod
    def from_keywords(cls, **options) -> "MergeOptions":
        """Options from keywords (a plan's record, API keywords); an unknown name is a one-line error."""
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise OnnxPruneError(f"unknown compensation option '{unknown[0]}'")
        return cls(**options)


@dataclass
class Update:
    """Add `scale` times the source positions of a consumer weight to the target positions; bias += delta."""

    node: gs.Node
    member: Member
    source: list[np.ndarray]  # per pair: positions along the member's axis (empty: not seen here)
    target: list[np.ndarray]
    scale: np.ndarray  # [pairs]
    residual: np.ndarray  # [pairs] constant offset taken into the bias (0 in paper mode)


@dataclass
class GroupOutcome:
    """Per group: what happened to each removed channel, and whether its compensation is exact."""

    merged: int = 0
    folded: int = 0
    pruned: int = 0
    reasons: Counter = field(default_factory=Counter)
    blocked_by: list[str] = field(default_factory=list)  # ops on the way with no merge rule
    merged_into: dict[int, int] = field(default_factory=dict)  # removed channel -> kept channel
    channels: dict[int, dict] = field(default_factory=dict)  # compensated channel -> into, exact, because

    @property
    def exact(self) -> int:
        return sum(c["exact"] for c in self.channels.values())

    @property
    def approximate(self) -> int:
        return len(self.channels) - self.exact

    def to_json(self) -> dict:
        out = {"merged": self.merged, "folded": self.folded, "pruned_only": self.pruned}
        if self.channels:
            out.update(exact=self.exact, approximate=self.approximate,
                       channels={str(n): c for n, c in sorted(self.channels.items())})
        if self.merged_into:
            out["merged_into"] = {str(n): m for n, m in sorted(self.merged_into.items())}
        if self.reasons:
            out["pruned_because"] = dict(self.reasons.most_common())
        if self.blocked_by:
            out["no_merge_rule"] = self.blocked_by
        return out


@dataclass
class Compensation:
    """The weight updates for all groups, computed before any is applied."""

    options: MergeOptions
    updates: list[Update] = field(default_factory=list)
    outcomes: dict[str, GroupOutcome] = field(default_factory=dict)
    applied: int = 0  # updates already applied to the graph (sequential order)
    new_bias: dict[int, np.ndarray] = field(default_factory=dict)  # for consumers that have no bias
    summary: dict = field(default_factory=dict)  # totals of a reconstruction (calibration, memory)
    requantized: dict | None = None  # QDQ weights put back as integers by the rewrite (graph.quantized)


def plan_compensation(prep: Prepared, analysis: Analysis, removed: dict[str, list[int]],
                      options: MergeOptions) -> Compensation:
    """Match every removed channel of every pruned group.

    In `original` order nothing is modified here. In `sequential` order the groups are taken in graph
    order, each group's merges are applied before the next group is matched, and producer rows are
    matched without the input columns that are being removed.
    """
    comp = Compensation(options)
    if options.compensate == "none":
        return comp
    by_name = {prep.names[id(n)]: n for n in prep.graph.nodes}
    order = {prep.names[id(n)]: i for i, n in enumerate(prep.graph.nodes)}
    gone = analysis.removed_classes(removed) if options.merge_order == "sequential" else None
    first = {gid: min(order[m.node] for m in analysis.group(gid).members) for gid in removed}
    for gid in sorted(removed, key=first.__getitem__):
        if removed[gid]:
            g = analysis.group(gid)
            comp.outcomes[gid] = _group(prep, analysis, g, np.asarray(sorted(removed[gid])), options, by_name, order,
                                        comp.updates, gone)
            if gone is not None:
                apply_weight_updates(comp)
    return comp


class _Pairs:
    """Per-channel parameter lookups for (removed, candidate) pairs of one group."""

    def __init__(self, prep: Prepared, analysis: Analysis, g: Group, removed: np.ndarray, cand: np.ndarray,
                 gone: np.ndarray | None = None):
        self.prep, self.analysis, self.g, self.removed, self.cand = prep, analysis, g, removed, cand
        self.tensors = prep.graph.tensors()
        self.params = {(m.node, m.input_index): m for m in g.members if m.input_index is not None}
        self.gone = gone
        self.why = np.zeros((len(removed), len(cand)), np.int8)  # the group's refusal codes per pair

    def per_channel(self, member: Member) -> np.ndarray:
        """A parameter member as [channels, features] (removed input columns zeroed in sequential order)."""
        values = self.tensors[member.tensor].values
        if self.gone is not None and member.kind == "weight":
            values = self._without_removed_inputs(member, values)
        return channel_matrix(self.analysis, values, member, self.g)

    def _without_removed_inputs(self, member: Member, values: np.ndarray) -> np.ndarray:
        res = self.analysis.resolution
        for other in self.analysis.members:
            if other.tensor == member.tensor and other.role == CONSUMER and other.axis != member.axis:
                drop = np.nonzero(self.gone[res.cls[other.elements]])[0]
                if len(drop):
                    values = zeroed(values, other.axis, drop)
        return values

    def carried(self, member: Member) -> np.ndarray:
        """[removed, candidates]: both channels of the pair lie in the member's tensor (the constant
        column: the removed channel does)."""
        present = np.zeros(self.g.channels, bool)
        present[self.analysis.positions(member, self.g)[1]] = True
        mask = present[self.removed][:, None] & present[self.cand][None, :]
        mask[:, -1] = present[self.removed]
        return mask

    def _refuse_mixed(self, mixed: np.ndarray, member: Member) -> None:
        """A channel whose positions meet different parameters has no one relation: refuse its pairs, saying
        whether its positions are copies (a Concat) or one block (a head's head_dim positions)."""
        if mixed.any():
            block = self._contiguous(member)
            for code, which in ((BLOCK, mixed & block), (REPEATED, mixed & ~block)):
                bad = which[self.removed][:, None] | which[self.cand][None, :]
                bad[:, -1] = which[self.removed]
                self.why[(self.why == OK) & bad] = code

    def _contiguous(self, member: Member) -> np.ndarray:
        """Per channel: its positions on the member's axis form one unbroken run."""
        pos, idx = self.analysis.channel_positions(member, self.g)
        lo = np.full(self.g.channels, np.iinfo(np.int64).max)
        hi = np.full(self.g.channels, -1)
        count = np.zeros(self.g.channels, np.int64)
        np.minimum.at(lo, idx, pos)
        np.maximum.at(hi, idx, pos)
        np.add.at(count, idx, 1)
        return (count > 0) & (hi - lo + 1 == count)

    def pair_values(self, node_name: str, node: gs.Node, index: int) -> np.ndarray | None:
        """[removed, candidates, 2]: the input's value for channel n and for channel m."""
        if index >= len(node.inputs) or not isinstance(node.inputs[index], gs.Constant):
            return None
        member = self.params.get((node_name, index))
        if member is not None:
            per = self.per_channel(member)
            v = per.mean(axis=1)
            self._refuse_mixed(~np.all(per == per[:, :1], axis=1), member)
        else:
            values = np.asarray(node.inputs[index].values, np.float64)
            if values.size != 1:
                return None
            v = np.full(self.g.channels, float(values.reshape(-1)[0]))
        n, m = np.broadcast_arrays(v[self.removed][:, None], v[self.cand][None, :])
        return np.stack([n, m], axis=-1)


def _group(prep, analysis, g, removed, options, by_name, order, updates, gone) -> GroupOutcome:
    """Relations along the group, the choice per removed channel, and the consumer updates."""
    kept = np.setdiff1d(np.arange(g.channels), removed)
    cand = np.append(kept, kept[0])  # the last column stands for "n is a constant" (its m is irrelevant)
    pairs = _Pairs(prep, analysis, g, removed, cand, gone)
    why = pairs.why
    approx = np.zeros_like(why)  # why a pair's compensation would be approximate (0: exact)
    members: dict[str, list[Member]] = defaultdict(list)
    for m in g.members:
        members[m.node].append(m)
    rel: dict[str, Relation] = {}  # per tensor on the way; dropped once its last reader is done
    readers = Counter(t.name for name in members for t in by_name[name].inputs)
    sims: list[np.ndarray] = []
    consumers: list[tuple[gs.Node, Member]] = []
    finals: list[Relation] = []
    outcome = GroupOutcome()
    for name in sorted(members, key=order.__getitem__):
        node, roles = by_name[name], {m.role for m in members[name]}
        if node.op in ("Conv", "ConvTranspose") and int(node.attrs.get("group", 1)) > 1:
            why[why == OK] = GROUPED
        reads = next((m for m in members[name] if m.role == CONSUMER and m.kind == "weight"), None)
        if reads is not None:  # a consumer (a producer too, when its outputs join the group it reads)
            consumers.append((node, reads))
            finals.append(_consumer_relation(node, reads, rel, pairs, why, approx, options))
        if PRODUCER in roles:
            sim, relation, constant = _producer(pairs, members[name], options)
            sims.append(sim)
            why[(why == OK) & ~constant[:, None] & (np.arange(len(cand)) == len(cand) - 1)] = LOW_SIMILARITY
            weight = _producer_weight(members[name])
            for t in node.outputs[:1]:
                rel[t.name] = Relation(relation.k, relation.o, pairs.carried(weight))
        elif reads is None:
            _pass_through(node, name, members[name], rel, pairs, why, approx, options, outcome)
        for t in node.inputs:
            readers[t.name] -= 1
            if readers[t.name] == 0:
                rel.pop(t.name, None)
    sim = np.min(sims, axis=0) if sims else np.zeros(why.shape)
    if options.merge_mode == "paper":  # the authors' code takes no residual into the bias
        for f in finals:
            mark_inexact(why, approx, ~is_zero(f.o, f.k), PAPER, f.k, options.merge_approximate)
    fold_ok = np.all([f.k == 0 for f in finals], axis=0) & (why == OK)
    # without --merge-approximate only exact multiples merge; with it, anything above the threshold
    threshold = options.merge_threshold if options.merge_approximate else EXACT_COSINE
    merge_ok = (why == OK) & (sim >= threshold) & ~fold_ok
    merge_ok[:, -1] = False
    if options.compensate == "fold":
        merge_ok[:] = False
    residual = np.mean([np.abs(f.o) for f in finals], axis=0) if finals else np.zeros(why.shape)
    scale = max(float(residual[merge_ok].max()), 1e-12) if merge_ok.any() else 1.0
    cost = np.where(merge_ok, options.merge_lambda * (1 - sim) + (1 - options.merge_lambda) * residual / scale, np.inf)
    choice = np.full(len(removed), -1)
    for i in range(len(removed)):
        if fold_ok[i].any():
            choice[i] = int(np.nonzero(fold_ok[i])[0][-1])  # the constant column when it qualifies
            outcome.folded += 1
        elif np.isfinite(cost[i]).any():
            choice[i] = int(np.argmin(cost[i]))
            outcome.merged += 1
            outcome.merged_into[int(removed[i])] = int(cand[choice[i]])
        else:
            outcome.pruned += 1
            best = int(np.argmax(np.where(np.arange(len(cand)) < len(cand) - 1, sim[i], -1)))
            code = int(why[i, best]) or LOW_SIMILARITY
            text = REASONS[code] if code != LOW_SIMILARITY or options.merge_approximate else NOT_A_MULTIPLE
            if code == NO_RULE and outcome.blocked_by:
                text = f"no merge rule for {', '.join(outcome.blocked_by)}"
            outcome.reasons[text] += 1
            continue
        outcome.channels[int(removed[i])] = _record(fold_ok[i, choice[i]], int(cand[choice[i]]),
                                                    int(approx[i, choice[i]]), float(sim[i, choice[i]]))
    chosen = choice >= 0
    if chosen.any() and finals:
        rows = np.nonzero(chosen)[0]
        cols = choice[rows]
        for (node, member), f in zip(consumers, finals):
            k = f.k[rows, cols]
            o = f.o[rows, cols] if options.merge_mode == "exact" else np.zeros(len(rows))
            src, dst = _positions(analysis, member, g, removed[rows], cand[cols])
            updates.append(Update(node, member, src, dst, np.where(fold_ok[rows, cols], 0.0, k), o))
    return outcome


def _record(folded: bool, into: int, approx: int, sim: float) -> dict:
    """One compensated channel for the report: where it went and whether that is exact, and why not."""
    if not folded and not approx and sim < EXACT_COSINE:
        approx_text = f"{APPROXIMATE[SIMILARITY]} (cosine {sim:.4f})"
    else:
        approx_text = APPROXIMATE.get(approx)
    record = {"into": None if folded else into, "exact": approx_text is None}
    if approx_text:
        record["because"] = approx_text
    return record


def _producer_weight(members: list[Member]) -> Member:
    """The weight member whose rows are the node's output channels (a grouped conv, whose units couple
    inputs to outputs, has only its input side; merging refuses it as grouped anyway)."""
    return next((m for m in members if m.role == PRODUCER and m.kind == "weight"), None) or \
        next(m for m in members if m.kind == "weight")


def _producer(pairs: _Pairs, members: list[Member], options: MergeOptions):
    """(similarity, relation, constant): cosine of [filter | bias] rows, scale s and residual b_n - s b_m.

    `constant` marks removed channels whose filter is zero: their output is the bias alone.
    """
    weight = _producer_weight(members)
    w = pairs.per_channel(weight)
    bias_m = next((m for m in members if m.kind == "bias"), None)
    b = pairs.per_channel(bias_m).mean(axis=1) if bias_m is not None else np.zeros(len(w))
    wn2 = np.einsum("ij,ij->i", w, w)
    norm = np.sqrt(wn2 + b * b)  # of [w | b], without building it
    r, c = pairs.removed, pairs.cand
    cos = (w[r] @ w[c].T + np.outer(b[r], b[c])) / np.maximum(np.outer(norm[r], norm[c]), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.nan_to_num(np.sign(cos) * norm[r][:, None] / norm[c][None, :])
    k, o = s, b[r][:, None] - s * b[c][None, :]
    wn = np.sqrt(wn2)
    zero = wn[r] <= options.fold_tolerance * wn.max()
    k[:, -1], o[:, -1] = 0.0, b[r]
    sim = np.abs(cos)
    sim[:, -1] = np.where(zero, 1.0, 0.0)
    return sim, Relation(k, o), zero


def _pass_through(node, name, node_members, rel, pairs: _Pairs, why, approx, options, outcome) -> None:
    """Map the relation through one op; refuse pairs the op cannot carry."""
    ins = [i for i, t in enumerate(node.inputs) if t.name in rel]
    rule = RULES.get(node.op)
    carried = _both([rel[node.inputs[i].name].carried for i in ins])
    if rule is None or not ins:
        why[why == OK] = NO_RULE
        outcome.blocked_by.append(f"{node.op} ({name})")
        out = rel[node.inputs[ins[0]].name] if ins else Relation(np.zeros(why.shape), np.zeros(why.shape))
    elif node.op == "Concat" and len(ins) > 1:
        out = _concat([rel[node.inputs[i].name] for i in ins], why)
        carried = out.carried
    else:
        ctx = Context(lambda i: pairs.pair_values(name, node, i), _constant_attrs(node), why, approx,
                      options.merge_approximate, options.merge_mode, options.fold_tolerance, ins,
                      _gate_input(node, ins), True if carried is None else carried)
        out = rule([rel[node.inputs[i].name] for i in ins], ctx)
    for t in node.outputs:
        member = next((m for m in node_members if m.tensor == t.name and m.input_index is None), None)
        rel[t.name] = Relation(out.k, out.o, _both([carried, pairs.carried(member) if member else None]))


def _constant_attrs(node: gs.Node) -> dict:
    """The node's attributes, with Clip's bounds and Pad's value read from constant inputs (None if computed)."""
    attrs = dict(node.attrs)
    named = {"Clip": ((1, "min"), (2, "max")), "Pad": ((2, "value"),)}.get(node.op, ())
    for i, key in named:
        if i < len(node.inputs) and node.inputs[i].name:
            t = node.inputs[i]
            attrs[key] = float(np.asarray(t.values).reshape(-1)[0]) if isinstance(t, gs.Constant) else None
    return attrs


def _both(masks: list[np.ndarray | None]) -> np.ndarray | None:
    """Pairs carried by every one of these tensors (None: no restriction)."""
    masks = [m for m in masks if m is not None]
    return np.logical_and.reduce(masks) if masks else None


def _concat(rels: list[Relation], why: np.ndarray) -> Relation:
    """Concat of several parts of the group: each pair takes the relation of the input carrying it.

    A pair carried by two inputs along different paths (Concat(x, Relu(x))) has no one relation.
    """
    k, o = np.zeros(why.shape), np.zeros(why.shape)
    seen, conflict = np.zeros(why.shape, bool), np.zeros(why.shape, bool)
    for r in rels:
        c = np.ones(why.shape, bool) if r.carried is None else r.carried
        conflict |= seen & c & ~(np.isclose(k, r.k) & np.isclose(o, r.o))
        k, o = np.where(c & ~seen, r.k, k), np.where(c & ~seen, r.o, o)
        seen |= c
    why[(why == OK) & conflict] = SPLIT_PATHS
    return Relation(k, o, seen)


def _gate_input(node: gs.Node, ins: list[int]) -> int | None:
    """For Mul(x, Sigmoid(x)) or Mul(x, HardSigmoid(x)): the index of the gate input."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return None
    for i in (0, 1):
        src = node.inputs[i].inputs[0] if node.inputs[i].inputs else None
        if src is not None and src.op in ("Sigmoid", "HardSigmoid") and src.inputs[0] is node.inputs[1 - i]:
            return i
    return None


def _consumer_relation(node: gs.Node, member: Member, rel, pairs: _Pairs, why, approx, options) -> Relation:
    """The relation at a consumer's input; refuse pairs it cannot take (visibility, paths, bias, borders)."""
    data = node.inputs[0].name
    if data not in rel:
        why[why == OK] = NO_RULE
        return Relation(np.zeros(why.shape), np.zeros(why.shape))
    f = rel[data]
    counts = np.bincount(pairs.analysis.positions(member, pairs.g)[1], minlength=pairs.g.channels)
    cn, cm = counts[pairs.removed][:, None], counts[pairs.cand][None, :]
    if f.carried is not None:
        why[(why == OK) & ~f.carried & (cn > 0)] = SPLIT_PATHS
    hidden = (cn > 0) & (cn != cm)
    hidden[:, -1] = False
    why[(why == OK) & hidden] = NOT_VISIBLE
    offset = ~is_zero(f.o, f.k)
    if node.op in ("MatMul", "Gemm") and not takes_bias(node):
        why[(why == OK) & offset] = NO_BIAS
    elif node.op == "ConvTranspose":  # each output receives only some taps of the offset
        mark_inexact(why, approx, offset, UNEVEN, f.k, options.merge_approximate)
    elif node.op == "Conv" and zero_padded(node):  # padded zeros meet the offset at the borders
        mark_inexact(why, approx, offset, BORDER, f.k, options.merge_approximate)
    return f


def _positions(analysis: Analysis, member: Member, g: Group, src_ch: np.ndarray, dst_ch: np.ndarray):
    """Positions of each source and target channel on the consumer's axis, in position order."""
    pos, idx = analysis.channel_positions(member, g)
    per = {int(c): pos[idx == c] for c in np.unique(np.concatenate([src_ch, dst_ch]))}
    return [per[int(c)] for c in src_ch], [per[int(c)] for c in dst_ch]


def zero_padded(node: gs.Node) -> bool:
    """A conv that pads its input (explicit pads or SAME auto-padding): offsets meet zeros at the borders."""
    pads = node.attrs.get("pads")
    return bool(pads and any(pads)) or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")


def apply_weight_updates(comp: Compensation) -> None:
    """Apply the updates not applied yet to the consumers' weights and biases (bias-less ones: comp.new_bias)."""
    for u in comp.updates[comp.applied:]:
        w = own_constant(u.node, 1)
        values = np.array(w.values)  # a writable copy in the weight's own type
        axis = u.member.axis
        out_axis = _output_axis(u.node, values.ndim, axis)
        others = tuple(a for a in range(values.ndim) if a != out_axis)
        delta_bias = np.zeros(values.shape[out_axis])
        target = [slice(None)] * values.ndim
        for src, dst, scale, residual in zip(u.source, u.target, u.scale, u.residual):
            if not len(src):
                continue
            block = np.take(values, src, axis=axis)
            if scale != 0:
                target[axis] = dst
                values[tuple(target)] += (scale * block).astype(values.dtype)
            if residual != 0:
                delta_bias += residual * _offset_gain(u.node) * block.sum(axis=others, dtype=np.float64)
        w.values = values
        if delta_bias.any():
            add_bias(u.node, delta_bias, comp.new_bias)
    comp.applied = len(comp.updates)


def own_constant(node: gs.Node, index: int) -> gs.Constant:
    """The node's constant input, copied first if other nodes read it too (each gets its own update)."""
    t = node.inputs[index]
    if any(user is not node for user in t.outputs):
        t = gs.Constant(f"{t.name}_for_{node.outputs[0].name}", np.array(t.values))  # output names are unique
        node.inputs[index] = t
    return t


def _offset_gain(node: gs.Node) -> float:
    """How much of a constant input's kernel sum reaches an output on average: 1 / prod(strides) under a
    ConvTranspose (each output receives only its phase's taps), 1 elsewhere."""
    if node.op == "ConvTranspose":
        return 1.0 / float(np.prod(node.attrs.get("strides", [1])))
    return 1.0


def _output_axis(node: gs.Node, ndim: int, input_axis: int) -> int:
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        return 1
    return ndim - 1 if input_axis == ndim - 2 else ndim - 2  # Gemm / MatMul: the other matrix axis


def takes_bias(node: gs.Node) -> bool:
    """Whether a per-output constant can be added to the node (a MatMul only through its bias Add)."""
    if node.op == "MatMul":
        return matmul_bias(node) is not None
    return not (node.op == "Gemm" and float(node.attrs.get("beta", 1.0)) == 0)


def add_bias(node: gs.Node, delta: np.ndarray, new_bias: dict[int, np.ndarray]) -> None:
    """Add to the node's bias; a node without a per-channel one gets it after slicing (attach_biases)."""
    if node.op == "Gemm":
        delta = delta * float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0))
    if node.op == "MatMul" and (found := matmul_bias(node)) is not None:
        add, i = found
        bias = own_constant(add, i)
        bias.values = (np.asarray(bias.values, np.float64) + delta.reshape(bias.values.shape)).astype(bias.values.dtype)
        return
    if node.op == "MatMul":
        new_bias[id(node)] = new_bias[id(node)] + delta if id(node) in new_bias else np.asarray(delta, np.float64)
        return
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if isinstance(bias, gs.Constant):
        bias = own_constant(node, 2)
    if isinstance(bias, gs.Constant) and bias.values.size == delta.size:
        bias.values = (np.asarray(bias.values, np.float64) + delta.reshape(bias.values.shape)).astype(bias.values.dtype)
    elif bias is None or not bias.name or (isinstance(bias, gs.Constant) and bias.values.size == 1):
        base = float(np.asarray(bias.values).reshape(-1)[0]) if isinstance(bias, gs.Constant) else 0.0
        new_bias[id(node)] = new_bias[id(node)] + delta if id(node) in new_bias else base + delta
    else:
        raise OnnxPruneError(f"cannot fold a constant channel into the computed bias of a {node.op} node")
