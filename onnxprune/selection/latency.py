"""A per-group latency model: how much of the model's latency each group saves, alone, at the channel
counts the rounding allows (measured in onnxruntime), summed over groups to predict a whole allocation.

The sum is a first-order model (a layer between two pruned groups shrinks on both sides), so a speed
target is met by feedback: allocate on the model, prune, time the result, and move the model's target
by what the measurement missed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import OnnxPruneError, TargetMissed
from .allocate import Curve, Measure

MAX_SHARE = 0.95  # no allocation is asked to save more than this share of the latency


@dataclass
class LatencyModel:
    """The original's median latency and each group's measured saving (ms) at removal counts."""

    base_ms: float
    saved_ms: dict[str, Curve]
    provider: str = ""
    batch: Any = None
    points: list[dict] = field(default_factory=list)  # every timed (group, removed, speed-up)
    control: float = 1.0  # the original timed against itself: how far from 1.0 the timing's noise reaches

    def saved(self, gid: str, n: int) -> float:
        """Milliseconds saved by removing n channels of one group alone (0 for a group not measured)."""
        return self.saved_ms[gid].at(n) if n and gid in self.saved_ms else 0.0

    def share(self, counts: dict[str, int]) -> float:
        """Predicted share of the latency saved by all counts together (the sum of the groups' savings)."""
        return sum(self.saved(g, n) for g, n in counts.items()) / self.base_ms

    def speedup(self, counts: dict[str, int]) -> float:
        """Predicted speed-up of an allocation."""
        return 1.0 / (1.0 - min(self.share(counts), MAX_SHARE))

    def measure(self) -> Measure:
        """The model as a target measure for the allocation (a curve may fall: weigh every count)."""
        return Measure("latency", lambda gid, n: self.saved(gid, n) / self.base_ms, self.share, lookahead=True)

    def to_json(self) -> dict:
        return {"base_ms": round(self.base_ms, 4), "provider": self.provider, "batch": self.batch,
                "control_speedup": self.control, "points": self.points}


def curve_from_points(counts: list[int], saved_ms: list[float]) -> Curve:
    """A saving curve through (0, 0) and the measured points, in count order (values kept as measured:
    a count the kernels dislike may save less than a smaller one)."""
    order = np.argsort(counts)
    return Curve(np.array([0, *np.asarray(counts)[order]]), np.array([0.0, *np.asarray(saved_ms)[order]]))


def meet_speedup(target: float, allocate_at: Callable[[float], dict[str, int]], model: LatencyModel,
                 speedup_of: Callable[[dict[str, int]], tuple[float, Any]], rounds: int = 6, slack: float = 0.1,
                 progress: Callable[[str], None] = lambda _: None,
                 asked: str | None = None) -> tuple[dict[str, int], Any, list[dict]]:
    """(counts, their pruned result, the rounds) for the least allocation measured to reach `target` x.

    `allocate_at(share)` allocates to a predicted latency share; `speedup_of(counts)` prunes and times.
    Each round corrects the asked share by what the timings so far say (secant through the last two
    rounds, proportional after the first; bisecting between the asks known to miss and to reach when
    that leaves them), until one lands within `slack` above the target;
    of the rounds that reached it, the one asked for least wins. `asked` names the target in the error.
    """
    if target <= 1:
        raise OnnxPruneError(f"a speed-up of {target:.2f}x is no speed-up: it must be above 1 (a latency target "
                             "at or above the original's own latency is met already)")
    need = 1.0 - 1.0 / target
    ask, history, best, seen = need, [], None, {}
    lo, hi = 0.0, MAX_SHARE  # the largest ask measured to miss, the smallest measured to reach
    measured: list[tuple[float, float]] = []  # (share asked of the model, share of latency measured saved)
    for i in range(rounds):
        try:
            counts = allocate_at(ask)
        except OnnxPruneError as exc:  # more than the model says the guards allow: ask for less
            history.append({"asked_share": round(ask, 4), "impossible": str(exc)})
            progress(f"round {i + 1}/{rounds}: {exc}")
            ask = (lo + ask) / 2
            continue
        key = tuple(sorted(counts.items()))
        if key in seen and seen[key][0] < target and ask > need:  # the same allocation again: ask past it
            nxt = model.share(counts) + 0.01
            progress(f"round {i + 1}/{rounds}: asking the latency model for {ask:.1%} gives the allocation "
                     f"already measured at {seen[key][0]:.2f}x; asking for {nxt:.1%}")
            if nxt >= MAX_SHARE:
                break
            lo, ask = max(lo, model.share(counts)), nxt
            continue
        if key in seen and seen[key][0] >= target and ask < need:  # asking less gives what already reached
            break
        got, result = seen[key] if key in seen else speedup_of(counts)
        seen[key] = (got, result)
        history.append({"asked_share": round(ask, 4), "predicted_speedup": round(model.speedup(counts), 4),
                        "speedup": round(got, 4), "counts": counts})
        progress(f"round {i + 1}/{rounds}: latency model asked for {ask:.1%} saved (predicts "
                 f"{model.speedup(counts):.2f}x), measured {got:.2f}x (target {target:.2f}x)")
        if got >= target:
            hi = min(hi, ask)
            if best is None or ask <= best[0]:
                best = (ask, counts, result, len(history) - 1)
        else:
            lo = max(lo, ask)
        if target <= got <= target * (1 + slack):
            break
        measured.append((ask, 1.0 - 1.0 / got))
        nxt = _next_ask(measured, need)
        nxt = nxt if lo < nxt < hi else (lo + hi) / 2  # within what is known, else bisect
        if abs(nxt - ask) < 1e-3 or hi - lo < 1e-3:
            break
        ask = nxt
    if best is None:
        raise TargetMissed(f"{asked or f'--target-speedup {target:.2f}x'} is not reached: the best allocation measured "
                             f"{max((h['speedup'] for h in history if 'speedup' in h), default=1.0):.2f}x on "
                             "this provider and batch (--allocate score bisects on measured speed-ups instead)")
    history[best[3]]["chosen"] = True
    return best[1], best[2], history


def _next_ask(measured: list[tuple[float, float]], need: float) -> float:
    """The share to ask next so the measured saving meets `need`: secant through the last two rounds when
    they differ, else the last ask scaled by how far its saving fell short."""
    (a1, m1) = measured[-1]
    if len(measured) > 1:
        a0, m0 = measured[-2]
        if abs(m1 - m0) > 1e-6 and abs(a1 - a0) > 1e-6:
            return a1 + (need - m1) * (a1 - a0) / (m1 - m0)
    return a1 * need / m1 if m1 > 1e-6 else 2 * a1
