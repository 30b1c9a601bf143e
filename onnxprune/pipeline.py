"""One pass of the pipeline: analyze -> score -> select -> compensate -> rewrite -> recount."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import onnx

from .analysis.analyze import Analysis, build_analysis
from .analysis.cost import Cost, count_cost
from .analysis.estimates import removal_estimator
from .calibration import Calibration
from .errors import OnnxPruneError
from .loading import Prepared
from .plan import Plan, calibration_record, check_plan, make_plan, with_calibration
from .rewrite.mean_fold import fold_means
from .rewrite.merging import Compensation, MergeOptions, plan_compensation
from .rewrite.reconstruction import check_reconstruction, reconstruct
from .rewrite.rewriter import rewrite
from .scoring import GroupScores, score_groups
from .scoring.score import COUNTED_BY, DATA_CRITERIA
from .selection import Selection, select
from .selection.lasso import require_solver

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


def default_options(criterion: str, **given: Any) -> MergeOptions:
    """Compensation options from keywords: `lasso` defaults to reconstruction, `flap` to its mean fold,
    the rest to merging."""
    default = {"lasso": "reconstruct", "flap": "mean"}.get(criterion, "merge")
    return MergeOptions.from_keywords(**{"compensate": default, **given})


def replay_options(plan: Plan, **overrides: Any) -> MergeOptions:
    """The compensation a plan records (defaults for a plan without one), overridden by keywords."""
    recorded = plan.get("compensation", {})
    if not isinstance(recorded, dict):
        raise OnnxPruneError("plan 'compensation' must be an object of compensation options")
    return MergeOptions.from_keywords(**{**recorded, **overrides})
