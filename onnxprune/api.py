"""The Python API: analyze, apply a plan, or prune in one call. Inputs are never modified."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import onnx

from .analysis.analyze import Analysis, build_analysis
from .analysis.cost import Cost, count_cost, removal_estimator
from .calibration import Calibration
from .errors import OnnxPruneError
from .loading import ModelSource, Prepared, prepare
from .plan import Plan, calibration_record, check_plan, make_plan, with_calibration
from .report import prune_report
from .rewrite.mean_fold import fold_means
from .rewrite.merging import Compensation, MergeOptions, plan_compensation
from .rewrite.reconstruction import check_reconstruction, reconstruct
from .rewrite.rewriter import rewrite
from .scoring import GroupScores, score_groups
from .scoring.score import COUNTED_BY, DATA_CRITERIA
from .selection.lasso import require_solver
from .selection import Selection, select

Shapes = dict[str, tuple[int, ...]] | None


@dataclass
class Pruned:
    """Everything one pass of the pipeline produced."""

    model: onnx.ModelProto
    plan: Plan
    removed: dict[str, list[int]]
    scores: dict[str, GroupScores] | None
    analysis: Analysis
    after: Cost
    compensation: Compensation


def analyze(model: ModelSource, input_shapes: Shapes = None) -> Analysis:
    """Find every channel dependency group of a model (a path or a ModelProto)."""
    return build_analysis(prepare(model), input_shapes)


def run_pipeline(prep: Prepared, input_shapes: Shapes = None, plan: Plan | None = None, criterion: str = "l1",
                 selection: Selection | None = None, include_consumers: bool = False, aggregate: str = "mean",
                 seed: int = 0, merge: MergeOptions | None = None, calibration: Calibration | None = None,
                 provider: str = "auto", progress: Callable[[str], None] | None = None) -> Pruned:
    """analyze -> (check the plan | score and select) -> compensate + rewrite -> recount: the one data path.

    Reconstruction (He et al.) is the compensation that also chooses: with `lasso` it picks each
    group's channels while it re-fits, in graph order, so the plan is made after it.
    """
    merge = merge or (replay_options(plan) if plan is not None else default_options(criterion))
    lasso = plan is None and criterion == "lasso"
    check_reconstruction(lasso, merge, calibration)
    if lasso:
        require_solver()
    analysis = build_analysis(prep, input_shapes)
    scores = None
    if plan is not None:
        removed = check_plan(plan, analysis)
    else:
        scores = score_groups(prep, analysis, criterion, include_consumers, aggregate, seed=seed,
                              calibration=calibration, provider=provider)
        removed = select(analysis, scores, selection, removal_estimator(analysis))
    if lasso or merge.compensate == "reconstruct":
        chosen_by = "the plan" if plan is not None else COUNTED_BY.get(criterion, criterion)
        removed, compensation = reconstruct(prep, analysis, removed, calibration, merge, lasso, chosen_by, provider,
                                            progress)
    elif merge.compensate == "mean":
        compensation = fold_means(prep, analysis, removed, calibration, merge, provider)
    else:
        compensation = plan_compensation(prep, analysis, removed, merge)
    if plan is None:
        plan = make_plan(analysis, removed, criterion=criterion, compensation=asdict(merge))
        if calibration is not None and (criterion in DATA_CRITERIA or merge.compensate in ("reconstruct", "mean")):
            plan = with_calibration(plan, calibration_record(calibration))  # a replay can tell other data
    model = rewrite(prep, analysis, removed, compensation)
    after = count_cost(prep.graph, list(prep.template.opset_import), input_shapes)  # the rewritten graph
    return Pruned(model, plan, removed, scores, analysis, after, compensation)


def sensitivity_allocation(model: str | bytes, selection: Selection, criterion: str, inputs, merge: MergeOptions,
                           calibration: Calibration | None = None, provider: str = "auto", jobs: int = 1,
                           ray: str | None = None, ratios: tuple[float, ...] | None = None,
                           progress: Callable[[str], None] | None = None, method: str = "curves",
                           speed=None):
    """Measure every group's curve (it alone pruned at each ratio), then choose per-group counts that meet
    the selection's target with the least predicted loss (`method="iterative"`: grow the counts one
    measured step at a time instead, see allocate_iteratively).

    `speed` (a validation.latency.SpeedTarget) makes the target a measured speed-up: each group's
    latency saving is measured alone, the allocation made on that model, and the result pruned and
    timed, the model's target moved by what the timing missed (record["speed_target"]).
    Either way the result is measured against simpler allocations reaching the same target (uniform and
    global; for a speed target, the MAC bisection's global threshold) and the least loss is kept
    (record["compared"]). Returns (selection with the counts, the allocation's record, a function giving the measured loss
    of a pruned model on the same inputs)."""
    from .selection.allocate import cost_measure
    from .validation.sensitivity import RATIOS, MeasureJob, Measurer, Workers, measure_sensitivity

    progress = progress or (lambda _: None)
    if method == "iterative":
        measurer = Measurer(MeasureJob(model, (0.5,), criterion, inputs, provider, merge, None, calibration))
        workers = Workers(measurer, jobs, ray)
        progress(f"iterative allocation by {criterion}: each step's trials measured in {workers.describe()}")
        choose, record = _iterative_chooser(measurer, selection, workers, progress), {"allocation": "iterative"}
    else:
        report, measurer = measure_sensitivity(model, ratios or RATIOS, criterion, inputs, provider, merge, progress,
                                               None, calibration, jobs, ray)
        choose, record = _curve_chooser(measurer, report, selection), {"allocation": "sensitivity",
                                                                       "ratios": report["ratios"]}
    try:
        if speed is None:
            measure, target = cost_measure(selection, measurer.scores, removal_estimator(measurer.analysis))
            counts, predicted = choose(measure, target)
            counts, predicted, record["compared"] = least_measured(measurer, selection, measure, target,
                                                                     record["allocation"], counts, predicted, progress)
        else:
            counts, predicted, record["speed_target"] = _meet_speed(measurer, selection, inputs.shapes, speed, choose,
                                                                    progress)
            if not isinstance(model, bytes):  # the bisection reads the model from its file
                counts, predicted, record["compared"] = _against_bisection(
                    model, measurer, selection, calibration, inputs.shapes, speed, record["allocation"], counts,
                    predicted, record["speed_target"], progress)
    finally:
        if method == "iterative":
            workers.close()
    metric = measurer.metric
    record.update({"metric": metric, "loss": _LOSS[metric], "inputs": measurer.description, **predicted.pop("record", {}),
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
    from .selection.allocate import uniform_counts

    analysis = measurer.analysis
    removed = select(analysis, measurer.scores, replace(selection, global_rank=True, counts=None),
                     removal_estimator(analysis))
    candidates = {name: counts, "uniform": uniform_counts(analysis, measurer.scores, selection, measure, target),
                  "global": {gid: len(idx) for gid, idx in removed.items()}}
    return _keep_least(measurer, selection, name, candidates, predicted, "target", progress)


def _keep_least(measurer, selection: Selection, name: str, candidates: dict[str, dict[str, int]], predicted: dict,
                what: str, progress) -> tuple[dict[str, int], dict, dict]:
    """Each candidate's counts pruned and measured; the least loss kept (`name`, the allocation, on a tie).
    Returns (its counts, predicted loss, every candidate's loss and which was kept)."""
    losses = {k: measurer.loss_at(c, selection) for k, c in candidates.items()}
    kept = min(candidates, key=lambda k: (losses[k], k != name))
    progress(f"measured loss at the same {what}: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
             + f"; keeping {kept}")
    if kept != name:
        predicted = {"total": losses[kept], "per_group": lambda g, n: None}  # no curve predicts a baseline
    return candidates[kept], predicted, {"losses": {k: round(v, 6) for k, v in losses.items()}, "kept": kept}


def _against_bisection(model, measurer, selection: Selection, calibration: Calibration | None, shapes: Shapes,
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
        return _keep_least(measurer, selection, name, {name: counts}, predicted, "speed target", progress)
    candidates = {name: counts, "global": {gid: len(idx) for gid, idx in r.removed.items()}}
    counts, predicted, compared = _keep_least(measurer, selection, name, candidates, predicted, "speed target",
                                              progress)
    if compared["kept"] != name:
        record["chosen"] = {**search["chosen"], "by": "global threshold (bisection)"}
        record["bisection_steps"] = search["steps"]
    return counts, predicted, compared


def _curve_chooser(measurer, report: dict, selection: Selection):
    """(measure, target) -> (counts, predicted loss) by the greedy over the measured curves."""
    from .selection.allocate import allocate, curves_from_sensitivity, predicted_loss

    curves = curves_from_sensitivity(report)

    def choose(measure, target: float):
        counts = allocate(measurer.analysis, curves, selection, measure, target)
        return counts, {"total": predicted_loss(curves, counts), "per_group": lambda g, n: curves[g].at(n)}
    return choose


def _iterative_chooser(measurer, selection: Selection, workers, progress):
    """(measure, target) -> (counts, measured loss) by the iterative loop, each step's trials measured by
    `workers`; a later call resumes from the last counts and measurements are remembered (a speed
    target's rounds re-use them)."""
    from .selection.allocate import allocate_iteratively

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


def _meet_speed(measurer, selection: Selection, shapes: Shapes, speed, choose, progress):
    """Measure the latency model, then allocate on it round by round until the timed result reaches the
    speed target. Returns (counts, predicted loss, the speed record)."""
    from .selection.latency import meet_speedup
    from .validation.latency import Stopwatch, measure_latency_model

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
        return watch.speedup(measurer.prune(removed).SerializeToString()), None

    counts, _, rounds = meet_speedup(target, allocate_at, latency, speedup_of, progress=progress)
    estimate = removal_estimator(analysis)
    for r in (r for r in rounds if "counts" in r):  # the MACs each round removed, for the record and the plot
        removed = select(analysis, measurer.scores, replace(selection, counts=r.pop("counts")))
        r["target_macs"] = round(estimate(removed)[0], 4)
    record = {"target_speedup": round(target, 4), "method": "latency model", "steps": rounds,
              "chosen": next(r for r in rounds if r.get("chosen")), "provider": watch.provider, "batch": watch.batch,
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
    from .selection.speed import search_speedup
    from .validation.bench import bench

    batches = (batch,) if batch else ()
    timing = dict(warmup=warmup, runs=runs, provider=provider, threads=threads, shapes=input_shapes)
    merge = merge or default_options(criterion)
    target = target_speedup
    if target is None:
        if target_latency is None:
            raise OnnxPruneError("a speed target needs target_speedup or target_latency")
        entry = next(iter(bench([str(model)], batches, **timing)["batches"].values()))
        target = entry["models"][0]["median_ms"] / target_latency
        progress(f"the original runs {entry['models'][0]['median_ms']:.3f} ms: a latency of "
                 f"{target_latency} ms is a {target:.2f}x speed-up")

    def prune_at(t: float) -> Pruned:
        return run_pipeline(prepare(model), input_shapes, None, criterion, replace(selection, target_macs=t),
                            include_consumers, aggregate, seed, merge, calibration, provider)

    def speedup_of(r: Pruned) -> float:
        report = bench([str(model), r.model.SerializeToString()], batches, **timing)
        return float(next(iter(report["batches"].values()))["speedup"])

    t, r, record = search_speedup(target, prune_at, speedup_of, progress=progress)
    chosen = next(st for st in record.steps if st["target_macs"] == round(t, 4))
    return r, {**record.to_json(), "chosen": chosen, "provider": provider, "batch": batch or "the model's own",
               **({"target_latency_ms": target_latency} if target_latency is not None else {})}


_LOSS = {"cosine": "1 - cosine of the worst output", "accuracy": "accuracy drop",
         "top1_agreement": "top-1 disagreement with the original"}


def default_options(criterion: str, **given: Any) -> MergeOptions:
    """Compensation options from keywords: `lasso` defaults to reconstruction, `flap` to its mean fold,
    the rest to merging."""
    default = {"lasso": "reconstruct", "flap": "mean"}.get(criterion, "merge")
    return MergeOptions.from_keywords(**{"compensate": default, **given})


def apply_plan(model: ModelSource, plan: Plan, input_shapes: Shapes = None,
               calibration: Calibration | str | None = None, provider: str = "auto", **merge: Any) -> onnx.ModelProto:
    """Remove the plan's channels and return the smaller, checked model (input_shapes as for analyze).

    Channels are compensated as the plan records (as `prune` made it); keywords of `prune`'s merge
    options given here take precedence. A plan made with reconstruction re-fits on `calibration`.
    """
    if isinstance(calibration, str):
        calibration = Calibration(calibration)
    return run_pipeline(prepare(model), input_shapes, plan=plan, merge=replay_options(plan, **merge),
                        calibration=calibration, provider=provider).model


def replay_options(plan: Plan, **overrides: Any) -> MergeOptions:
    """The compensation a plan records (defaults for a plan without one), overridden by keywords."""
    recorded = plan.get("compensation", {})
    if not isinstance(recorded, dict):
        raise OnnxPruneError("plan 'compensation' must be an object of compensation options")
    return MergeOptions.from_keywords(**{**recorded, **overrides})


def prune(model: ModelSource, ratio: float | None = None, criterion: str = "l1", *, global_rank: bool = False,
          target_macs: float | None = None, target_params: float | None = None, round_to: int = 1,
          min_channels: int = 1, max_ratio: float = 1.0, exclude: list[str] | None = None,
          overrides: dict[str, float] | None = None, include_consumers: bool = False, aggregate: str = "mean",
          seed: int = 0, input_shapes: Shapes = None, calibration: Calibration | str | None = None,
          provider: str = "auto", progress: Callable[[str], None] | None = None,
          **merge: Any) -> tuple[onnx.ModelProto, Plan, dict[str, Any]]:
    """Score, select, compensate and remove channels in one call; returns (pruned model, plan, report).

    Merge options (MergeOptions): compensate ("merge": neuron merging, constants folded; "fold":
    constants only; "reconstruct": least-squares re-fit of the consumers on calibration data; "mean":
    removed channels' calibration means folded into the consumers' biases (FLAP); "none"),
    merge_threshold, merge_lambda, merge_mode ("exact" | "paper"), merge_approximate, fold_tolerance,
    merge_order ("original" | "sequential").
    Data-driven criteria ("activation", "wanda", "flap" (which folds means unless told otherwise);
    "lasso", which reconstructs unless compensate="none") and
    reconstruction read `calibration` (a Calibration, or the path of an .npz or a folder of .npy
    files) in onnxruntime on `provider`; `progress` receives a line per reconstructed group.
    """
    selection = Selection(ratio, global_rank, target_macs, target_params, round_to, min_channels, max_ratio,
                          list(exclude or []), dict(overrides or {}))
    selection.check()  # before the model is read
    options = default_options(criterion, **merge)
    if isinstance(calibration, str):
        calibration = Calibration(calibration)
    r = run_pipeline(prepare(model), input_shapes, None, criterion, selection, include_consumers, aggregate, seed,
                     options, calibration, provider, progress)
    return r.model, r.plan, prune_report(r.analysis, r.after, r.removed, r.scores, compensation=r.compensation)
