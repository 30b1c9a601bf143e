"""Data-driven importance: mean |activation| each channel feeds its consumers over the calibration set."""
from __future__ import annotations

import numpy as np

from ..analysis.analyze import Analysis
from ..analysis.builder import CONSUMER
from ..calibration.capture import channel_abs_means
from ..calibration.data import Calibration
from ..errors import OnnxPruneError
from ..loading import Prepared


def consumer_input_means(prep: Prepared, analysis: Analysis, cal: Calibration,
                         provider: str = "auto") -> dict[str, list[np.ndarray]]:
    """Per prunable group, one per-channel mean |x| for each consumer's input (its positions averaged)."""
    readers = {g.id: [m for m in g.members if m.role == CONSUMER and m.kind is None] for g in analysis.prunable}
    means, _ = channel_abs_means(prep, {m.tensor: m.axis for ms in readers.values() for m in ms}, cal, provider)
    out = {}
    for g in analysis.prunable:
        if not readers[g.id]:
            raise OnnxPruneError(f"group '{g.id}' has no consumer input to measure")
        out[g.id] = []
        for m in readers[g.id]:
            pos, idx = analysis.channel_positions(m, g)
            counts = np.maximum(np.bincount(idx, minlength=g.channels), 1)
            out[g.id].append(np.bincount(idx, weights=means[m.tensor][pos], minlength=g.channels) / counts)
    return out
