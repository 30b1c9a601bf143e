"""Sensitivity allocation: per-group removal counts that meet a MAC, parameter or latency target with the
least predicted loss, from each group's measured curve (loss when it alone loses a share of its channels).

Loss is additive over groups in the prediction (a first-order model); the greedy takes, at each step,
the group whose next removal step costs the least predicted loss per unit of the target it buys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..analysis.analyze import Analysis
from ..errors import OnnxPruneError
from ..scoring import GroupScores
from .select import TARGET_TOLERANCE, Selection, kept_count


@dataclass
class Curve:
    """Measured loss of one group at removal counts (count 0 has loss 0)."""

    counts: np.ndarray
    losses: np.ndarray

    def at(self, n: int) -> float:
        """Loss at n removed channels, interpolated linearly between measurements (flat past the last)."""
        return float(np.interp(n, self.counts, self.losses))


def loss_in(metric: str, point: dict, baseline_accuracy: float | None = None) -> float:
    """A point's loss: accuracy drop, top-1 disagreement with the original, or 1 - cosine of the worst output."""
    if metric == "accuracy":
        return float(baseline_accuracy - point["accuracy"])
    return 1.0 - float(point[metric])


def curves_from_sensitivity(report: dict) -> dict[str, Curve]:
    """Curves from a `sensitivity` report: loss = the accuracy drop when it has labels, else top-1
    disagreement (a classifier) or 1 - cosine."""
    metric = report["metric"]
    base = report.get("baseline_accuracy")
    out = {}
    for g in report["groups"]:
        counts, losses = [0], [0.0]
        for p in g["points"]:
            if p["removed"] > counts[-1]:
                loss = loss_in(metric, p, base)
                counts.append(p["removed"])
                losses.append(max(float(loss), losses[-1]))  # removing more never helps, in the prediction
        out[g["id"]] = Curve(np.array(counts), np.array(losses))
    return out


@dataclass
class Measure:
    """What a target is counted in (MACs, parameters, latency), as a fraction of the model's whole: the
    reduction of one group alone at a count, and of all groups' counts together."""

    name: str
    alone: Callable[[str, int], float]
    together: Callable[[dict[str, int]], float]
    lookahead: bool = False  # a curve that may fall then rise (latency): weigh every larger count, not the next


def cost_measure(sel: Selection, scores: dict[str, GroupScores], estimate) -> tuple[Measure, float]:
    """The selection's MAC or parameter target as a Measure counted by the cost estimate, and the target."""
    which, target = _target(sel, "sensitivity")
    alone: dict[tuple[str, int], float] = {}

    def one(gid: str, n: int) -> float:
        if (gid, n) not in alone:
            alone[(gid, n)] = estimate(lowest(scores, {gid: n}))[which] if n else 0.0
        return alone[(gid, n)]

    def together(counts: dict[str, int]) -> float:
        return estimate(lowest(scores, {gid: n for gid, n in counts.items() if n}))[which]

    return Measure("MACs" if which == 0 else "parameters", one, together), target


def allocate(analysis: Analysis, curves: dict[str, Curve], sel: Selection, measure: Measure,
             target: float) -> dict[str, int]:
    """Removal counts per group reaching `target` in `measure`, greedy on predicted loss per unit bought."""
    groups = [g for g in analysis.prunable if g.id in curves]
    legal = {g.id: legal_counts(g.channels, sel, analysis.unit_width(g)) for g in groups}
    counts = {g.id: 0 for g in groups}
    while measure.together(counts) < target:
        best, closing = None, None
        for gid, n in counts.items():
            larger = [m for m in legal[gid] if m > n]
            for nxt in larger if measure.lookahead else larger[:1]:
                gain = measure.alone(gid, nxt) - measure.alone(gid, n)
                if gain <= 0:
                    continue
                cost = curves[gid].at(nxt) - curves[gid].at(n)
                key = (cost / gain, -gain, gid)
                if best is None or key < best[0]:
                    best = (key, gid, nxt)
                if measure.lookahead and measure.together(dict(counts, **{gid: nxt})) >= target and \
                        (closing is None or (cost, gid) < closing[0]):
                    closing = ((cost, gid), gid, nxt)  # the cheapest step that alone reaches the target
        if closing is not None and best is not None and \
                measure.together(dict(counts, **{best[1]: best[2]})) >= target:
            best = closing  # the best step per unit overshoots: the cheapest that reaches is as good and costs less
        if best is None:
            got = measure.together(counts)
            if got < target - TARGET_TOLERANCE:
                raise OnnxPruneError(f"target {target:.0%} of the {measure.name} is impossible under the guards: "
                                     f"at most {got:.1%} can be removed")
            break
        counts[best[1]] = best[2]
    return {gid: n for gid, n in counts.items() if n}


