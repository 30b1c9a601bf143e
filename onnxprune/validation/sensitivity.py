"""`sensitivity`: prune each group alone at a ladder of ratios and measure what it costs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import onnx

from ..analysis.analyze import build_analysis
from ..calibration import Calibration
from ..errors import OnnxPruneError
from ..api import run_pipeline
from ..loading import prepare
from ..plan import make_plan
from ..rewrite.merging import MergeOptions
from ..scoring import score_groups
from ..selection import Selection, select
from ..selection.allocate import loss_in
from .compare import Accuracy
from .providers import open_session
from .validate import Inputs, compare_runs, open_inputs

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _point(agreement: dict, accuracy: Accuracy | None) -> dict:
    """One ladder point: the worst output's cosine / rel L2 / top-1 agreement, and accuracy with labels."""
    outs = [a.to_json() for a in agreement.values()]
    point = {"cosine": min(o["cosine"] for o in outs), "rel_l2": max(o["rel_l2"] for o in outs)}
    top1 = [o["top1_agreement"] for o in outs if "top1_agreement" in o]
    if top1:
        point["top1_agreement"] = min(top1)
    if accuracy is not None:
        point["accuracy"] = accuracy.to_json()["pruned"]
    return point


@dataclass
class MeasureJob:
    """What every measurement needs, shipped to each worker once."""

    model: str | bytes
    ratios: tuple[float, ...]
    criterion: str
    inputs: Inputs
    provider: str
    merge: MergeOptions
    threads: int | None
    calibration: Calibration | None


class Measurer:
    """Loads the model, scores and reference outputs once; measures one (group, ratio) point per call."""

    def __init__(self, job: MeasureJob):
        self.job = job
        # a path is read again by each prune (it may be big); bytes are parsed once, prepare copies them
        self.source = onnx.load_model_from_string(job.model) if isinstance(job.model, bytes) else job.model
        self.prep = prepare(self.source)
        self.analysis = build_analysis(self.prep, job.inputs.shapes)
        self.scores = score_groups(self.prep, self.analysis, job.criterion, seed=job.inputs.seed,
                                   calibration=job.calibration, provider=job.provider)
        self.ref = open_session(job.model if isinstance(job.model, bytes) else str(job.model), job.provider,
                                job.threads)
        inputs = open_inputs(job.inputs, self.ref.session)
        self.description = inputs.description
        self.reference = [self.ref.session.run(None, f) for f in inputs.batches]
        self.unpruned = _point(*compare_runs(self.ref, None, open_inputs(job.inputs, self.ref.session),
                                             self.reference))
        # what a loss is counted in: the accuracy with labels; a classifier's top-1 agreement with the
        # original (it follows accuracy where the cosine of the logits does not); else the outputs' cosine
        self.metric = "accuracy" if job.inputs.labels else \
            "top1_agreement" if "top1_agreement" in self.unpruned else "cosine"

    def groups(self) -> list:
        return [g for g in self.analysis.prunable if g.id in self.scores]

    def point(self, gid: str, ratio: float) -> dict:
        """The group alone with `ratio` of its lowest-ranked channels removed, compensated as prune would."""
        removed = select(self.analysis, {gid: self.scores[gid]}, Selection(ratio=ratio))
        point = {"ratio": ratio, "removed": len(removed.get(gid, [])), **self.unpruned}
        if point["removed"]:
            point.update(self.measure(self.prune(removed)))
        return point

    def prune(self, removed: dict[str, list[int]], merge: MergeOptions | None = None) -> onnx.ModelProto:
        """The model with these channels removed, compensated as the job says (or as `merge` says)."""
        job = self.job
        plan = make_plan(self.analysis, removed, criterion=job.criterion)
        return run_pipeline(prepare(self.source), job.inputs.shapes, plan=plan, merge=merge or job.merge,
                            calibration=job.calibration, provider=job.provider).model

    def loss_at(self, counts: dict[str, int], selection: Selection) -> float:
        """The loss of the model pruned to per-group removal counts (under `selection`'s guards), compensated."""
        return self.loss(self.prune(select(self.analysis, self.scores, replace(selection, counts=counts))))

    def loss(self, model: onnx.ModelProto) -> float:
        """What allocation minimises, in the measurer's metric (see loss_in)."""
        return loss_in(self.metric, self.measure(model), self.unpruned.get("accuracy"))

    def measure(self, model: onnx.ModelProto) -> dict:
        """The figures of a whole pruned model on the same inputs, against the same reference."""
        got = open_session(model.SerializeToString(), self.job.provider, self.job.threads)
        return _point(*compare_runs(self.ref, got, open_inputs(self.job.inputs, self.ref.session), self.reference))


