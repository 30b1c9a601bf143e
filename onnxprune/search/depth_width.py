"""Depth and width together: the least important residual blocks removed first, then channels of what is left
(prune --drop-blocks N with --ratio or a target); and, for one target, the measured choice between the two
(--depth): k = 0, 1, 2... blocks removed, each completed to the target by channels, the least loss kept."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import onnx

from ..analysis.analyze import Analysis, build_analysis
from ..analysis.cost import Cost, count_model_cost
from ..analysis.residual import graph_blocks
from ..errors import OnnxPruneError
from ..loading import ModelSource, Prepared
from ..pipeline import Pruned, Shapes, default_options
from ..plan import Plan, channel_part, is_depth_plan, join_plans, make_depth_plan
from ..validation.bench import bench
from ..validation.tasks import TaskOptions
from ..validation.validate import Inputs
from .allocation import _LOSS
from .depth import (NotTogether, Progress, _quiet, check_range, depth_prune, describe, drop_blocks, importance_rows,
                    runnable)
from .measure import MeasureJob, Measurer
from .stopwatch import SpeedTarget

# (the model file without the blocks, the target it must reach: target_macs / target_params / target_speedup...)
# -> its channels pruned as a plain prune would
Width = Callable[[str, dict], Pruned]
BIG = 2**31 - 2**26  # a model this big is written with its weights beside it (protobuf's 2 GB limit)


@dataclass
class Goal:
    """What the whole prune must reach, counted against the original: a share of its MACs or parameters to remove,
    or a speed (timed); none of them for --ratio (the channel step then prunes what is left by the ratio)."""

    macs: float | None = None
    params: float | None = None
    speed: SpeedTarget | None = None

    def describe(self) -> str:
        """The target as the command line says it."""
        if self.macs is not None:
            return f"--target-macs {self.macs:g}"
        if self.params is not None:
            return f"--target-params {self.params:g}"
        if self.speed is not None and self.speed.speedup is not None:
            return f"--target-speedup {self.speed.speedup:g}"
        return f"--target-latency {self.speed.latency_ms:g}" if self.speed is not None else "--ratio"


@dataclass
class Deep:
    """A prune that may have removed blocks, then channels: `pruned` holds the final model and the joint plan (its
    removed channels, scores and analysis are those of the model without the blocks)."""

    pruned: Pruned
    original: Analysis
    blocks: list[str]
    after_blocks: Cost
    importance: dict | None = None  # the blocks measured (None for a replay)
    choice: dict | None = None  # --depth: every candidate and the one kept


@dataclass
class Setting:
    """Where blocks are measured and candidates compared, and how they are run."""

    inputs: Inputs | None = None
    shapes: Shapes = None
    provider: str = "auto"
    threads: int | None = None
    tasks: TaskOptions | None = None
    progress: Progress = _quiet
    warn: Progress | None = None


def depth_mode(plan: Plan | None, drop_blocks: int | None, depth: bool, max_blocks: int | None, widths: list[str],
               channel_flags: list[str]) -> str:
    """What a prune does: 'width' (channels), 'blocks' (blocks alone), 'both' (blocks, then channels) or 'choose'
    (--depth), from the flags given (`widths`: --ratio and the targets; `channel_flags`: the other channel options);
    what cannot combine is refused in one line."""
    if max_blocks is not None and not depth:
        raise OnnxPruneError("--max-blocks is read by --depth only")
    if plan is not None and (drop_blocks is not None or depth):
        raise OnnxPruneError("--plan replays the blocks and channels it records: drop --drop-blocks and --depth")
    if depth and drop_blocks is not None:
        raise OnnxPruneError("--depth chooses how many blocks to remove: give --drop-blocks N or --depth, not both")
    if depth:
        if not widths or widths == ["--ratio"]:
            raise OnnxPruneError("--depth chooses between blocks and channels for a target: add --target-macs, "
                                 "--target-params, --target-speedup or --target-latency")
        return "choose"
    if plan is not None:
        return "width" if not is_depth_plan(plan) else "both" if plan.get("groups") else "blocks"
    if drop_blocks is None and not widths:
        raise OnnxPruneError("one of the arguments --plan --ratio --target-macs --target-params --target-speedup "
                             "--target-latency --drop-blocks is required (see onnxprune prune --help)")
    if drop_blocks is not None and not widths and channel_flags:
        raise OnnxPruneError(f"{channel_flags[0]} is a channel-pruning option, and --drop-blocks N alone removes no "
                             "channel: add --ratio or a target to prune channels of what is left")
    return "width" if drop_blocks is None else "both" if widths else "blocks"


def remaining(goal: Goal, before: Cost, after: Cost, blocks_speedup: float = 1.0,
              base_ms: float | None = None) -> dict | None:
    """What the channel step must reach on the model without the blocks for the whole to meet the goal; None when
    the blocks alone meet it. A speed is the blocks' measured speed-up times the channel step's."""
    if goal.macs is not None or goal.params is not None:
        key, want = ("target_macs", goal.macs) if goal.macs is not None else ("target_params", goal.params)
        total, left = (before.macs, after.macs) if key == "target_macs" else (before.params, after.params)
        share = left / max(total, 1)
        return None if share <= 1 - want else {key: round(1 - (1 - want) / share, 6)}
    if goal.speed is None:
        return {}
    if base_ms is None:  # no block removed (nothing timed): the target as given
        return {"target_speedup": goal.speed.speedup, "target_latency": goal.speed.latency_ms}
    want = goal.speed.speedup if goal.speed.speedup is not None else base_ms / goal.speed.latency_ms
    return None if blocks_speedup >= want else {"target_speedup": round(want / blocks_speedup, 4),
                                                "target_latency": None}


def deepen(prep: Prepared, model: ModelSource, n: int, goal: Goal, width: Width, setting: Setting) -> Deep:
    """--drop-blocks N with a width option: the N least important blocks removed, then channels to the goal."""
    analysis = build_analysis(prep, setting.shapes)
    blocks = graph_blocks(prep, setting.shapes)
    n = check_range(n, blocks)
    rows = _measure(model, analysis, blocks, setting) if n else []
    with tempfile.TemporaryDirectory(prefix="onnxprune-depth-") as folder:
        deep, record = candidate(model, analysis, rows, n, goal, width, setting, Path(folder))
    if record.get("blocks_alone") and setting.warn is not None:
        setting.warn(f"the {n} blocks alone remove {record['blocks_macs_removed']:.1%} of MACs and meet "
                     f"{goal.describe()}: no channel removed")
    deep.importance = {"inputs": describe(setting.inputs), "blocks": rows} if rows else None
    return deep


def choose_depth(prep: Prepared, model: ModelSource, goal: Goal, width: Width, setting: Setting,
                 max_blocks: int | None = None) -> Deep:
    """--depth: candidates of k = 0, 1, 2... blocks removed (least important first), each completed to the goal by
    channels, measured on the inputs against the original; the least loss is kept (fewer blocks on a tie). Blocks
    stop being added when they alone meet the goal, when none is left (or none can go with those chosen) or at
    max_blocks."""
    if max_blocks is not None and max_blocks < 0:
        raise OnnxPruneError(f"--max-blocks {max_blocks}: give 0 or more")
    analysis = build_analysis(prep, setting.shapes)
    blocks = graph_blocks(prep, setting.shapes)
    limit = min(sum(b.removable for b in blocks), max_blocks if max_blocks is not None else len(blocks))
    rows = _measure(model, analysis, blocks, setting) if limit else []
    judge, choice = _judge(model, goal, setting)
    best: tuple[Deep, float] | None = None
    errors: list[OnnxPruneError] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-depth-") as folder:
        for k in range(limit + 1):
            try:
                deep, record = candidate(model, analysis, rows, k, goal, width, setting, Path(folder))
            except NotTogether:  # the blocks left lie inside blocks already chosen
                break
            except OnnxPruneError as exc:
                errors.append(exc)
                choice["candidates"].append({"blocks": k, "error": str(exc)})
                setting.progress(f"depth candidate {k} blocks: {exc}")
                continue
            record["loss"] = round(judge.loss(deep.pruned.model), 6)
            choice["candidates"].append(record)
            what = f"channels to {record['width_target']}" if "width_target" in record else "no channel"
            setting.progress(f"depth candidate {k} blocks ({record['blocks_macs_removed']:.1%} of MACs) + {what}: "
                             f"loss {record['loss']:.4f}")
            if best is None or record["loss"] < best[1]:
                best = (deep, record["loss"])
            if record.get("blocks_alone"):
                break
    if best is None:
        raise type(errors[-1])(f"--depth: no candidate meets {goal.describe()} ({errors[-1]})")
    return _kept(best[0], choice, rows, setting)


def _judge(model: ModelSource, goal: Goal, setting: Setting) -> tuple[Measurer, dict]:
    """What measures candidates against the original (the loss --allocate sensitivity counts), and the record."""
    judge = Measurer(MeasureJob(runnable(model), (), "l1", setting.inputs or Inputs(shapes=setting.shapes),
                                setting.provider, default_options("l1"), setting.threads, None, setting.tasks))
    where = judge.description
    return judge, {"target": goal.describe(), "metric": judge.metric, "loss": _LOSS[judge.metric],
                   "inputs": f"{where.get('samples')} samples of {where['source']}" if "source" in where
                   else str(where), "candidates": []}


def _kept(deep: Deep, choice: dict, rows: list[dict], setting: Setting) -> Deep:
    """The candidate kept, with the choice recorded in it and in its plan."""
    choice["kept"] = len(deep.blocks)
    deep.choice = choice
    deep.importance = {"inputs": describe(setting.inputs), "blocks": rows} if rows else None
    deep.pruned.plan = {**{k: v for k, v in deep.pruned.plan.items() if k != "groups"}, "depth_choice": choice,
                        "groups": deep.pruned.plan["groups"]}
    return deep


def _measure(model: ModelSource, analysis: Analysis, blocks: list, setting: Setting) -> list[dict]:
    """Every removable block's importance (its removal alone, measured), with its branch MACs."""
    return importance_rows(model, analysis, blocks, setting.inputs, setting.shapes, setting.provider, setting.threads,
                           setting.tasks, setting.progress, setting.warn)


