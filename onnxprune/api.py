"""The Python API: analyze a model, apply a plan. Neither touches the caller's object or file."""
from __future__ import annotations

import onnx

from .analysis.analyze import Analysis, build_analysis
from .loading import ModelSource, prepare
from .plan import Plan, check_plan
from .rewrite.rewriter import rewrite


def analyze(model: ModelSource, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Analysis:
    """Find every channel dependency group of a model (a path or a ModelProto)."""
    return build_analysis(prepare(model), input_shapes)


def apply_plan(model: ModelSource, plan: Plan, input_shapes: dict[str, tuple[int, ...]] | None = None) -> onnx.ModelProto:
    """Remove the plan's channels and return the smaller, checked model (input_shapes as for analyze)."""
    prep = prepare(model)
    analysis = build_analysis(prep, input_shapes)
    removed = check_plan(plan, analysis)
    return rewrite(prep, analysis, removed)