_WORKER: Measurer | None = None


def _init_worker(job: MeasureJob) -> None:
    global _WORKER
    _WORKER = Measurer(job)


def _work(task: tuple[str, tuple]) -> object:
    return getattr(_WORKER, task[0])(*task[1])


def _from_ray(results: Iterator) -> Iterator:
    """Ray's results; a worker's failure (a data path other nodes cannot read...) as one line."""
    try:
        yield from results
    except OnnxPruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error in its own types
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise OnnxPruneError(f"a Ray worker failed: {lines[-1] if lines else type(exc).__name__} (the model is "
                             "shipped; --data/--calib files must be readable at the same path on every node)") \
            from None


class Workers:
    """Where measurements run: this process, a local process pool (`jobs` > 1) or Ray actors (`ray`),
    each worker's Measurer built once from the job; `map` gives results in task order."""

    def __init__(self, local: Measurer, jobs: int = 1, ray: str | None = None):
        self.local, self.jobs, self.ray = local, jobs, ray
        self.pool = None

    def describe(self) -> str:
        return "Ray" if self.ray else f"{self.jobs} processes" if self.jobs > 1 else "this process"

    def map(self, method: str, tasks: list[tuple]) -> Iterator:
        """`Measurer.method(*task)` for every task, in order."""
        if self.ray:
            return _from_ray(self._ray_pool().map(lambda actor, t: getattr(actor, method).remote(*t), tasks))
        if self.jobs > 1:
            if self.pool is None:
                from concurrent.futures import ProcessPoolExecutor
                import multiprocessing

                self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker, initargs=(self.local.job,))
            return self.pool.map(_work, [(method, t) for t in tasks])
        return (getattr(self.local, method)(*t) for t in tasks)

    def _ray_pool(self):
        """One actor per CPU of the cluster, each built once from the job put in the object store."""
        if self.pool is None:
            try:
                import ray
            except ImportError:
                raise OnnxPruneError("--ray needs Ray: pip install 'onnxprune[ray]'") from None
            if not ray.is_initialized():
                ray.init(address=None if self.ray == "local" else self.ray, ignore_reinit_error=True,
                         log_to_driver=False, include_dashboard=False)
            job = self.local.job
            if isinstance(job.model, (str, Path)) and not self.local.prep.external_data:
                job = replace(job, model=Path(job.model).read_bytes())  # other nodes need not see the file
            shipped = ray.put(job)
            actor = ray.remote(num_cpus=1)(Measurer)
            self.pool = ray.util.ActorPool([actor.remote(shipped)
                                            for _ in range(max(1, int(ray.available_resources().get("CPU", 1))))])
        return self.pool

    def close(self) -> None:
        if self.pool is not None and not self.ray:
            self.pool.shutdown(cancel_futures=True)
        self.pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sensitivity(model: str, ratios: tuple[float, ...] = RATIOS, criterion: str = "l1", inputs: Inputs | None = None,
                provider: str = "auto", merge: MergeOptions | None = None,
                progress: Callable[[str], None] = lambda _: None, threads: int | None = None,
                calibration: Calibration | None = None, jobs: int = 1, ray: str | None = None) -> dict:
    """Per prunable group and ratio: remove that share of the group's lowest-ranked channels, nothing else."""
    return measure_sensitivity(model, ratios, criterion, inputs, provider, merge, progress, threads, calibration,
                               jobs, ray)[0]


