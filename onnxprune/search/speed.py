"""Speed targets: the MAC bisection timed step by step, and the latency-model rounds of an allocation."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..analysis.estimates import removal_estimator
from ..calibration import Calibration
from ..errors import OnnxPruneError, TargetMissed
from ..loading import prepare
from ..pipeline import Pruned, Shapes, default_options, run_pipeline
from ..rewrite.merging import MergeOptions
from ..selection import Selection, select
from ..selection.latency import meet_speedup
from ..selection.speed import search_speedup
from ..validation.bench import bench
from ..validation.speed_check import NOISY, provider_name
from .measure import keep_least
from .stopwatch import Stopwatch, measure_latency_model


def asked(speedup: float | None, latency_ms: float | None, base_ms: float | None, target: float) -> str:
    """The target as the user gave it, for the error when it is missed."""
    if latency_ms is None:
        return f"--target-speedup {target:.2f}x"
    return f"--target-latency {latency_ms:g} ms (the original runs {base_ms:.3f} ms: a {target:.2f}x speed-up)"


def noise_note(control: float) -> str:
    """What a missed target must add when the timing's own A/A control was noisy ('' when it was not)."""
    if abs(control - 1) <= NOISY:
        return ""
    return (f"; the timing was noisy (the original against itself ran {control:.2f}x), so the miss may be the "
            "machine's load: retry on a quiet machine or time longer (--runs)")


def _missed(exc: TargetMissed, control: float) -> TargetMissed:
    """The same miss, with the control's verdict when the timing was noisy."""
    return TargetMissed(f"{exc}{noise_note(control)}")


def against_bisection(model, measurer, selection: Selection, calibration: Calibration | None, shapes: Shapes,
                       speed, name: str, counts: dict[str, int], predicted: dict, record: dict, progress):
    """The latency-model allocation against the global threshold the MAC bisection finds for the same
    speed-up, both measured on the same inputs: the least loss is kept (the allocation on a tie; the
    speed record then names the bisection's timed step). Returns (counts, predicted loss, comparison)."""
    job = measurer.job
    try:
        r, search = speed_search(str(model), replace(selection, global_rank=True, target_macs=0.5, target_params=None,
                                                     counts=None), record["target_speedup"], None, job.criterion,
                                 job.merge, calibration, shapes, speed.provider, speed.batch, speed.threads,
                                 speed.warmup, speed.runs, progress=progress)
    except OnnxPruneError as exc:  # the bisection cannot reach it: nothing to compare with
        progress(f"global threshold by bisection: {exc}")
        return keep_least(measurer, selection, name, {name: counts}, predicted, "speed target", progress)
    candidates = {name: counts, "global": {gid: len(idx) for gid, idx in r.removed.items()}}
    counts, predicted, compared = keep_least(measurer, selection, name, candidates, predicted, "speed target",
                                              progress)
    if compared["kept"] != name:
        record["chosen"] = {**search["chosen"], "by": "global threshold (bisection)"}
        record["bisection_steps"] = search["steps"]
    return counts, predicted, compared


