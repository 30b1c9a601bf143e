"""Speed targets: the MAC target whose pruned model runs the asked speed-up, found by measuring.

MACs are a poor proxy for latency (channel counts, memory traffic, the runtime's kernels), so the
search times real models: it bisects on the MAC target, pruning and timing (interleaved with the
original, on the chosen provider and batch) at each step, and keeps the smallest cut that reaches
the speed-up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import OnnxPruneError, TargetMissed

MAX_CUT = 0.95


@dataclass
class SpeedSearch:
    """Each step's MAC target, the reduction reached and the speed-up measured."""

    target: float
    steps: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"target_speedup": self.target, "steps": self.steps}


def search_speedup(target: float, prune_at: Callable[[float], Any], speedup_of: Callable[[Any], float],
                   steps: int = 6, progress: Callable[[str], None] = lambda _: None,
                   tolerance: float = 0.02, asked: str | None = None) -> tuple[float, Any, SpeedSearch]:
    """(MAC target, its pruned result, the record) for the least cut measured to reach `target` x.

    `prune_at(t)` prunes to a MAC reduction of t; `speedup_of(result)` times it against the original;
    `asked` names the target in the error when it is missed (default: --target-speedup X).
    """
    if target <= 1:
        raise OnnxPruneError(f"a speed-up of {target:.2f}x is no speed-up: it must be above 1 (a latency target "
                             "at or above the original's own latency is met already)")
    record = SpeedSearch(target)
    lo, hi = 0.0, MAX_CUT
    best = None
    for i in range(steps):
        mid = (lo + hi) / 2 if best is not None or i else min(1 - 1 / target, MAX_CUT)  # start at the MAC ratio
        result = prune_at(mid)
        got = speedup_of(result)
        record.steps.append({"target_macs": round(mid, 4), "speedup": round(got, 4)})
        progress(f"step {i + 1}/{steps}: {mid:.1%} fewer MACs runs {got:.2f}x (target {target:.2f}x)")
        if got >= target:
            best, hi = (mid, result), mid
        else:
            lo = mid
        if hi - lo < tolerance:
            break
    if best is None:
        result = prune_at(hi)
        got = speedup_of(result)
        record.steps.append({"target_macs": round(hi, 4), "speedup": round(got, 4)})
        if got < target:
            raise TargetMissed(f"{asked or f'--target-speedup {target:.2f}x'} is not reached: {hi:.0%} fewer "
                               f"MACs ran {got:.2f}x on this provider and batch")
        best = (hi, result)
    return best[0], best[1], record
