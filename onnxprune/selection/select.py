"""Choose which channels go: per-group ratio or one global ranking, targets, rounding and guards."""
from __future__ import annotations

import fnmatch
import math
from typing import Callable
from dataclasses import dataclass, field

import numpy as np

from ..analysis.analyze import Analysis
from ..analysis.builder import PRODUCER
from ..analysis.groups import Group
from ..errors import OnnxPruneError
from ..scoring import GroupScores
from .parts import protect_parts

TARGET_TOLERANCE = 0.02  # a MAC / parameter target is met within two points of the model total


@dataclass
class Selection:
    """How much to remove and what must stay."""

    ratio: float | None = None
    global_rank: bool = False
    target_macs: float | None = None
    target_params: float | None = None
    round_to: int = 1
    min_channels: int = 1
    max_ratio: float = 1.0
    exclude: list[str] = field(default_factory=list)
    overrides: dict[str, float] = field(default_factory=dict)  # node glob -> ratio for its groups
    counts: dict[str, int] | None = None  # group id -> channels to remove (a sensitivity allocation)

    def check(self) -> None:
        """Refuse contradictory or impossible settings before any work."""
        targets = [x for x in (self.ratio, self.target_macs, self.target_params) if x is not None]
        if len(targets) != 1 and self.counts is None:  # counts are a target of their own
            raise OnnxPruneError("give exactly one of --ratio, --target-macs, --target-params")
        for name, v in (("ratio", self.ratio), ("target-macs", self.target_macs),
                        ("target-params", self.target_params), ("max-ratio", self.max_ratio)):
            if v is not None and not 0 <= v < 1 and not (name == "max-ratio" and v == 1):
                raise OnnxPruneError(f"--{name} {v} is impossible: it must be in [0, 1)")
        if self.round_to < 1 or self.min_channels < 1:
            raise OnnxPruneError("--round-to and --min-channels must be at least 1")


def _matches(group: Group, globs: list[str]) -> str | None:
    """The first glob naming one of the group's producers (the layers whose output channels it holds)."""
    producers = group.nodes(PRODUCER)
    for glob in globs:
        if any(fnmatch.fnmatchcase(name, glob) for name in producers):
            return glob
    return None


def rounding_step(sel: Selection, width: int = 1) -> int:
    """Units kept go in steps of this many so that the positions they span (units x width) are a multiple of
    round_to: 8 for plain channels under --round-to 8, 1 for heads of 64 or blocks of 32."""
    return sel.round_to // math.gcd(sel.round_to, max(width, 1))


def kept_count(channels: int, remove: int, sel: Selection, width: int = 1) -> int:
    """Channels (units of `width` positions) kept after guards and rounding: their positions a multiple of
    round_to, never fewer than one step or the minimum."""
    floor = max(sel.min_channels, math.ceil(channels * (1 - sel.max_ratio)), 1)
    keep = max(channels - remove, floor)
    step = rounding_step(sel, width)
    if step > 1:
        keep = max(step, int(round(keep / step)) * step)
        while keep < floor:
            keep += step
    return min(keep, channels)


def _counts(analysis: Analysis, groups: list[Group], sel: Selection, wanted: Callable[[Group], int]
            ) -> dict[str, int]:
    """Per-group removal counts: an override's ratio for groups its node glob matches, else `wanted`;
    guards applied per group."""
    counts = {}
    for g in groups:
        glob = _matches(g, list(sel.overrides))
        n = int(math.floor(g.channels * sel.overrides[glob])) if glob else wanted(g)
        counts[g.id] = g.channels - kept_count(g.channels, n, sel, analysis.unit_width(g))
    return counts


def _normalised(scores: dict[str, GroupScores], raw: bool) -> dict[str, GroupScores]:
    """For global ranking, groups compare on scores scaled to mean 1 (BN gammas stay raw, as in the paper).

    FLAP's fluctuations differ by orders of magnitude between groups (attention heads against FFN units, one
    layer against another), so a raw threshold empties some groups and leaves others whole: they are
    standardised per group (mean 0, deviation 1), as its authors standardise per layer. Measured on a trained
    sentence transformer at 30 % fewer MACs (docs/allocation.md): 46.0 % of each sentence's 10 nearest
    neighbours kept, against 40.0 % raw and 41.0 % standardised over all groups of one kind of unit.
    """
    if raw:
        return scores
    return {k: GroupScores(_standardised(v.scores) if v.criterion == "flap" else
                           v.scores / max(float(v.scores.mean()), 1e-30), v.criterion, v.note)
            for k, v in scores.items()}


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-30)