def uniform_counts(analysis: Analysis, ids, sel: Selection, measure: Measure, target: float) -> dict[str, int]:
    """One ratio for every group (the least, by bisection, that reaches the target), under the guards."""
    groups = [g for g in analysis.prunable if g.id in set(ids)]

    def at(r: float) -> dict[str, int]:
        return {g.id: g.channels - kept_count(g.channels, int(g.channels * r), sel, analysis.unit_width(g))
                for g in groups}

    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if measure.together(at(mid)) < target else (lo, mid)
    return {gid: n for gid, n in at(hi).items() if n}


def _target(sel: Selection, how: str) -> tuple[int, float]:
    """(0 for MACs or 1 for parameters, the fraction to remove) of the selection's target."""
    which = 0 if sel.target_macs is not None else 1
    target = sel.target_macs if which == 0 else sel.target_params
    if target is None:
        raise OnnxPruneError(f"--allocate {how} needs --target-macs or --target-params")
    return which, target


def legal_counts(channels: int, sel: Selection, width: int = 1) -> list[int]:
    """Removal counts the guards and rounding allow (units of `width` positions), ascending."""
    return sorted({channels - kept_count(channels, n, sel, width) for n in range(channels + 1)})


def predicted_loss(curves: dict[str, Curve], counts: dict[str, int]) -> float:
    """The sum of the groups' measured losses at their counts (the allocation's own model)."""
    return float(sum(curves[g].at(n) for g, n in counts.items()))


def lowest(scores: dict[str, GroupScores], counts: dict[str, int]) -> dict[str, list[int]]:
    """The `counts[g]` lowest-scored channels of each group (ties by index)."""
    out = {}
    for gid, n in counts.items():
        s = scores[gid].scores
        out[gid] = sorted(int(i) for i in np.lexsort((np.arange(len(s)), s))[:n])
    return out


def allocate_iteratively(analysis: Analysis, ids, sel: Selection, measure: Measure, target: float, losses_of,
                         step_share: float = 0.125, progress=lambda _: None,
                         start: dict[str, int] | None = None) -> tuple[dict[str, int], list]:
    """Removal counts grown one step of one group at a time, each step the one whose measured loss, with
    everything chosen so far removed too, rises least per unit of the target (NetAdapt's loop, on a
    fidelity measure). No additivity is assumed; it costs one measurement per group per step.

    `ids` are the groups taking part; `losses_of([counts, ...])` prunes and measures each (the trials of
    one step are independent: it may measure them in parallel); `start` resumes from earlier counts. Returns the counts and
    each step's (group, count, loss).
    """
    groups = [g for g in analysis.prunable if g.id in set(ids)]
    legal = {g.id: legal_counts(g.channels, sel, analysis.unit_width(g)) for g in groups}
    stride = {g.id: max(1, int(np.ceil(g.channels * step_share))) for g in groups}
    counts = {g.id: (start or {}).get(g.id, 0) for g in groups}
    current, history = (losses_of([counts])[0] if any(counts.values()) else 0.0), []
    reached = measure.together(counts)
    while reached < target:
        trials = []
        for gid, n in counts.items():
            nxt = next((m for m in legal[gid] if m >= n + stride[gid]), None) or \
                next((m for m in legal[gid] if m > n), None)
            if nxt is not None:
                trial = dict(counts, **{gid: nxt})
                gain = measure.together(trial) - reached
                if gain > 0:
                    trials.append((gid, trial, gain))
        best = None
        for (gid, trial, gain), loss in zip(trials, losses_of([t for _, t, _ in trials])):
            key = ((loss - current) / gain, gid)
            if best is None or key < best[0]:
                best = (key, trial, loss, gid)
        if best is None:
            raise OnnxPruneError(f"target {target:.0%} of the {measure.name} is impossible under the guards: at "
                                 f"most {reached:.1%} can be removed")
        _, counts, current, gid = best
        reached = measure.together(counts)
        history.append({"group": gid, "removed": counts[gid], "loss": round(current, 6), "reached": round(reached, 4)})
        progress(f"step {len(history)}: {gid} -> {counts[gid]} removed, loss {current:.4f}, "
                 f"{reached:.1%} of the {measure.name} removed")
    while True:  # the last step may overshoot: give back the single legal step that helps most while it holds
        back = []
        for gid, n in counts.items():
            prev = max((m for m in legal[gid] if m < n), default=None)
            trial = dict(counts, **{gid: prev}) if prev is not None else None
            if trial is not None and measure.together(trial) >= target:
                back.append((gid, trial))
        if not back:
            break
        back = [(loss, gid, trial) for (gid, trial), loss in zip(back, losses_of([t for _, t in back]))]
        current, gid, counts = min(back, key=lambda t: (t[0], t[1]))
        history.append({"group": gid, "removed": counts[gid], "loss": round(current, 6),
                        "reached": round(measure.together(counts), 4), "given_back": True})
        progress(f"given back: {gid} -> {counts[gid]} removed, loss {current:.4f}, "
                 f"{history[-1]['reached']:.1%} of the {measure.name} removed")
    return {gid: n for gid, n in counts.items() if n}, history