def measure_sensitivity(model: str, ratios: tuple[float, ...] = RATIOS, criterion: str = "l1",
                        inputs: Inputs | None = None, provider: str = "auto", merge: MergeOptions | None = None,
                        progress: Callable[[str], None] = lambda _: None, threads: int | None = None,
                        calibration: Calibration | None = None, jobs: int = 1,
                        ray: str | None = None) -> tuple[dict, "Measurer"]:
    """The sensitivity report, and the measurer that made it (it can measure a whole pruned model too).

    `inputs.seed` seeds the random inputs and the `random` criterion; `threads` sets onnxruntime's CPU
    threads; `calibration` feeds data-driven criteria and compensations. The points are independent:
    `jobs` > 1 measures them in a local process pool, `ray` ("auto" or a cluster address) on Ray; the
    model and data go to each worker once, and the results are the same whoever measures them.
    """
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise OnnxPruneError("--ratios must be fractions strictly between 0 and 1")
    if jobs < 1:
        raise OnnxPruneError("--jobs must be at least 1")
    inputs, merge = inputs or Inputs(), merge or MergeOptions()
    job = MeasureJob(model, tuple(ratios), criterion, inputs, provider, merge, threads, calibration)
    local = Measurer(job)
    groups = local.groups()
    report = {"model": str(model) if not isinstance(model, bytes) else "<ModelProto>", "criterion": criterion,
              "compensation": asdict(merge), "ratios": list(ratios),
              "metric": local.metric, "provider": local.ref.provider,
              "threads": local.ref.threads, "seed": inputs.seed,
              "inputs": local.description, "groups": []}
    if "accuracy" in local.unpruned:
        report["baseline_accuracy"] = local.unpruned["accuracy"]
    with Workers(local, jobs, ray) as workers:
        progress(f"{len(groups)} prunable groups x {len(ratios)} ratios, ranked by {criterion}, on "
                 f"{local.ref.provider} ({workers.describe()})")
        results = workers.map("point", [(g.id, r) for g in groups for r in ratios])
        for i, g in enumerate(groups, 1):
            entry = {"id": g.id, "channels": g.channels, "macs_share": g.macs_share,
                     "points": [next(results) for _ in ratios]}
            report["groups"].append(entry)
            progress(f"group {i}/{len(groups)} {g.id}: {report['metric']} "
                     + " ".join(f"{p['ratio']:g}:{p[report['metric']]:.4f}" for p in entry["points"]))
    return report, local


def pyplot():
    """matplotlib's pyplot on a file backend; a clear error when the optional extra is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxPruneError("--plot needs matplotlib: pip install 'onnxprune[plot]'") from None
    return plt


def plot_sensitivity(report: dict, path: str | Path) -> None:
    """One curve per group: the report's metric against the ratio removed (needs matplotlib)."""
    plt = pyplot()
    metric = report["metric"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, g in enumerate(report["groups"]):  # colours repeat every 10 curves: change the line style with them
        ax.plot([p["ratio"] for p in g["points"]], [p[metric] for p in g["points"]], marker="o", lw=1, ms=3,
                ls=("-", "--", ":", "-.")[i // 10 % 4], label=g["id"][:32])
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel({"accuracy": "test accuracy", "top1_agreement": "top-1 agreement with the original"}.get(
        metric, "output cosine similarity (worst output)"))
    ax.set_title(f"{Path(report['model']).name}: per-group sensitivity ({report['criterion']})")
    ax.grid(alpha=0.3)
    if len(report["groups"]) <= 30:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_allocation(allocation: dict | None, speed: dict | None, path: str | Path) -> None:
    """The allocation (kept share of each group, in graph order) and the speed search's trade-off curve."""
    plt = pyplot()
    panels = [x for x in (allocation, speed) if x]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    axes = list(axes[0])
    if allocation:
        ax = axes.pop(0)
        groups = list(allocation["groups"].values())
        ax.bar(range(len(groups)), [1 - g["ratio"] for g in groups], color="tab:blue")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([gid[-20:] for gid in allocation["groups"]], rotation=60, ha="right", fontsize=6)
        ax.set_xlabel("prunable group, in graph order")
        ax.set_ylabel("share of channels kept")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"allocation by {allocation.get('allocation', 'sensitivity')}: predicted loss {allocation['predicted_loss']:.3f}, "
                     f"measured {allocation.get('measured_loss', float('nan')):.3f}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if speed:
        ax = axes.pop(0)
        steps = sorted((st for st in speed["steps"] if "speedup" in st), key=lambda st: st["target_macs"])
        ax.plot([st["target_macs"] for st in steps], [st["speedup"] for st in steps], marker="o", label="measured")
        if steps and "predicted_speedup" in steps[0]:  # the latency model's rounds: what it predicted too
            ax.plot([st["target_macs"] for st in steps], [st["predicted_speedup"] for st in steps], marker="x",
                    ls="none", color="tab:gray", label="latency model")
        ax.axhline(speed["target_speedup"], color="tab:red", ls="--", lw=1, label="target")
        ax.set_xlabel("fraction of MACs removed")
        ax.set_ylabel("measured speed-up")
        ax.set_title(f"speed search on {speed['provider']}, batch {speed['batch']}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