def _removed(analysis: Analysis, groups: list[Group], scores: dict[str, GroupScores], counts: dict[str, int],
             sel: Selection) -> dict[str, list[int]]:
    """The lowest-scoring channels of each group, as many as its count (ties broken by index), with
    some kept in every part a node reads on its own."""
    out = {}
    for g in groups:
        n = counts.get(g.id, 0)
        if n > 0:
            order = np.lexsort((np.arange(g.channels), scores[g.id].scores))
            out[g.id] = sorted(int(i) for i in order[:n])
    return protect_parts(analysis, out, scores, sel.min_channels)


def select(analysis: Analysis, scores: dict[str, GroupScores], sel: Selection,
           estimate=None) -> dict[str, list[int]]:
    """Removed channel indices per group. `estimate(removed) -> (macs_removed, params_removed)` fractions."""
    sel.check()
    groups = [g for g in analysis.prunable if g.id in scores and not _matches(g, sel.exclude)]
    if sel.counts is not None:
        counts = {g.id: sel.counts.get(g.id, 0) for g in groups}  # legal counts, chosen under the guards
        return _removed(analysis, groups, scores, counts, sel)
    if sel.ratio is not None and not sel.global_rank:
        counts = _counts(analysis, groups, sel, lambda g: int(math.floor(g.channels * sel.ratio)))
        return _removed(analysis, groups, scores, counts, sel)
    ranked = _normalised(scores, raw=all(s.criterion == "bn" for s in scores.values()))
    everything = np.sort(np.concatenate([ranked[g.id].scores for g in groups])) if groups else np.zeros(0)
    if not len(everything):
        return {}

    def at(q: float) -> dict[str, list[int]]:
        threshold = everything[min(int(q * len(everything)), len(everything) - 1)] if q > 0 else -np.inf
        counts = _counts(analysis, groups, sel, lambda g: int((ranked[g.id].scores < threshold).sum()))
        return _removed(analysis, groups, ranked, counts, sel)

    if sel.ratio is not None:
        return at(sel.ratio)
    if estimate is None:
        raise OnnxPruneError("a MAC or parameter target needs the cost estimate")
    which = 0 if sel.target_macs is not None else 1
    target = sel.target_macs if which == 0 else sel.target_params
    lo, hi = 0.0, 1.0
    for _ in range(40):  # bisection on the global quantile; the estimate grows with it
        mid = (lo + hi) / 2
        if estimate(at(mid))[which] < target:
            lo = mid
        else:
            hi = mid
    best = at(hi)
    got = estimate(best)[which]
    if got < target - TARGET_TOLERANCE:
        raise OnnxPruneError(f"target {target:.0%} is impossible under the guards: at most {got:.1%} can be removed")
    unit_steps = {g.id: rounding_step(sel, analysis.unit_width(g)) for g in groups}
    return _trim(best, groups, ranked, unit_steps, sel, lambda r: estimate(r)[which] >= target) if got >= target else best


def _trim(removed: dict[str, list[int]], groups: list[Group], scores: dict[str, GroupScores], unit_steps: dict[str, int],
          sel: Selection, reaches: Callable[[dict[str, list[int]]], bool]) -> dict[str, list[int]]:
    """Give channels back while the target is still reached, so it is not overshot.

    A global threshold moves whole rounding steps of many groups at once; here one step of one group
    (its rounding step of best removed channels) comes back at a time, the best-scoring step first, until
    no step can come back without missing the target. Groups under an override keep their ratio.
    """
    free = {g.id for g in groups if not _matches(g, list(sel.overrides))}
    removed = {gid: list(idx) for gid, idx in removed.items()}
    while True:
        steps = []
        for gid, idx in removed.items():
            if gid in free and len(idx) >= unit_steps[gid]:
                back = sorted(idx, key=lambda i: -scores[gid].scores[i])[:unit_steps[gid]]
                steps.append((float(np.mean(scores[gid].scores[back])), gid, back))
        for _, gid, back in sorted(steps, key=lambda t: -t[0]):
            trial = dict(removed, **{gid: sorted(set(removed[gid]) - set(back))})
            if reaches(trial):
                removed = trial
                break
            free.discard(gid)  # giving back more elsewhere only lowers the reduction: this step stays out
        else:
            return {gid: idx for gid, idx in removed.items() if idx}
