"""Timing for speed targets: the original opened once, each candidate timed interleaved with it, and the
per-group latency model measured from single-group prunes at the counts the rounding allows."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..analysis.analyze import Analysis
from ..errors import OnnxPruneError
from ..scoring import GroupScores
from ..selection import Selection, select
from ..selection.allocate import legal_counts
from ..selection.latency import MAX_SHARE, LatencyModel, curve_from_points
from ..validation.bench import bound_runner, interleaved, own_batch
from ..runtime.feeds import input_dims, random_inputs, session_inputs
from ..runtime.providers import open_session
from ..validation.validate import ModelBytes

SHARES = (0.25, 0.5, 0.75)
MIN_SECONDS = 0.25  # each model of a timed pair runs at least this long in all (a fast model gets more runs)


@dataclass
class SpeedTarget:
    """A speed-up (or median latency in ms) to reach, and how it is timed."""

    speedup: float | None = None
    latency_ms: float | None = None
    provider: str = "auto"
    batch: int | None = None
    threads: int | None = None
    warmup: int = 3
    runs: int = 20
    shares: tuple[float, ...] = SHARES  # where each group's latency curve is measured


class Stopwatch:
    """Times candidates against the original, their runs interleaved so the machine's drift hits both."""

    def __init__(self, original: ModelBytes, speed: SpeedTarget, shapes: dict | None = None):
        self.speed = speed
        self.original = original
        ref = open_session(original, speed.provider, speed.threads, spin=False)  # runs alternate: no spinning
        self.provider = ref.provider
        specs, dtypes = session_inputs(ref.session)
        self.batch = speed.batch or own_batch(specs, shapes)
        self.feeds = random_inputs(dtypes, input_dims(specs, shapes, self.batch))
        self.reference = bound_runner(ref, self.feeds)
        self.base_ms: list[float] = []

    def speedup(self, candidate: ModelBytes) -> float:
        """The original's latency over the candidate's (each its fastest of the interleaved runs)."""
        s = open_session(candidate, self.speed.provider, self.speed.threads, spin=False)
        runners = [self.reference, bound_runner(s, self.feeds)]
        t0 = time.perf_counter()
        for run in runners:
            for _ in range(max(self.speed.warmup, 1)):
                run()
        each = (time.perf_counter() - t0) / (2 * max(self.speed.warmup, 1))
        times = interleaved(runners, max(self.speed.runs, int(MIN_SECONDS / max(each, 1e-6))))  # small: more runs
        ms = [float(np.min(t)) * 1000 for t in times]  # other load only adds time: the fastest run is the model's
        self.base_ms.append(ms[0])
        return ms[0] / ms[1]

    def target(self) -> float:
        """The speed-up the target asks for (a latency target divided into the original's own latency)."""
        if self.speed.speedup is not None:
            return self.speed.speedup
        if self.speed.latency_ms is None or self.speed.latency_ms <= 0:
            raise OnnxPruneError("a speed target needs a speed-up or a positive latency in ms")
        self.speedup(self.original)
        return self.base_ms[-1] / self.speed.latency_ms


def measure_latency_model(watch: Stopwatch, analysis: Analysis, scores: dict[str, GroupScores], sel: Selection,
                          prune: Callable[[dict[str, list[int]]], bytes],
                          progress: Callable[[str], None] = lambda _: None) -> LatencyModel:
    """Each group alone pruned (no compensation: latency depends on the counts only) at the legal counts
    nearest the speed target's shares, and timed against the original."""
    groups = [g for g in analysis.prunable if g.id in scores]
    control = watch.speedup(watch.original)  # A/A: the original against itself, the timing's own noise
    progress(f"latency control: the original against itself {control:.3f}x")
    curves, points = {}, []
    for i, g in enumerate(groups, 1):
        legal = [n for n in legal_counts(g.channels, sel, analysis.unit_width(g)) if n > 0]
        counts = sorted({min(legal, key=lambda n: abs(n - s * g.channels)) for s in watch.speed.shares}) if legal else []
        saved = []
        for n in counts:
            removed = select(analysis, {g.id: scores[g.id]}, replace(sel, counts={g.id: n}))
            got = watch.speedup(prune(removed))
            saved.append(watch.base_ms[-1] * min(1.0 - 1.0 / got, MAX_SHARE))
            points.append({"group": g.id, "removed": n, "speedup": round(got, 4)})
        if counts:
            curves[g.id] = curve_from_points(counts, saved)
        progress(f"latency {i}/{len(groups)} {g.id}: " + ", ".join(
            f"{n} removed {'saves' if s >= 0 else 'costs'} {abs(s):.3f} ms" for n, s in zip(counts, saved)))
    return LatencyModel(float(np.median(watch.base_ms)), curves, watch.provider, watch.batch, points,
                        round(control, 4))
