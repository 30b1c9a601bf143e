"""Depth pruning by measurement: how much each residual block matters (its removal alone, run in onnxruntime),
a cheap proxy (how far the block moves its input), and the removal of the least important blocks."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx

from ..analysis.analyze import build_analysis
from ..analysis.cost import count_model_cost
from ..analysis.residual import ResidualBlock, graph_blocks
from ..calibration.capture import capture_model
from ..errors import NothingToDo, OnnxPruneError
from ..loading import ModelSource, Prepared, prepare
from ..pipeline import Pruned, Shapes
from ..plan import Plan, check_depth_plan, make_depth_plan
from ..report import block_macs
from ..rewrite.depth import remove_blocks
from ..runtime.feeds import Feeds
from ..runtime.providers import Session, open_session
from ..validation.tasks import TaskOptions
from ..validation.validate import Inputs, Source, compare_runs, open_inputs

PROXY_CHUNK = 8  # blocks whose x and x + f(x) one capture run returns (bounds the tensors held at once)
AGREEMENTS = ("top1_agreement", "neighbour_agreement")
Progress = Callable[[str], None]


class NotTogether(OnnxPruneError):
    """Fewer blocks than asked can be removed together (the others lie inside the chosen ones)."""


def _quiet(_: str) -> None:
    """No progress lines."""


def runnable(model: ModelSource) -> str | bytes:
    """What onnxruntime opens: a path as given (its external data beside it), a proto serialized."""
    return model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)


def block_importance(model: ModelSource, blocks: list[ResidualBlock], inputs: Inputs | None = None,
                     provider: str = "auto", threads: int | None = None, tasks: TaskOptions | None = None,
                     input_shapes: Shapes = None, progress: Progress | None = None) -> list[dict]:
    """Per removable block, in graph order: importance = 1 - the worst output's cosine when that block alone is
    removed (and the worst top-1 / neighbour agreement where an output has one), and the proxy."""
    say = progress or _quiet
    removable = [b for b in blocks if b.removable]
    ref = open_session(runnable(model), provider, threads, arena=False)
    source = open_inputs(inputs or Inputs(shapes=input_shapes), ref.session)
    feeds = list(source.batches)
    reference = [ref.session.run(None, f) for f in feeds]
    say(f"proxy: each block's input against its output on {source.description['samples']} samples")
    proxies = block_proxies(model, removable, feeds, provider, threads)
    rows = []
    for k, b in enumerate(removable, 1):
        say(f"block {k}/{len(removable)} removed alone: {b.id}")
        pruned = remove_blocks(model, [b.id], input_shapes).SerializeToString()
        got = open_session(pruned, provider, threads, arena=False)
        agreement, _ = compare_runs(ref, got, Source(iter(feeds), None, source.description), reference, tasks)
        rows.append(_row(b, {name: a.to_json() for name, a in agreement.items()}, proxies[b.id]))
    return rows


def _cosine(figures: dict) -> float:
    """An output's cosine; -1 for outputs that are not finite (the worst there is)."""
    cos = figures["cosine"]
    return cos if figures["finite"] and math.isfinite(cos) else -1.0


def _row(block: ResidualBlock, outputs: dict[str, dict], proxy: float) -> dict:
    """One block's line of the importance table."""
    worst = min(outputs, key=lambda k: _cosine(outputs[k]))
    row = {"id": block.id, "kind": block.kind, "params": block.params,
           "importance": max(0.0, 1.0 - _cosine(outputs[worst])), "worst_output": worst, "proxy": proxy,
           "inner": list(block.inner)}
    for key in AGREEMENTS:
        values = [v[key] for v in outputs.values() if key in v]
        if values:
            row[key] = min(values)
    return row


def block_proxies(model: ModelSource, blocks: list[ResidualBlock], feeds: list[Feeds], provider: str = "auto",
                  threads: int | None = None) -> dict[str, float]:
    """Block id -> 1 - cosine(x, x + f(x)), the cosine taken per sample and averaged over every sample."""
    prep = prepare(model)
    inputs = {t.name for t in prep.graph.inputs}
    out: dict[str, float] = {}
    for start in range(0, len(blocks), PROXY_CHUNK):
        chunk = blocks[start:start + PROXY_CHUNK]
        wanted = list(dict.fromkeys(t for b in chunk for t in (b.x, b.branch_output) if t not in inputs))
        session = open_session(capture_model(prep, wanted), provider, threads, arena=False)
        cosines: dict[str, list[np.ndarray]] = {b.id: [] for b in chunk}
        for f in feeds:
            values = {**f, **_run(session, wanted, f)}
            for b in chunk:
                x = values[b.x]
                cosines[b.id].append(sample_cosines(x, x + values[b.branch_output]))
        out.update({bid: float(1.0 - np.mean(np.concatenate(c))) for bid, c in cosines.items()})
    return out


def _run(session: Session, names: list[str], feeds: Feeds) -> dict[str, np.ndarray]:
    """The named tensors for one batch (the capture model reads only some of the inputs)."""
    fed = {i.name: feeds[i.name] for i in session.session.get_inputs()}
    return dict(zip(names, session.session.run(names, fed))) if names else {}


