"""What a removal costs or saves, read off an analysis: group shares, prunable MACs, a fast estimator."""
from __future__ import annotations

import math

from .analyze import Analysis


def prunable_macs_share(analysis: Analysis) -> float:
    """Share of all MACs in nodes whose channels some prunable group can slice (each node counted once)."""
    frac: dict[str, float] = {}
    for g in analysis.prunable:
        for m in g.members:
            if m.kind is not None or m.op_type in ("MatMul", "Attention"):  # attention's weightless products too
                frac[m.node] = max(frac.get(m.node, 0.0), analysis.fraction(m, g))
    cost = analysis.cost
    return sum(cost.node_macs.get(n, 0) * f for n, f in frac.items()) / max(cost.macs, 1)


def removal_estimator(analysis: Analysis):
    """A fast `removed -> (MAC fraction removed, parameter fraction removed)` for target search.

    Each parameter keeps size x (kept fraction on every sliced axis); each node keeps its MACs x
    the kept fractions of its weight's sliced axes (of its channels, for weightless nodes).
    """
    res, cost = analysis.resolution, analysis.cost
    members = [(m, res.cls[m.elements]) for m in analysis.members]

    def estimate(removed: dict[str, list[int]]) -> tuple[float, float]:
        gone = analysis.removed_classes(removed)
        param_axes: dict[str, dict[int, float]] = {}
        node_axes: dict[str, dict[tuple[str, int], float]] = {}
        node_any: dict[str, float] = {}
        for m, cls in members:
            kept = 1.0 - float(gone[cls].mean())
            node_any[m.node] = min(node_any.get(m.node, 1.0), kept)
            if m.kind is not None:
                param_axes.setdefault(m.tensor, {})[m.axis] = kept
            if m.kind == "weight":
                node_axes.setdefault(m.node, {})[(m.tensor, m.axis)] = kept
        params = sum(cost.param_sizes.get(t, 0) * math.prod(axes.values()) for t, axes in param_axes.items())
        params_removed = sum(cost.param_sizes.get(t, 0) for t in param_axes) - params
        macs_removed = 0.0
        for node, macs in cost.node_macs.items():
            keep = math.prod(node_axes[node].values()) if node in node_axes else node_any.get(node, 1.0)
            macs_removed += macs * (1 - keep)
        return macs_removed / max(cost.macs, 1), params_removed / max(cost.params, 1)

    return estimate
