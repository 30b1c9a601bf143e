"""FLAP's bias compensation: a removed channel's calibration mean, through its consumers' weights, into their biases.

A channel that is removed stops adding W[:, j] x_j to each consumer; adding W[:, j] E[x_j] to the
bias keeps the consumer's output right on average (An et al. 2024). It is exact only for a channel
that is constant over the calibration set, read by a consumer with no padded borders.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.analyze import Analysis
from ..calibration.consumers import LinearView, linear_view
from ..calibration.data import Calibration
from ..loading import Prepared
from ..scoring.activation import channel_moments, consumer_pairs
from .merging import Compensation, GroupOutcome, MergeOptions, add_bias, takes_bias, zero_padded

CONSTANT = 1e-12  # relative variance below which a channel counts as constant


def fold_means(prep: Prepared, analysis: Analysis, removed: dict[str, list[int]], calibration: Calibration,
               options: MergeOptions, provider: str = "auto") -> Compensation:
    """Add each removed channel's mean contribution to its consumers' biases; record what was folded."""
    comp = Compensation(options)
    by_name = {prep.names[id(n)]: n for n in prep.graph.nodes}
    pairs = {gid: consumer_pairs(analysis, analysis.group(gid)) for gid, idx in removed.items() if idx}
    moments = channel_moments(prep, {a.tensor: a.axis for ps in pairs.values() for a, _ in ps}, calibration, provider)
    for gid, group_pairs in pairs.items():
        g, outcome = analysis.group(gid), GroupOutcome()
        comp.outcomes[gid] = outcome
        for a, w in group_pairs:
            node = by_name[w.node]
            view = linear_view(node, w)
            if isinstance(view, str):
                outcome.reasons[view] += 1
                continue
            if node.op != "MatMul" and not takes_bias(node):  # a MatMul without a bias Add gets one
                outcome.reasons[f"{node.op} takes no bias"] += 1
                continue
            pos, idx = analysis.positions(w, g)
            pos, idx = pos[np.isin(idx, removed[gid])], idx[np.isin(idx, removed[gid])]
            mean, square = moments[a.tensor]
            _fold(node, view, pos, mean, comp)
            _record(outcome, node, pos, idx, mean, square)
    return comp


def _fold(node: gs.Node, view: LinearView, pos: np.ndarray, mean: np.ndarray, comp: Compensation) -> None:
    """bias += W[:, removed features] @ their means (the op's own scale taken out, as add_bias expects)."""
    k = view.kernel
    cols = (pos[:, None] * k + np.arange(k)).reshape(-1)
    delta = view.matrix()[:, cols] @ np.repeat(mean[pos], k)
    alpha = float(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
    add_bias(node, delta / alpha, comp.new_bias)


def _record(outcome: GroupOutcome, node: gs.Node, pos: np.ndarray, idx: np.ndarray, mean: np.ndarray,
            square: np.ndarray) -> None:
    """One record per removed channel: folded, exact only when constant and read without padded borders."""
    spread = np.maximum(square - mean ** 2, 0) <= CONSTANT * np.maximum(mean ** 2, 1e-30)
    padded = node.op == "Conv" and zero_padded(node)
    for c in np.unique(idx):
        exact = bool(spread[pos[idx == c]].all()) and not padded
        because = "constant over the calibration set" if exact else "calibration mean folded into the bias (FLAP)"
        if int(c) not in outcome.channels:
            outcome.folded += 1
            outcome.channels[int(c)] = {"into": None, "exact": exact, "because": because}
        elif not exact:
            outcome.channels[int(c)].update(exact=False, because=because)
