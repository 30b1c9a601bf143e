"""Allocation by measurement: per-group curves or measured steps, compared with uniform and global."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..analysis.estimates import removal_estimator
from ..calibration import Calibration
from ..rewrite.merging import MergeOptions
from ..selection import Selection, select
from ..selection.allocate import allocate, allocate_iteratively, cost_measure, curves_from_sensitivity, \
    predicted_loss, uniform_counts
from ..validation.tasks import TaskOptions
from .measure import MeasureJob, Measurer, Workers, keep_least
from .sensitivity import RATIOS, measure_sensitivity
from .speed import against_bisection, meet_speed


def sensitivity_allocation(model: str | bytes, selection: Selection, criterion: str, inputs, merge: MergeOptions,
                           calibration: Calibration | None = None, provider: str = "auto", jobs: int = 1,
                           ray: str | None = None, ratios: tuple[float, ...] | None = None,
                           progress: Callable[[str], None] | None = None, method: str = "curves",
                           speed=None, tasks: TaskOptions | None = None):
    """Measure every group's curve (it alone pruned at each ratio), then choose per-group counts that meet
    the selection's target with the least predicted loss (`method="iterative"`: grow the counts one
    measured step at a time instead, see allocate_iteratively).

    `speed` (a search.stopwatch.SpeedTarget) makes the target a measured speed-up: each group's
    latency saving is measured alone, the allocation made on that model, and the result pruned and
    timed, the model's target moved by what the timing missed (record["speed_target"]).
    Either way the result is measured against simpler allocations reaching the same target (uniform and
    global; for a speed target, the MAC bisection's global threshold) and the least loss is kept
    (record["compared"]). `tasks` says how outputs are read, and so what the loss is (an embedding's lost
    neighbours, a classifier's top-1 disagreement...). Returns (selection with the counts, the allocation's
    record, a function giving the measured loss of a pruned model on the same inputs)."""
    progress = progress or (lambda _: None)
    if method == "iterative":
        measurer = Measurer(MeasureJob(model, (0.5,), criterion, inputs, provider, merge, None, calibration, tasks))
        workers = Workers(measurer, jobs, ray)
        progress(f"iterative allocation by {criterion}: each step's trials measured in {workers.describe()}, in "
                 f"{measurer.metric}; outputs read as " + "; ".join(f"'{k}' {v}" for k, v in measurer.read_as.items()))
        choose, record = _iterative_chooser(measurer, selection, workers, progress), {"allocation": "iterative"}
    else:
        report, measurer = measure_sensitivity(model, ratios or RATIOS, criterion, inputs, provider, merge, progress,
                                               None, calibration, jobs, ray, tasks)
        choose, record = _curve_chooser(measurer, report, selection), {"allocation": "sensitivity",
                                                                       "ratios": report["ratios"]}
    try:
        if speed is None:
            measure, target = cost_measure(selection, measurer.scores, removal_estimator(measurer.analysis))
            counts, predicted = choose(measure, target)
            counts, predicted, record["compared"] = least_measured(measurer, selection, measure, target,
                                                                     record["allocation"], counts, predicted, progress)
        else:
            counts, predicted, record["speed_target"] = meet_speed(measurer, selection, inputs.shapes, speed, choose,
                                                                    progress)
            if not isinstance(model, bytes):  # the bisection reads the model from its file
                counts, predicted, record["compared"] = against_bisection(
                    model, measurer, selection, calibration, inputs.shapes, speed, record["allocation"], counts,
                    predicted, record["speed_target"], progress)
    finally:
        if method == "iterative":
            workers.close()
    metric = measurer.metric
    record.update({"metric": metric, "loss": _LOSS[metric], "inputs": measurer.description,
                   "outputs": measurer.read_as, **predicted.pop("record", {}),
                   "predicted_loss": round(predicted["total"], 6),
                   "groups": {g.id: {"channels": g.channels, "removed": counts.get(g.id, 0),
                                     "ratio": round(counts.get(g.id, 0) / g.channels, 4),
                                     "predicted_loss": _rounded(predicted["per_group"](g.id, counts.get(g.id, 0)))}
                              for g in measurer.groups()}})
    return replace(selection, counts=counts), record, measurer.loss


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def least_measured(measurer, selection: Selection, measure, target: float, name: str, counts: dict[str, int],
                    predicted: dict, progress) -> tuple[dict[str, int], dict, dict]:
    """The allocation against one ratio for all groups and one global score threshold at the same target,
    each pruned and measured on the same inputs: the least measured loss is kept (the allocation on a
    tie). Returns (counts, predicted loss, every candidate's measured loss and which was kept)."""
    analysis = measurer.analysis
    removed = select(analysis, measurer.scores, replace(selection, global_rank=True, counts=None),
                     removal_estimator(analysis))
    candidates = {name: counts, "uniform": uniform_counts(analysis, measurer.scores, selection, measure, target),
                  "global": {gid: len(idx) for gid, idx in removed.items()}}
    return keep_least(measurer, selection, name, candidates, predicted, "target", progress)


def _curve_chooser(measurer, report: dict, selection: Selection):
    """(measure, target) -> (counts, predicted loss) by the greedy over the measured curves."""
    curves = curves_from_sensitivity(report)

    def choose(measure, target: float):
        counts = allocate(measurer.analysis, curves, selection, measure, target)
        return counts, {"total": predicted_loss(curves, counts), "per_group": lambda g, n: curves[g].at(n)}
    return choose


def _iterative_chooser(measurer, selection: Selection, workers, progress):
    """(measure, target) -> (counts, measured loss) by the iterative loop, each step's trials measured by
    `workers`; a later call resumes from the last counts and measurements are remembered (a speed
    target's rounds re-use them)."""
    losses, last = {}, {}

    def losses_of(trials: list[dict[str, int]]) -> list[float]:
        keys = [tuple(sorted((g, n) for g, n in c.items() if n)) for c in trials]
        todo = list(dict.fromkeys(k for k in keys if k not in losses))
        for k, loss in zip(todo, workers.map("loss_at", [(dict(k), selection) for k in todo])):
            losses[k] = loss
        return [losses[k] if k else 0.0 for k in keys]

    def choose(measure, target: float):
        counts, history = allocate_iteratively(measurer.analysis, measurer.scores, selection, measure, target,
                                               losses_of, progress=progress, start=last.get("counts"))
        last["counts"] = counts
        total = losses_of([counts])[0]
        return counts, {"total": total, "per_group": lambda g, n: None, "record": {"steps": history}}
    return choose


_LOSS = {"cosine": "1 - cosine of the worst output", "accuracy": "accuracy drop",
         "top1_agreement": "top-1 disagreement with the original",
         "neighbour_agreement": "share of each sample's nearest neighbours lost"}