def candidate(model: ModelSource, analysis: Analysis, rows: list[dict], k: int, goal: Goal, width: Width,
              setting: Setting, folder: Path) -> tuple[Deep, dict]:
    """The k least important blocks removed, then channels to the goal on what is left; and the candidate's record."""
    shallow, ids = drop_blocks(model, k, rows, setting.shapes) if k else (None, [])
    after = count_model_cost(shallow, setting.shapes) if k else analysis.cost
    record = {"blocks": k, "ids": ids, "blocks_macs_removed": round(1 - after.macs / max(analysis.cost.macs, 1), 6),
              "blocks_params_removed": round(1 - after.params / max(analysis.cost.params, 1), 6)}
    speedup, base_ms = 1.0, None
    if goal.speed is not None and k:
        speedup, base_ms = _timed(model, shallow, goal.speed, setting.shapes)
        record["blocks_speedup"] = round(speedup, 4)
    asked = remaining(goal, analysis.cost, after, speedup, base_ms)
    if asked is None:  # the blocks alone meet the goal
        record.update(blocks_alone=True, macs_removed=record["blocks_macs_removed"])
        pruned = Pruned(shallow, make_depth_plan(analysis.sha256, ids), {}, None, analysis, after, None)
        return Deep(pruned, analysis, ids, after), record
    path = _file(shallow, folder, k) if k else _source(model, folder)
    r = width(path, asked)
    given = [f"--{key.replace('_', '-')} {v:g}" for key, v in asked.items() if v is not None]
    record["width_target"] = ", ".join(given) or "the ratio"
    record["macs_removed"] = round(1 - r.after.macs / max(analysis.cost.macs, 1), 6)
    if k:
        r.plan = join_plans(analysis.sha256, ids, r.plan)
    return Deep(r, analysis, ids, after), record


