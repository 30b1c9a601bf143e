"""Read intermediate tensors over the calibration set with onnxruntime, one batch at a time."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx_graphsurgeon as gs

from ..loading import Prepared, export
from ..runtime.providers import open_session
from ..runtime.feeds import session_inputs
from .data import Calibration, calibration_batches, valid_rows

Captured = Iterator[tuple[int, dict[str, np.ndarray]]]  # (index of the batch's first sample, tensors)
VALID = "\0valid"  # in a captured batch: the [N, T] mask of real (not padding) positions, when there is one


def capture_model(prep: Prepared, tensors: list[str], new_bias: dict[int, np.ndarray] | None = None,
                  source: gs.Graph | None = None, given: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None
                  ) -> bytes:
    """The model (prep.graph, or `source`: a copy of it) cut down to what computes `tensors`, its outputs.

    onnxruntime runs every node whatever outputs are asked for, so the cut is what saves the time.
    `new_bias` (id of a node of prep.graph -> bias) gives bias-less nodes the bias they will get.
    `given` (tensor -> dtype, shape of one sample) become inputs: what computes them is cut away, and
    inputs (given or the model's) that the outputs do not need are dropped.
    """
    source = source or prep.graph
    graph = source.copy()  # nodes and tensors are copied, weight arrays shared
    for original, node in zip(prep.graph.nodes, graph.nodes):
        if id(original) in (new_bias or {}):
            while len(node.inputs) < 3:
                node.inputs.append(gs.Variable.empty())
            name = f"{prep.names[id(original)]}_capture_bias"
            node.inputs[2] = gs.Constant(name, new_bias[id(original)].astype(node.inputs[1].values.dtype))
    by_name = graph.tensors()
    graph.outputs = [by_name[t] for t in tensors]
    if given:
        inputs = []
        for name, (dtype, shape) in given.items():
            t = by_name[name]
            t.inputs.clear()  # no longer computed here
            t.dtype, t.shape = np.dtype(dtype), ["N", *shape]
            inputs.append(t)
        graph.inputs = list(graph.inputs) + [t for t in inputs if t not in graph.inputs]
    graph.cleanup(remove_unused_graph_inputs=bool(given))
    return export(prep, graph).SerializeToString()


def stream(prep: Prepared, tensors: list[str], cal: Calibration, provider: str = "auto",
           new_bias: dict[int, np.ndarray] | None = None, source: gs.Graph | None = None) -> tuple[Captured, int]:
    """The tensors for each calibration batch (only one batch is held at a time), and the sample count."""
    session = open_session(capture_model(prep, tensors, new_bias, source), provider).session
    batches, samples = calibration_batches(cal, session)
    mask = cal.mask_input(session_inputs(session)[0])

    def run() -> Captured:
        start = 0
        for feeds in batches:
            values = dict(zip(tensors, session.run(tensors, feeds)))
            if mask is not None:  # which positions are real, for the statistics to leave padding out
                values[VALID] = feeds[mask] != 0
            yield start, values
            start += len(next(iter(feeds.values())))
    return run(), samples


def channel_means(prep: Prepared, axes: dict[str, int], cal: Calibration, provider: str = "auto",
                  of=(np.abs,)) -> tuple[dict[str, list[np.ndarray]], int]:
    """Per tensor, the mean of each function in `of` of its values, per position along its channel axis,
    over the calibration set (one pass; padding positions of a masked sequence left out), and the sample count."""
    names = list(axes)
    sums = {t: [0.0] * len(of) for t in names}
    counts = dict.fromkeys(names, 0)
    batches, samples = stream(prep, names, cal, provider)
    for _, values in batches:
        for t in names:
            x, axis = valid_rows(values[t], axes[t], values.get(VALID))
            a = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).astype(np.float64)
            sums[t] = [total + f(a).sum(axis=1) for total, f in zip(sums[t], of)]
            counts[t] += a.shape[1]
    return {t: [total / max(counts[t], 1) for total in sums[t]] for t in names}, samples


def channel_abs_means(prep: Prepared, axes: dict[str, int], cal: Calibration,
                      provider: str = "auto") -> tuple[dict[str, np.ndarray], int]:
    """Mean |x| of each tensor along its channel axis over the calibration set, and the sample count."""
    means, samples = channel_means(prep, axes, cal, provider)
    return {t: m[0] for t, m in means.items()}, samples
