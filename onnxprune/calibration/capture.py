"""Read intermediate tensors over the calibration set with onnxruntime, reduced batch by batch."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..loading import Prepared, export
from ..validation.providers import open_session
from .data import Calibration, calibration_batches


def channel_abs_means(prep: Prepared, axes: dict[str, int], cal: Calibration,
                      provider: str = "auto") -> tuple[dict[str, np.ndarray], int]:
    """Mean |x| of each tensor along its channel axis over the calibration set, and the sample count.

    The tensors become extra outputs of a copy of the model; only one batch of them is held at a
    time, reduced to one number per position on the axis.
    """
    model = export(prep)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in axes if t not in present)
    session = open_session(model.SerializeToString(), provider).session
    batches, samples = calibration_batches(cal, session)
    names = list(axes)
    sums = dict.fromkeys(names, 0.0)
    counts = dict.fromkeys(names, 0)
    for feeds in batches:
        for t, x in zip(names, session.run(names, feeds)):
            a = np.abs(np.moveaxis(x, axes[t], 0).reshape(x.shape[axes[t]], -1), dtype=np.float64)
            sums[t] = sums[t] + a.sum(axis=1)
            counts[t] += a.shape[1]
    return {t: sums[t] / max(counts[t], 1) for t in names}, samples
