"""Sensitivity allocation: per-group removal counts that meet a MAC or parameter target with the least
predicted loss, from each group's measured curve (loss when it alone loses a share of its channels).

Loss is additive over groups in the prediction (a first-order model); the greedy takes, at each step,
the group whose next removal step costs the least predicted loss per unit of the target it buys.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def curves_from_sensitivity(report: dict) -> dict[str, Curve]:
    """Curves from a `sensitivity` report: loss = 1 - cosine, or the accuracy drop when it has labels."""
    metric = report["metric"]
    base = report.get("baseline_accuracy")
    out = {}
    for g in report["groups"]:
        counts, losses = [0], [0.0]
        for p in g["points"]:
            if p["removed"] > counts[-1]:
                loss = (base - p["accuracy"]) if metric == "accuracy" else 1.0 - p["cosine"]
                counts.append(p["removed"])
                losses.append(max(float(loss), losses[-1]))  # removing more never helps, in the prediction
        out[g["id"]] = Curve(np.array(counts), np.array(losses))
    return out


def allocate(analysis: Analysis, curves: dict[str, Curve], scores: dict[str, GroupScores], sel: Selection,
             estimate) -> dict[str, int]:
    """Removal counts per group meeting `sel`'s target, greedy on predicted loss per unit of reduction."""
    which, target = _target(sel, "sensitivity")
    groups = [g for g in analysis.prunable if g.id in curves]
    legal = {g.id: _legal_counts(g.channels, sel) for g in groups}
    counts = {g.id: 0 for g in groups}
    alone = {}  # (group, count) -> its reduction alone, cached

    def reduction(gid: str, n: int) -> float:
        if (gid, n) not in alone:
            alone[(gid, n)] = estimate(lowest(scores, {gid: n}))[which] if n else 0.0
        return alone[(gid, n)]

    def total(c: dict[str, int]) -> float:
        return estimate(lowest(scores, {gid: n for gid, n in c.items() if n}))[which]

    while total(counts) < target:
        best = None
        for gid, n in counts.items():
            nxt = next((m for m in legal[gid] if m > n), None)
            if nxt is None:
                continue
            gain = reduction(gid, nxt) - reduction(gid, n)
            cost = curves[gid].at(nxt) - curves[gid].at(n)
            if gain <= 0:
                continue
            key = (cost / gain, -gain, gid)
            if best is None or key < best[0]:
                best = (key, gid, nxt)
        if best is None:
            got = total(counts)
            if got < target - TARGET_TOLERANCE:
                raise OnnxPruneError(f"target {target:.0%} is impossible under the guards: at most {got:.1%} "
                                     "can be removed")
            break
        counts[best[1]] = best[2]
    return {gid: n for gid, n in counts.items() if n}


def _target(sel: Selection, how: str) -> tuple[int, float]:
    """(0 for MACs or 1 for parameters, the fraction to remove) of the selection's target."""
    which = 0 if sel.target_macs is not None else 1
    target = sel.target_macs if which == 0 else sel.target_params
    if target is None:
        raise OnnxPruneError(f"--allocate {how} needs --target-macs or --target-params")
    return which, target


def _legal_counts(channels: int, sel: Selection) -> list[int]:
    """Removal counts the guards and rounding allow, ascending."""
    return sorted({channels - kept_count(channels, n, sel) for n in range(channels + 1)})


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


def allocate_iteratively(analysis: Analysis, scores: dict[str, GroupScores], sel: Selection, estimate,
                         loss_of, step_share: float = 0.125, progress=lambda _: None) -> tuple[dict[str, int], list]:
    """Removal counts grown one step of one group at a time, each step the one whose measured loss, with
    everything chosen so far removed too, rises least per unit of the target (NetAdapt's loop, on a
    fidelity measure). No additivity is assumed; it costs one measurement per group per step.

    `loss_of(counts)` prunes and measures. Returns the counts and each step's (group, count, loss).
    """
    which, target = _target(sel, "iterative")
    groups = [g for g in analysis.prunable if g.id in scores]
    legal = {g.id: _legal_counts(g.channels, sel) for g in groups}
    stride = {g.id: max(1, int(np.ceil(g.channels * step_share))) for g in groups}
    counts, current, history = {g.id: 0 for g in groups}, 0.0, []

    def total(c: dict[str, int]) -> float:
        return estimate(lowest(scores, {gid: n for gid, n in c.items() if n}))[which]

    reached = total(counts)
    while reached < target:
        best = None
        for gid, n in counts.items():
            nxt = next((m for m in legal[gid] if m >= n + stride[gid]), None) or \
                next((m for m in legal[gid] if m > n), None)
            if nxt is None:
                continue
            trial = dict(counts, **{gid: nxt})
            gain = total(trial) - reached
            if gain <= 0:
                continue
            loss = loss_of(trial)
            key = ((loss - current) / gain, gid)
            if best is None or key < best[0]:
                best = (key, trial, loss, gid)
        if best is None:
            raise OnnxPruneError(f"target {target:.0%} is impossible under the guards: at most {reached:.1%} "
                                 "can be removed")
        _, counts, current, gid = best
        reached = total(counts)
        history.append({"group": gid, "removed": counts[gid], "loss": round(current, 6), "reached": round(reached, 4)})
        progress(f"step {len(history)}: {gid} -> {counts[gid]} removed, loss {current:.4f}, "
                 f"{reached:.1%} of the target's measure removed")
    while True:  # the last step may overshoot: give back the single legal step that helps most while it holds
        back = []
        for gid, n in counts.items():
            prev = max((m for m in legal[gid] if m < n), default=None)
            trial = dict(counts, **{gid: prev}) if prev is not None else None
            if trial is not None and total(trial) >= target:
                back.append((loss_of(trial), gid, trial))
        if not back:
            break
        current, gid, counts = min(back, key=lambda t: (t[0], t[1]))
        history.append({"group": gid, "removed": counts[gid], "loss": round(current, 6),
                        "reached": round(total(counts), 4), "given_back": True})
    return {gid: n for gid, n in counts.items() if n}, history