def sample_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of a and b per sample (first axis; one value for a scalar), 1 where both are zero."""
    a = np.asarray(a, np.float64).reshape(len(a) if np.ndim(a) else 1, -1)
    b = np.asarray(b, np.float64).reshape(a.shape)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    both = na * nb
    return np.where(both > 0, dot / np.where(both > 0, both, 1.0), np.where(na == nb, 1.0, 0.0))


def drop_blocks(model: ModelSource, n: int, importance: list[dict],
                input_shapes: Shapes = None) -> tuple[onnx.ModelProto, list[str]]:
    """The model without the n least important blocks of `importance` (a block inside a chosen one is skipped;
    one that holds chosen blocks replaces them); the ids removed, in graph order."""
    order = {r["id"]: k for k, r in enumerate(importance)}
    inner = {r["id"]: set(r.get("inner", [])) for r in importance}
    chosen: list[str] = []
    for row in sorted(importance, key=lambda r: r["importance"]):  # stable: ties go in graph order
        if len(chosen) == n:
            break
        if not any(row["id"] in inner[c] for c in chosen):
            chosen = [c for c in chosen if c not in inner[row["id"]]] + [row["id"]]
    if len(chosen) < n:
        raise NotTogether(f"cannot remove {n} residual blocks: only {len(chosen)} of the {len(importance)} "
                             "measured can go together (the others lie inside them)")
    ids = sorted(chosen, key=order.__getitem__)
    return remove_blocks(model, ids, input_shapes), ids


def check_count(n: int, blocks: list[ResidualBlock], allow_noop: bool = False) -> int:
    """The number of blocks to remove: refused when negative or over the removable ones; 0 (allowed with
    allow_noop) is NothingToDo, as is a model with no removable block."""
    removable = [b for b in blocks if b.removable]
    if n < 0:
        check_range(n, blocks)
    noop = None
    if n == 0:
        noop = "--drop-blocks 0 removes no block"
    elif not blocks:
        noop = "the model has no residual block (no x + f(x) sum whose branch holds a Conv, Gemm or MatMul)"
    elif not removable:
        noop = f"none of the {len(blocks)} residual blocks can be removed (e.g. {blocks[0].reason})"
    if noop is not None:
        if allow_noop:
            return 0
        raise NothingToDo(f"nothing to prune: {noop}; --allow-noop writes the model anyway")
    return check_range(n, blocks)


def check_range(n: int, blocks: list[ResidualBlock]) -> int:
    """n, refused when negative or over the removable blocks."""
    removable = sum(b.removable for b in blocks)
    if n < 0:
        raise OnnxPruneError(f"--drop-blocks {n}: the number of blocks to remove must be 0 or more")
    if n > removable:
        raise OnnxPruneError(f"--drop-blocks {n}: the model has {removable} removable residual blocks "
                             f"(of {len(blocks)}; analyze --blocks lists them)")
    return n


def describe(inputs: Inputs | None) -> str:
    """Where importance was measured, for the report: the data file, or the random batches."""
    if inputs is not None and inputs.data:
        return str(inputs.data)
    batches = inputs.random_batches if inputs is not None else Inputs().random_batches
    return f"{batches} random batches"


def depth_prune(prep: Prepared, model: ModelSource, n: int | None = None, plan: Plan | None = None,
                inputs: Inputs | None = None, input_shapes: Shapes = None, provider: str = "auto",
                threads: int | None = None, tasks: TaskOptions | None = None, allow_noop: bool = False,
                progress: Progress | None = None, warn: Progress | None = None) -> tuple[Pruned, dict | None]:
    """Remove the n least important residual blocks of `model` (prepared as `prep`), or a depth plan's blocks:
    the result as run_pipeline gives one (no channel removed), and the importance record (None for a plan)."""
    analysis = build_analysis(prep, input_shapes)
    measured = None
    if plan is not None:
        ids = check_depth_plan(plan, analysis.sha256)
        if not ids and not allow_noop:
            raise NothingToDo("nothing to prune: the plan removes no block; --allow-noop writes the model anyway")
        pruned = remove_blocks(model, ids, input_shapes)
    else:
        blocks = graph_blocks(prep, input_shapes)
        n = check_count(n or 0, blocks, allow_noop)
        rows = importance_rows(model, analysis, blocks, inputs, input_shapes, provider, threads, tasks, progress,
                               warn) if n else []
        pruned, ids = drop_blocks(model, n, rows, input_shapes)
        measured = {"inputs": describe(inputs), "blocks": rows} if n else None
    after = count_model_cost(pruned, input_shapes)
    result = Pruned(pruned, make_depth_plan(analysis.sha256, ids), {}, None, analysis, after, None)
    return result, measured


def importance_rows(model: ModelSource, analysis, blocks: list[ResidualBlock], inputs: Inputs | None = None,
                    input_shapes: Shapes = None, provider: str = "auto", threads: int | None = None,
                    tasks: TaskOptions | None = None, progress: Progress | None = None,
                    warn: Progress | None = None) -> list[dict]:
    """block_importance with each row's branch MACs (at the analysis's shapes); a warning on random inputs."""
    if not (inputs and inputs.data) and warn is not None:
        warn("block importance is measured on random inputs (no --calib .npz or --data): the ranking says little "
             "about real inputs")
    rows = block_importance(model, blocks, inputs, provider, threads, tasks, input_shapes, progress)
    macs = {b.id: block_macs(analysis, b) for b in blocks}
    for r in rows:
        r["macs"] = macs[r["id"]]
    return rows
