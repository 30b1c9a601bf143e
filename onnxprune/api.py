"""The Python API, a facade over the pipeline and the searches: analyze, prune, apply a plan, allocate,
meet a speed target. Inputs are never modified."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import onnx

from .analysis.analyze import Analysis, build_analysis
from .calibration import Calibration
from .errors import OnnxPruneError
from .loading import ModelSource, prepare
from .pipeline import Pruned, Shapes, default_options, replay_options, run_pipeline
from .plan import Plan, is_depth_plan
from .report import prune_report, with_blocks
from .search.depth import depth_prune
from .search.depth_width import Goal, Setting, choose_depth, deepen, depth_mode, replay, with_target
from .search.allocation import sensitivity_allocation
from .search.sensitivity import sensitivity
from .search.speed import speed_search
from .search.stopwatch import SpeedTarget
from .selection import Selection
from .validation.validate import Inputs

__all__ = ["Pruned", "SpeedTarget", "analyze", "apply_plan", "default_options", "drop_blocks", "prune", "recover",
           "replay_options", "run_pipeline", "sensitivity", "sensitivity_allocation", "speed_search"]


def analyze(model: ModelSource, input_shapes: Shapes = None) -> Analysis:
    """Find every channel dependency group of a model (a path or a ModelProto)."""
    return build_analysis(prepare(model), input_shapes)


def apply_plan(model: ModelSource, plan: Plan, input_shapes: Shapes = None,
               calibration: Calibration | str | None = None, provider: str = "auto", **merge: Any) -> onnx.ModelProto:
    """Remove the plan's channels and return the smaller, checked model (input_shapes as for analyze).

    Channels are compensated as the plan records (as `prune` made it); keywords of `prune`'s merge
    options given here take precedence. A plan made with reconstruction re-fits on `calibration`.
    """
    if is_depth_plan(plan) and not plan.get("groups"):  # residual blocks removed whole (drop_blocks made it)
        return depth_prune(prepare(model), model, plan=plan, input_shapes=input_shapes)[0].model
    if isinstance(calibration, str):
        calibration = Calibration(calibration)

    def channels(source: ModelSource, channel_plan: Plan) -> Pruned:
        return run_pipeline(prepare(source), input_shapes, plan=channel_plan, merge=replay_options(plan, **merge),
                            calibration=calibration, provider=provider)
    if is_depth_plan(plan):  # blocks, then channels of what is left
        return replay(prepare(model), model, plan, input_shapes, channels).pruned.model
    return channels(model, plan).model


def prune(model: ModelSource, ratio: float | None = None, criterion: str = "l1", *, global_rank: bool = False,
          target_macs: float | None = None, target_params: float | None = None, round_to: int = 1,
          min_channels: int = 1, max_ratio: float = 1.0, exclude: list[str] | None = None,
          overrides: dict[str, float] | None = None, include_consumers: bool = False, aggregate: str = "mean",
          seed: int = 0, input_shapes: Shapes = None, calibration: Calibration | str | None = None,
          provider: str = "auto", progress: Callable[[str], None] | None = None, drop_blocks: int | None = None,
          depth: bool = False, max_blocks: int | None = None,
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
    Depth and width: `drop_blocks=n` first removes the n least important residual blocks (as drop_blocks does), then
    prunes channels of what is left; `depth=True` (with target_macs or target_params) chooses how many blocks to
    remove: k = 0, 1, 2... (at most max_blocks), each completed to the target by channels, the least loss measured
    on the calibration .npz (else random inputs) kept. Targets count against the original; the plan records both.
    """
    selection = Selection(ratio, global_rank, target_macs, target_params, round_to, min_channels, max_ratio,
                          list(exclude or []), dict(overrides or {}))
    selection.check()  # before the model is read
    options = default_options(criterion, **merge)
    if isinstance(calibration, str):
        calibration = Calibration(calibration)

    def width(source: ModelSource, asked: dict) -> Pruned:
        return run_pipeline(prepare(source), input_shapes, None, criterion, with_target(selection, asked),
                            include_consumers, aggregate, seed, options, calibration, provider, progress)
    if drop_blocks is None and not depth:
        r = width(model, {})
        return r.model, r.plan, prune_report(r.analysis, r.after, r.removed, r.scores, compensation=r.compensation)
    widths = [f"--{k}" for k, v in (("ratio", ratio), ("target-macs", target_macs), ("target-params", target_params))
              if v is not None]
    depth_mode(None, drop_blocks, depth, max_blocks, widths, [])
    setting = Setting(_measured_on(calibration, input_shapes), input_shapes, provider,
                      progress=progress or (lambda _: None))
    goal = Goal(target_macs, target_params)
    deep = choose_depth(prepare(model), model, goal, width, setting, max_blocks) if depth else \
        deepen(prepare(model), model, drop_blocks, goal, width, setting)
    r = deep.pruned
    report = with_blocks(prune_report(r.analysis, r.after, r.removed, r.scores, compensation=r.compensation),
                         deep.original, deep.blocks, deep.after_blocks)
    report.update(block_importance=deep.importance, depth_choice=deep.choice)
    return r.model, r.plan, report


def recover(original: ModelSource, pruned: ModelSource, calibration: Calibration | str,
            progress: Callable[[str], None] | None = None, **settings: Any) -> tuple[onnx.ModelProto, dict]:
    """Tune a pruned model's remaining weights so it reproduces the original on calibration inputs (block-wise
    distillation, Adam, padding positions left out, a held-out guard per block); returns (the model, differing
    from `pruned` only in initializer values, and the record). Settings: epochs, lr, loss (mse, normalized,
    cosine), end_to_end, end_to_end_loss, end_to_end_lr, batch, hold_out, seed, device, threads. Needs PyTorch
    (onnxprune[recover])."""
    from .loading import read_model
    from .recovery.run import recover_from, teacher_of

    if isinstance(calibration, str):
        calibration = Calibration(calibration)
    student, _, files = read_model(pruned)
    if files:
        from onnx.external_data_helper import load_external_data_for_model
        load_external_data_for_model(student, str(files[0].parent))
    return recover_from(teacher_of(original), student, calibration, settings, progress or (lambda _: None))


def drop_blocks(model: ModelSource, n: int, calibration: Calibration | str | None = None, input_shapes: Shapes = None,
                provider: str = "auto") -> tuple[onnx.ModelProto, Plan, dict[str, Any]]:
    """Depth pruning: remove the n residual blocks (x + f(x) becomes x) whose removal alone changes the outputs
    least, measured in onnxruntime on `provider` over the calibration inputs (an .npz, or a Calibration of one;
    else random inputs at input_shapes); returns (model, plan, report). With n=0, or no removable block, the
    model comes back unchanged; apply_plan replays the plan."""
    inputs = _measured_on(calibration, input_shapes)
    r, measured = depth_prune(prepare(model), model, n, inputs=inputs, input_shapes=input_shapes, provider=provider,
                              allow_noop=True)
    report = prune_report(r.analysis, r.after, r.removed)
    report.update(blocks_removed=r.plan["blocks_removed"], block_importance=measured)
    return r.model, r.plan, report


def _measured_on(calibration: Calibration | str | None, input_shapes: Shapes) -> Inputs:
    """Where blocks are measured: the calibration .npz, else random inputs at input_shapes."""
    path = calibration.path if isinstance(calibration, Calibration) else calibration
    if path is not None and Path(path).is_dir():
        raise OnnxPruneError(f"{path}: depth pruning measures on an .npz of inputs; a folder of .npy files is not read")
    return Inputs(shapes=input_shapes, data=str(path) if path is not None else None)
