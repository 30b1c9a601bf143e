"""Dead-channel oracle on every prunable group of every hand-built pattern, several subsets each."""
from __future__ import annotations

import numpy as np
import pytest

import handmade
import oracle
from onnxprune import analyze
from onnxprune.analysis.analyze import build_analysis
from onnxprune.loading import prepare

PATTERNS = [name for name in handmade.PATTERNS if name not in handmade.CHECKER_EXEMPT]
SUBSETS = ["first", "last", "random", "all_but_one"]


@pytest.mark.parametrize("name", PATTERNS)
def test_each_group_alone(name: str) -> None:
    """Removing dead channels of one group at a time leaves every output unchanged."""
    model = handmade.PATTERNS[name](0)
    analysis = analyze(model)
    assert analysis.prunable, f"{name}: no prunable group"
    for group in analysis.prunable:
        rng = np.random.default_rng(1)
        for idx in oracle.subsets(group.channels, rng).values():
            oracle.check_dead_channels(model, {group.id: idx})


@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("name", PATTERNS)
def test_all_groups_together(name: str, subset: str) -> None:
    """Removing dead channels of every group at once leaves outputs unchanged and shrinks the model."""
    model = handmade.PATTERNS[name](0)
    analysis = analyze(model)
    rng = np.random.default_rng(2)
    removed = {g.id: oracle.subsets(g.channels, rng)[subset] for g in analysis.prunable}
    pruned = oracle.check_dead_channels(model, removed)
    assert build_analysis(prepare(pruned)).cost.params < analysis.cost.params


def test_oracle_catches_misaligned_slicing(monkeypatch) -> None:
    """The oracle is not vacuous: slicing the wrong channels is caught."""
    import onnxprune.rewrite.rewriter as rewriter

    original = rewriter._slice
    monkeypatch.setattr(rewriter, "_slice", lambda v, masks: original(v, {a: np.roll(m, 1) for a, m in masks.items()}))
    model = handmade.residual_add(0)
    removed = {g.id: [0] for g in analyze(model).prunable}
    with pytest.raises(AssertionError):
        oracle.check_dead_channels(model, removed)
