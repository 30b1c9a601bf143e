"""Data-driven importance from the calibration set: what each channel feeds its consumers (|x|, Wanda, FLAP)."""
from __future__ import annotations

import numpy as np

from ..analysis.analyze import Analysis
from ..analysis.builder import CONSUMER, Member
from ..calibration.capture import channel_abs_means, channel_means
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


def channel_moments(prep: Prepared, axes: dict[str, int], cal: Calibration,
                    provider: str = "auto") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per tensor, the mean and the mean square of each position along its channel axis (float64)."""
    means, _ = channel_means(prep, axes, cal, provider, of=(lambda a: a, np.square))
    return {t: (m[0], m[1]) for t, m in means.items()}


def consumer_pairs(analysis: Analysis, g) -> list[tuple[Member, Member]]:
    """(activation read, weight) member pairs of the group's weight consumers."""
    data = {m.node: m for m in g.members if m.role == CONSUMER and m.kind is None}
    return [(data[m.node], m) for m in g.members if m.role == CONSUMER and m.kind == "weight" and m.node in data]


def weighted_input_scores(prep: Prepared, analysis: Analysis, cal: Calibration, criterion: str,
                          provider: str = "auto") -> dict[str, list[np.ndarray]]:
    """Per prunable group, one per-channel score for each weight consumer, from its input statistics.

    wanda: ||x_j|| * sum_i |W_ij| (Sun et al. 2023, per input unit); flap: the fluctuation
    var(x_j) * sum_i W_ij^2 (An et al. 2024), whose mean part --compensate mean puts into the bias.
    A unit spread over several positions (a head's head_dim channels) sums its positions.
    """
    pairs = {g.id: consumer_pairs(analysis, g) for g in analysis.prunable}
    axes = {a.tensor: a.axis for ps in pairs.values() for a, _ in ps}
    moments = channel_moments(prep, axes, cal, provider)
    tensors = prep.graph.tensors()
    out = {}
    for g in analysis.prunable:
        if not pairs[g.id]:
            raise OnnxPruneError(f"group '{g.id}' has no weight consumer to measure")
        out[g.id] = []
        for a, w in pairs[g.id]:
            mean, square = moments[a.tensor]
            values = np.moveaxis(np.asarray(tensors[w.tensor].values, np.float64), w.axis, 0).reshape(len(w.elements), -1)
            if criterion == "wanda":
                per_position = np.sqrt(square) * np.abs(values).sum(axis=1)
            else:
                per_position = np.maximum(square - mean ** 2, 0) * np.square(values).sum(axis=1)
            pos, idx = analysis.positions(w, g)
            out[g.id].append(np.bincount(idx, weights=per_position[pos], minlength=g.channels))
    return out