def _timed(model: ModelSource, shallow: onnx.ModelProto, speed: SpeedTarget, shapes: Shapes) -> tuple[float, float]:
    """The speed-up of the model without the blocks over the original, timed interleaved; the original's ms."""
    report = bench([runnable(model), shallow.SerializeToString()], (speed.batch,) if speed.batch else (),
                   max(speed.warmup, 3), max(speed.runs, 20), speed.provider, speed.threads, shapes)
    entry = next(iter(report["batches"].values()))
    return float(entry["speedup"]), float(entry["models"][0]["median_ms"])


def _file(model: onnx.ModelProto, folder: Path, k: int) -> str:
    """The model written into the folder (its weights beside it when it is big), for the channel step to read."""
    path = folder / f"without_{k}_blocks.onnx"
    if model.ByteSize() > BIG:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save(copy, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        path.write_bytes(model.SerializeToString())
    return str(path)


def _source(model: ModelSource, folder: Path) -> str:
    """The original as a file: its own path, or the proto written."""
    return _file(model, folder, 0) if isinstance(model, onnx.ModelProto) else str(model)


def replay(prep: Prepared, model: ModelSource, plan: Plan, shapes: Shapes,
           width: Callable[[onnx.ModelProto, Plan], Pruned]) -> Deep:
    """A joint plan replayed: its blocks removed, then its channels (by `width`, on the model without the blocks)."""
    blocks, _ = depth_prune(prep, model, plan=plan, input_shapes=shapes, allow_noop=True)
    ids = blocks.plan["blocks_removed"]
    if not plan.get("groups"):
        return Deep(blocks, blocks.analysis, ids, blocks.after)
    r = width(blocks.model, channel_part(plan))
    r.plan = dict(plan)
    return Deep(r, blocks.analysis, ids, count_model_cost(blocks.model, shapes))


def with_target(selection, asked: dict):
    """The selection with the channel step's MAC or parameter target."""
    keys = {k: v for k, v in asked.items() if k in ("target_macs", "target_params")}
    return replace(selection, **keys) if keys else selection
