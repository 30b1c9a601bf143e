"""`sensitivity`: prune each group alone at a ladder of ratios and measure what it costs."""
from __future__ import annotations

from dataclasses import asdict
from typing import Callable

from ..calibration import Calibration
from ..errors import OnnxPruneError
from ..rewrite.merging import MergeOptions
from ..validation.tasks import TaskOptions
from ..validation.validate import Inputs
from .measure import MeasureJob, Measurer, Workers

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
RANDOM_INPUTS = ("these curves come from random-noise inputs and say little about what pruning each group does on "
                 "real inputs: give --data (real inputs from your domain) for curves that mean something")


def input_warnings(description: dict) -> list[str]:
    """What the curves cannot vouch for because of the inputs they were measured on."""
    return [RANDOM_INPUTS] if description.get("source") == "random" else []


def sensitivity(model: str, ratios: tuple[float, ...] = RATIOS, criterion: str = "l1", inputs: Inputs | None = None,
                provider: str = "auto", merge: MergeOptions | None = None,
                progress: Callable[[str], None] = lambda _: None, threads: int | None = None,
                calibration: Calibration | None = None, jobs: int = 1, ray: str | None = None,
                tasks: TaskOptions | None = None) -> dict:
    """Per prunable group and ratio: remove that share of the group's lowest-ranked channels, nothing else."""
    return measure_sensitivity(model, ratios, criterion, inputs, provider, merge, progress, threads, calibration,
                               jobs, ray, tasks)[0]


def measure_sensitivity(model: str, ratios: tuple[float, ...] = RATIOS, criterion: str = "l1",
                        inputs: Inputs | None = None, provider: str = "auto", merge: MergeOptions | None = None,
                        progress: Callable[[str], None] = lambda _: None, threads: int | None = None,
                        calibration: Calibration | None = None, jobs: int = 1,
                        ray: str | None = None, tasks: TaskOptions | None = None) -> tuple[dict, "Measurer"]:
    """The sensitivity report, and the measurer that made it (it can measure a whole pruned model too).

    `inputs.seed` seeds the random inputs and the `random` criterion; `threads` sets onnxruntime's CPU
    threads; `calibration` feeds data-driven criteria and compensations. The points are independent:
    `jobs` > 1 measures them in a local process pool, `ray` ("auto" or a cluster address) on Ray; the
    model and data go to each worker once, and the results are the same whoever measures them. `tasks`
    says how outputs are read (default: auto): the metric follows (accuracy with labels, a classifier's
    top-1 agreement, an embedding's neighbour agreement, else the cosine).
    """
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise OnnxPruneError("--ratios must be fractions strictly between 0 and 1")
    if jobs < 1:
        raise OnnxPruneError("--jobs must be at least 1")
    inputs, merge = inputs or Inputs(), merge or MergeOptions()
    job = MeasureJob(model, tuple(ratios), criterion, inputs, provider, merge, threads, calibration, tasks)
    local = Measurer(job)
    groups = local.groups()
    report = {"model": str(model) if not isinstance(model, bytes) else "<ModelProto>", "criterion": criterion,
              "compensation": asdict(merge), "ratios": list(ratios),
              "metric": local.metric, "provider": local.ref.provider,
              "threads": local.ref.threads, "seed": inputs.seed,
              "inputs": local.description, "outputs": local.read_as, "warnings": input_warnings(local.description),
              "groups": []}
    if "accuracy" in local.unpruned:
        report["baseline_accuracy"] = local.unpruned["accuracy"]
    with Workers(local, jobs, ray) as workers:
        progress(f"{len(groups)} prunable groups x {len(ratios)} ratios, ranked by {criterion}, on "
                 f"{local.ref.provider} ({workers.describe()}); measured in {local.metric}, outputs read as "
                 + "; ".join(f"'{k}' {v}" for k, v in local.read_as.items()))
        results = workers.map("point", [(g.id, r) for g in groups for r in ratios])
        for i, g in enumerate(groups, 1):
            entry = {"id": g.id, "channels": g.channels, "macs_share": g.macs_share,
                     "points": [next(results) for _ in ratios]}
            report["groups"].append(entry)
            progress(f"group {i}/{len(groups)} {g.id}: {report['metric']} "
                     + " ".join(f"{p['ratio']:g}:{p[report['metric']]:.4f}" for p in entry["points"]))
    return report, local
