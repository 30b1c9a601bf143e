"""`validate`: run the original and the pruned model on the same inputs and measure how far apart they are."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import OnnxPruneError
from .compare import Accuracy, OutputAgreement, is_classifier
from .tasks import LABELS, SHAPES, TaskOptions, task_warnings
from ..runtime.feeds import Feeds, check_data, data_batches, input_dims, load_arrays, load_labels, random_inputs, session_inputs
from ..runtime.providers import Session, open_session

ModelBytes = str | bytes  # a path or serialized model, as onnxruntime takes it
AUTO_BATCH, AUTO_BATCH_BYTES = 32, 8 << 20  # by size: at most 32 samples, at most ~8 MiB of inputs a batch


class GateFailed(OnnxPruneError):
    """The pruned model fell below a --max-drop / --min-cosine bar (exit code 1, not 2)."""


@dataclass
class Inputs:
    """Where validation inputs come from: random at `shapes`, or a data file (with labels)."""

    shapes: dict[str, tuple[int, ...]] | None = None  # fixes dynamic dims of random inputs
    data: str | None = None  # .npz of arrays named after the inputs, first axis = samples
    labels: str | None = None  # .npy / .npz of integer labels, one per sample
    batch: int | None = None  # batch size for data (a static batch dim wins); None: by size (auto_batch)
    random_batches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.labels and not self.data:
            raise OnnxPruneError("--labels needs --data: labels belong to given inputs, not random ones")
        if (self.batch is not None and self.batch < 1) or self.random_batches < 1:
            raise OnnxPruneError("batch size and batch count must be at least 1")


@dataclass
class Source:
    """The batches of one run over the inputs, and the labels that go with them."""

    batches: Iterator[Feeds]
    labels: np.ndarray | None
    description: dict


def open_inputs(inputs: Inputs, session) -> Source:
    """Batches for this session's inputs: the data file's, or seeded random ones."""
    specs, dtypes = session_inputs(session)
    if inputs.data:
        arrays = load_arrays(inputs.data)
        if "" in arrays and len(specs) == 1:  # a single .npy for a single-input model
            arrays = {specs[0][0]: arrays.pop("")}
        n = check_data(arrays, specs, dtypes)
        batch = inputs.batch or auto_batch(arrays, specs, dtypes)
        batches = data_batches(arrays, specs, dtypes, batch)
        labels = load_labels(inputs.labels, n) if inputs.labels else None
        sample = {name: [1, *arrays[name].shape[1:]] for name, _ in specs}  # MACs are counted per sample here
        return Source(batches, labels, {"source": str(inputs.data), "samples": n, "sample_shapes": sample})
    dims = input_dims(specs, inputs.shapes)
    batches = (random_inputs(dtypes, dims, inputs.seed + k) for k in range(inputs.random_batches))
    n = inputs.random_batches * min((d[0] for d in dims.values() if d), default=1)
    return Source(batches, None, {"source": "random", "batches": inputs.random_batches, "samples": n,
                                  "shapes": {k: list(v) for k, v in dims.items()}})


def auto_batch(arrays: dict[str, np.ndarray], specs, dtypes: dict[str, np.dtype]) -> int:
    """The batch size for data when none is given: AUTO_BATCH, fewer where a batch's inputs pass AUTO_BATCH_BYTES.

    onnxruntime's buffers for a run grow with the batch (at 3x320x320, batches of 32 took ~1 GB): big
    inputs go in smaller batches, which give the same figures.
    """
    per_sample = sum(int(np.prod(arrays[n].shape[1:], dtype=np.int64)) * np.dtype(dtypes[n]).itemsize for n, _ in specs)
    return max(1, min(AUTO_BATCH, AUTO_BATCH_BYTES // max(per_sample, 1)))


def compare_runs(original: Session, pruned: Session | None, source: Source,
                 reference: list[list[np.ndarray]] | None = None,
                 tasks: TaskOptions | None = None) -> tuple[dict[str, OutputAgreement], Accuracy | None]:
    """Run both models batch by batch (the original's outputs may be given, from an earlier pass).

    With no pruned model the original is compared with itself: the unpruned point, at no extra run.
    """
    tasks = tasks or TaskOptions()
    names = [o.name for o in original.session.get_outputs()]
    unknown = sorted(set(tasks.blocks) - set(names))
    if unknown:
        raise OnnxPruneError(f"--blocks names output '{unknown[0]}', which the model does not have "
                             f"(it has {', '.join(names)})")
    agreement = {n: OutputAgreement(tasks, tasks.blocks.get(n, ()), n) for n in names}
    accuracy = Accuracy() if source.labels is not None else None
    start = 0
    for k, feeds in enumerate(source.batches):
        want = reference[k] if reference is not None else original.session.run(None, feeds)
        try:
            got = want if pruned is None else pruned.session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
            raise OnnxPruneError(f"the pruned model does not run: {str(exc).splitlines()[0]}") from None
        for name, a, b in zip(names, want, got):
            try:
                agreement[name].add(a, b)
            except ValueError as exc:
                raise OnnxPruneError(f"output '{name}': {exc}") from None
        if accuracy is not None:
            logits = [i for i, a in enumerate(want) if is_classifier(a.shape, a.dtype)]
            if not logits:
                raise OnnxPruneError("--labels needs a classifier-shaped output ([batch, classes])")
            n = len(want[logits[0]])
            accuracy.add(want[logits[0]], got[logits[0]], source.labels[start:start + n])
            start += n
        if k == 0:
            _check_task(tasks.task, agreement)
    return agreement, accuracy


def _check_task(asked: str, agreement: dict[str, OutputAgreement]) -> None:
    """An explicit --task that fits none of the outputs is refused (auto always fits)."""
    if asked != "auto" and not any(a.task == asked for a in agreement.values()):
        raise OnnxPruneError(f"--task {asked} reads outputs shaped {SHAPES[asked]}, and this model has none ("
                             + ", ".join(f"'{k}' is {'x'.join(map(str, a.shape))}" for k, a in agreement.items())
                             + "); --task auto picks per output")


def validate(original: ModelBytes, pruned: ModelBytes, inputs: Inputs | None = None, provider: str = "auto",
             threads: int | None = None, tasks: TaskOptions | None = None) -> dict:
    """Fidelity (and accuracy, with labels) of `pruned` against `original`, on the provider that really ran.

    `tasks` says how each output is read (--task, --iou-threshold, --blocks; default: auto per output).
    """
    inputs = inputs or Inputs()
    ref = open_session(original, provider, threads, arena=False)
    got = open_session(pruned, provider, threads, arena=False)
    source = open_inputs(inputs, ref.session)
    agreement, accuracy = compare_runs(ref, got, source, tasks=tasks)
    report = {"provider": ref.provider, "threads": ref.threads, "inputs": source.description,
              "outputs": {k: v.to_json() for k, v in agreement.items()}}
    if ref.note:
        report["provider_note"] = ref.note
    if accuracy is not None:
        report["accuracy"] = accuracy.to_json()
    report["warnings"] = warnings(report)
    return report


WARN_COSINE = 0.9  # with no bar set, an output below this cosine gets a warning


def warnings(report: dict) -> list[str]:
    """What the figures cannot vouch for, or what they show is wrong, when no gate was asked for."""
    out = []
    if report["inputs"]["source"] == "random":
        out.append("these figures come from random-noise inputs and say little about accuracy: give --data "
                   "(or --calib) with inputs from your domain")
    for k, v in report["outputs"].items():
        if not v["cosine"] >= WARN_COSINE:
            out.append(f"output '{k}' cosine {v['cosine']:.4f} is below {WARN_COSINE}: the pruned model's outputs "
                       "differ a lot from the original's")
        out += [f"output '{k}' channels {b} cosine {f['cosine']:.4f} is below {WARN_COSINE}"
                for b, f in v.get("blocks", {}).items() if not f["cosine"] >= WARN_COSINE]
        out += task_warnings(k, v)
    return out


def gate_failures(report: dict, max_drop: float | None = None, min_cosine: float | None = None) -> list[str]:
    """Why the pruned model is below the bar ([] when it passes or no bar is set).

    --max-drop is in percentage points: of accuracy against labels when there are labels, else of
    top-1 agreement with the original (100 - agreement %), or for an embedding of neighbour agreement.
    """
    fails = []
    if max_drop is None and min_cosine is None:
        return fails
    outputs = report["outputs"]
    fails += [f"output '{k}' is not finite" for k, v in outputs.items() if not v["finite"]]
    if min_cosine is not None:
        fails += [f"output '{k}' cosine {v['cosine']:.6f} < {min_cosine}" for k, v in outputs.items()
                  if not v["cosine"] >= min_cosine]
    if max_drop is not None:
        if "accuracy" in report:
            drop = report["accuracy"]["drop_points"]
            if drop > max_drop:
                fails.append(f"accuracy drop {drop:.2f} points > {max_drop}")
        else:
            agree = {(k, key): v[key] for k, v in outputs.items() for key in ("top1_agreement", "neighbour_agreement")
                     if key in v}
            if not agree:
                raise OnnxPruneError("--max-drop needs --labels, a classifier-shaped output ([batch, classes]) or an "
                                     "embedding ([batch, D], --task embedding) of more than one sample")
            fails += [f"output '{k}' {LABELS[key]} {a:.2%} is {100 - a * 100:.2f} points below 100% (> {max_drop})"
                      for (k, key), a in agree.items() if (1 - a) * 100 > max_drop]
    return fails


def _task_figures(v: dict) -> str:
    """': top-1 agreement 98.00%, ...' for an output's task figures ('' for plain outputs)."""
    shown = {**LABELS, "top5_agreement": "top-5 agreement", "position_agreement": "per-position argmax agreement",
             "pixel_argmax_agreement": "per-pixel argmax agreement"}
    parts = [f"{label} {v[key]:.2%}" for key, label in shown.items() if key in v]
    if v["task"] == "embedding":
        parts.append(f"cosine per sample mean {v['mean_cosine']:.4f}, min {v['min_cosine']:.4f}"
                     + (f"; the {v['neighbours']} nearest of {v['samples']} samples" if "neighbours" in v else ""))
    if v["task"] == "dense":
        parts.append(f"mask at > {v['iou_threshold']:g} on {v['values']}, {v['mask_share_original']:.1%} of the "
                     "original's values in it")
    if v["task"] == "sequence":
        parts.append(f"greedy CTC, blank 0; {v['empty_original']} of {v['sequences']} original sequences empty")
    return (": " + ", ".join(parts)) if parts else ""


def validation_lines(report: dict) -> str:
    """What the CLI prints for a validation report."""
    src = report["inputs"]
    head = (f"validation on {report['provider']} ({report['threads']} threads), {src['samples']} samples from "
            f"{src['source']}" + (" at " + ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in src["shapes"].items())
                                 if "shapes" in src else ""))
    lines = [head] + ([f"note: {report['provider_note']}"] if "provider_note" in report else [])
    for name, v in report["outputs"].items():
        lines.append(f"  {name}: max |diff| {v['max_abs']:.3g}, rel L2 {v['rel_l2']:.3g}, cosine {v['cosine']:.6f}"
                     + ("" if v["finite"] else ", NOT FINITE"))
        task = "no task figures" if v["task"] == "none" else v["task"]
        lines.append(f"    {task} ({v['task_why']})" + _task_figures(v))
        lines += [f"    channels {b}: max |diff| {f['max_abs']:.3g}, rel L2 {f['rel_l2']:.3g}, cosine {f['cosine']:.6f}"
                  for b, f in v.get("blocks", {}).items()]
    if "accuracy" in report:
        a = report["accuracy"]
        change = round(-a["drop_points"], 2) + 0.0  # signed as accuracy moved (-0.80: a drop); + 0.0: no "-0.00"
        lines.append(f"  accuracy {a['original']:.2%} -> {a['pruned']:.2%} ({change:+.2f} points, "
                     f"{a['samples']} labelled samples)")
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)
