"""`bench`: latency and throughput of one or two models, interleaved in one process, per batch size."""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from ..errors import OnnxPruneError
from ..runtime.feeds import input_dims, random_inputs, session_inputs
from ..runtime.providers import Session, open_session, runtime
from .validate import ModelBytes


def bound_runner(s: Session, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
    """One run with inputs already on the device and outputs left there (I/O binding), so copies are not timed."""
    ort = runtime()
    binding = s.session.io_binding()
    for name, x in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, s.device, 0))
    for out in s.session.get_outputs():
        binding.bind_output(out.name, s.device, 0)

    def run() -> None:
        s.session.run_with_iobinding(binding)
    return run


def interleaved(runners: list[Callable[[], None]], runs: int) -> list[list[float]]:
    """Seconds of each run of each runner, the runners taking turns (the order reversed every other run)."""
    times: list[list[float]] = [[] for _ in runners]
    for r in range(runs):
        for i in range(len(runners)) if r % 2 == 0 else reversed(range(len(runners))):
            t0 = time.perf_counter()
            runners[i]()
            times[i].append(time.perf_counter() - t0)
    return times


def stats(times_s: list[float], batch: int) -> dict:
    """Latency in ms (min, median, p90, mean) and throughput in samples/s at the median."""
    t = np.asarray(times_s) * 1000
    median = float(np.median(t))
    return {"min_ms": float(t.min()), "median_ms": median, "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "throughput": batch * 1000 / median if median > 0 else float("inf")}


def own_batch(specs, shapes: dict[str, tuple[int, ...]] | None = None) -> int:
    """The model's static batch size (its first input's first dim), else the batch of a given shape
    (--shape), else 1."""
    declared = next((d for _, d in specs if d), None)
    if declared and isinstance(declared[0], int) and declared[0] > 0:
        return declared[0]
    given = next((shapes[name] for name, _ in specs if shapes and shapes.get(name)), None)
    return given[0] if given else 1


def _first_run(model: ModelBytes, run: Callable[[], None], dims: dict[str, tuple[int, ...]]) -> None:
    """One untimed run; a model that does not run at these shapes is one line, not a traceback."""
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
        name = "the model" if isinstance(model, bytes) else str(model)
        at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in dims.items())
        raise OnnxPruneError(f"{name} does not run at {at}: {str(exc).splitlines()[0][:300]} (give every input's "
                             "shape with --shape)") from None


def bench(models: list[ModelBytes], batches: tuple[int, ...] = (), warmup: int = 10, runs: int = 50,
          provider: str = "auto", threads: int | None = None,
          shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Time each model at each batch size; runs alternate between the models so drift hits both alike.

    With two models, `speedup` is the first's median latency over the second's. No batch sizes: the
    model's own (its static batch, else the batch of a `shapes` entry, else 1). Each batch's entry says
    the input shapes it ran at.
    """
    if runs < 1 or warmup < 0:
        raise OnnxPruneError(f"--runs must be at least 1 and --warmup at least 0 (got {runs} and {warmup})")
    sessions = [open_session(m, provider, threads, spin=False) for m in models]  # runs alternate: no spinning
    specs, dtypes = session_inputs(sessions[0].session)
    batches = batches or (own_batch(specs, shapes),)
    out = {"provider": sessions[0].provider, "threads": sessions[0].threads, "warmup": warmup, "runs": runs,
           "batches": {}}
    if sessions[0].note:
        out["provider_note"] = sessions[0].note
    for batch in batches:
        dims = input_dims(specs, shapes, batch)
        feeds = random_inputs(dtypes, dims)
        runners = [bound_runner(s, feeds) for s in sessions]
        for model, run in zip(models, runners):
            _first_run(model, run, dims)
            for _ in range(warmup):
                run()
        times = interleaved(runners, runs)
        entry = {"shapes": {k: list(v) for k, v in dims.items()}, "models": [stats(t, batch) for t in times]}
        if len(times) == 2:
            entry["speedup"] = entry["models"][0]["median_ms"] / entry["models"][1]["median_ms"]
            # each run of one model beside the other's next run: the median of those ratios cancels the
            # machine's load drifting between runs (on a shared machine the plain ratio of medians wanders)
            entry["paired_speedup"] = float(np.median(np.array(times[0]) / np.array(times[1])))
        out["batches"][str(batch)] = entry
    return out


ELLIPSIS = "..."  # ASCII: stdout may not take a Unicode ellipsis


def short_path(path: str, width: int = 40) -> str:
    """`path` in `width` characters: the file name whole (even if longer), the folders cut in the middle."""
    if len(path) <= width:
        return path
    cut = max(path.rfind("/"), path.rfind(os.sep))
    if cut < 0:
        return path
    folder, name = path[:cut], path[cut:]  # the name keeps its separator
    room = max(width - len(name) - len(ELLIPSIS), 0)
    head = room // 3  # the end of the folders tells more models apart than their root
    return folder[:head] + ELLIPSIS + folder[len(folder) - (room - head):] + name


def short_paths(paths: list[str], width: int = 40) -> list[str]:
    """Each path by short_path; where two would then read alike, their common leading folders go first."""
    shown = [short_path(p, width) for p in paths]
    if len(set(shown)) == len(set(paths)):
        return shown
    try:
        common = os.path.commonpath(paths)
    except ValueError:  # absolute and relative paths mixed
        return shown
    return [short_path(ELLIPSIS + os.sep + os.path.relpath(p, common), width) for p in paths]


def bench_lines(report: dict, names: list[str]) -> str:
    """What the CLI prints for a bench report (model paths shortened to 40 characters, told apart)."""
    labels = short_paths(names)
    lines = [f"latency on {report['provider']} ({report['threads']} threads), {report['warmup']} warm-up + "
             f"{report['runs']} timed runs, interleaved"]
    lines += [f"note: {report['provider_note']}"] if "provider_note" in report else []
    for batch, entry in report["batches"].items():
        lines.append(f"  batch {batch:>3} at " + ", ".join(f"{k}={'x'.join(map(str, v))}"
                                                      for k, v in entry["shapes"].items()))
        for label, s in zip(labels, entry["models"]):
            lines.append(f"  batch {batch:>3} {label:<40} min {s['min_ms']:8.3f} ms  median {s['median_ms']:8.3f} ms  "
                         f"p90 {s['p90_ms']:8.3f} ms  {s['throughput']:10.1f} samples/s")
        if "speedup" in entry:
            lines.append(f"  batch {batch:>3} speed-up {entry['speedup']:.3f}x (median latency, first / second)")
    return "\n".join(lines)