def meet_speed(measurer, selection: Selection, shapes: Shapes, speed, choose, progress):
    """Measure the latency model, then allocate on it round by round until the timed result reaches the
    speed target. Returns (counts, predicted loss, the speed record)."""
    watch = Stopwatch(measurer.job.model, speed, shapes)
    target = watch.target()
    analysis, predictions = measurer.analysis, {}
    bare = MergeOptions.from_keywords(compensate="none")  # latency depends on the counts only
    progress(f"measuring each group's latency at {', '.join(f'{s:g}' for s in speed.shares)} of its channels "
             f"on {watch.provider}, batch {watch.batch}")
    latency = measure_latency_model(watch, analysis, measurer.scores, selection,
                                    lambda r: measurer.prune(r, bare).SerializeToString(), progress)

    def allocate_at(share: float) -> dict[str, int]:
        counts, predicted = choose(latency.measure(), share)
        predictions[tuple(sorted(counts.items()))] = predicted
        return counts

    def speedup_of(counts: dict[str, int]) -> tuple[float, None]:
        removed = select(analysis, measurer.scores, replace(selection, counts=counts))
        if not any(map(len, removed.values())):  # the original itself: whatever a noisy clock says, 1x
            return 1.0, None
        return watch.speedup(measurer.prune(removed).SerializeToString()), None

    try:
        counts, _, rounds = meet_speedup(target, allocate_at, latency, speedup_of, progress=progress,
                                         asked=asked(speed.speedup, speed.latency_ms, watch.base_ms[0], target))
    except TargetMissed as exc:
        raise _missed(exc, latency.control) from None
    estimate = removal_estimator(analysis)
    for r in (r for r in rounds if "counts" in r):  # the MACs each round removed, for the record and the plot
        removed = select(analysis, measurer.scores, replace(selection, counts=r.pop("counts")))
        r["target_macs"] = round(estimate(removed)[0], 4)
    record = {"target_speedup": round(target, 4), "method": "latency model", "steps": rounds,
              "chosen": next(r for r in rounds if r.get("chosen")), "provider": provider_name(watch.provider),
              "batch": watch.batch,
              "latency_model": latency.to_json(),
              **({"target_latency_ms": speed.latency_ms} if speed.latency_ms is not None else {})}
    return counts, predictions[tuple(sorted(counts.items()))], record


def speed_search(model: str, selection: Selection, target_speedup: float | None = None,
                 target_latency: float | None = None, criterion: str = "l1", merge: MergeOptions | None = None,
                 calibration: Calibration | None = None, input_shapes: Shapes = None, provider: str = "auto",
                 batch: int | None = None, threads: int | None = None, warmup: int = 3, runs: int = 20,
                 include_consumers: bool = False, aggregate: str = "mean", seed: int = 0,
                 progress: Callable[[str], None] = lambda _: None) -> tuple[Pruned, dict]:
    """Prune a model file to a measured speed-up (or median latency in ms) against the original: bisection
    over the MAC target, each step pruned with `selection` (its MAC target replaced) and timed, the runs
    interleaved with the original's. Returns the chosen result and the record of every timed step."""
    batches = (batch,) if batch else ()
    timing = dict(warmup=warmup, runs=runs, provider=provider, threads=threads, shapes=input_shapes)
    merge = merge or default_options(criterion)
    if target_speedup is None and target_latency is None:
        raise OnnxPruneError("a speed target needs target_speedup or target_latency")
    control = bench([str(model), str(model)], batches, **timing)  # A/A: the timing's own noise
    entry = next(iter(control["batches"].values()))
    base_ms, ran = entry["models"][0]["median_ms"], provider_name(control["provider"])
    progress(f"timing on {ran}: the original runs {base_ms:.3f} ms, against itself {entry['speedup']:.3f}x")
    target = target_speedup if target_speedup is not None else base_ms / target_latency
    if target_speedup is None:
        progress(f"a latency of {target_latency:g} ms is a {target:.2f}x speed-up")

    def prune_at(t: float) -> Pruned:
        return run_pipeline(prepare(model), input_shapes, None, criterion, replace(selection, target_macs=t),
                            include_consumers, aggregate, seed, merge, calibration, provider)

    def speedup_of(r: Pruned) -> float:
        if not any(map(len, r.removed.values())):  # the original itself: whatever a noisy clock says, 1x
            return 1.0
        report = bench([str(model), r.model.SerializeToString()], batches, **timing)
        return float(next(iter(report["batches"].values()))["speedup"])

    try:
        t, r, record = search_speedup(target, prune_at, speedup_of, progress=progress,
                                      asked=asked(target_speedup, target_latency, base_ms, target))
    except TargetMissed as exc:
        raise _missed(exc, entry["speedup"]) from None
    chosen = next(st for st in record.steps if st["target_macs"] == round(t, 4))
    return r, {**record.to_json(), "chosen": chosen, "provider": ran, "batch": batch or "the model's own",
               "control": round(entry["speedup"], 4),
               **({"target_latency_ms": target_latency} if target_latency is not None else {})}
