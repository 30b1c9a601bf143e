"""Measuring pruned models against the original on fixed inputs: one Measurer per process, Workers to
spread its calls over a process pool or Ray actors."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import onnx

from ..analysis.analyze import build_analysis
from ..calibration import Calibration
from ..errors import OnnxPruneError
from ..loading import prepare
from ..pipeline import run_pipeline
from ..plan import make_plan
from ..rewrite.merging import MergeOptions
from ..scoring import score_groups
from ..selection import Selection, select
from ..selection.allocate import loss_in
from ..runtime.providers import open_session
from ..validation.compare import Accuracy
from ..validation.tasks import TaskOptions
from ..validation.validate import Inputs, compare_runs, open_inputs


def _point(agreement: dict, accuracy: Accuracy | None) -> dict:
    """One ladder point: the worst output's cosine / rel L2 / top-1 agreement / embedding figures, and
    accuracy with labels."""
    outs = [a.to_json() for a in agreement.values()]
    point = {"cosine": min(o["cosine"] for o in outs), "rel_l2": max(o["rel_l2"] for o in outs)}
    for key in ("top1_agreement", "neighbour_agreement", "mean_cosine"):
        values = [o[key] for o in outs if key in o]
        if values:
            point[key] = min(values)
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
    tasks: TaskOptions | None = None  # how outputs are read (--task): an embedding's loss is its neighbours


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
        agreement, accuracy = compare_runs(self.ref, None, open_inputs(job.inputs, self.ref.session),
                                           self.reference, job.tasks)
        self.unpruned = _point(agreement, accuracy)
        self.read_as = {name: f"{a.task} ({a.why})" for name, a in agreement.items()}  # said in the output
        # what a loss is counted in: the accuracy with labels; a classifier's top-1 agreement with the
        # original (it follows accuracy where the cosine of the logits does not); an embedding's
        # neighbour agreement (an argmax over its dimensions means nothing); else the outputs' cosine
        self.metric = "accuracy" if job.inputs.labels else next(
            (m for m in ("top1_agreement", "neighbour_agreement") if m in self.unpruned), "cosine")

    def groups(self) -> list:
        """The prunable groups that have scores."""
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
        return _point(*compare_runs(self.ref, got, open_inputs(self.job.inputs, self.ref.session), self.reference,
                                    self.job.tasks))


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
        """Where the measurements run, in words."""
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
        """Shut a local process pool down (Ray actors are left to Ray)."""
        if self.pool is not None and not self.ray:
            self.pool.shutdown(cancel_futures=True)
        self.pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def keep_least(measurer, selection: Selection, name: str, candidates: dict[str, dict[str, int]], predicted: dict,
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
