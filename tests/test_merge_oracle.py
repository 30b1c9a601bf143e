"""The merge oracle on every hand-built pattern and on real exports: wherever the report says exact, it is.

For sampled prunable groups, channel n is made an exact positive multiple or a copy of channel m (with
the per-channel parameters on the way equalized, and separately without), or made a constant; n alone is
removed with merging on, and check_merge_exact asserts the outputs wherever the report claims exact.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

import handmade
import oracle
from conftest import OCR_MODELS, ROOT, ocr_model
from onnxprune import analyze

# (kind, equalize, scale): scale 1 makes n a copy of m, exact through any activation (SiLU too)
VARIANTS = (("multiple", True, 1.7), ("multiple", True, 1.0), ("multiple", False, 1.7), ("constant", False, 1.0))
TORCHVISION = sorted((ROOT / "models" / "torchvision").glob("*.onnx"))
EXPORTS = sorted((ROOT / "models" / "yolo").glob("*.onnx")) + sorted((ROOT / "models" / "keras").glob("*.onnx"))


def merge_oracles(model: onnx.ModelProto, shapes=None, groups: int | None = None, seed: int = 0) -> Counter:
    """Run the oracle on `groups` evenly spread prunable groups (all when None); count (kind, claimed exact)."""
    analysis = analyze(model, shapes)
    chosen = analysis.prunable
    if groups is not None and len(chosen) > groups:
        chosen = [chosen[int(i)] for i in np.linspace(0, len(chosen) - 1, groups)]
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for g in chosen:
        n, m = (int(c) for c in rng.choice(g.channels, 2, replace=False))
        if analysis.emptied_part({g.id: [n]}) is not None:
            continue
        for kind, equalize, scale in VARIANTS:
            variant = oracle.merge_variant(model, g.id, n, m, scale, kind=kind, equalize=equalize, shapes=shapes)
            if variant is None:
                continue
            result = oracle.check_merge_exact(variant, g.id, n, shapes=shapes, into=m if kind == "multiple" else None)
            counts[(kind, result["claimed"])] += 1
    return counts


def _claimed(counts: Counter) -> int:
    return sum(v for (_, claimed), v in counts.items() if claimed)


def test_hand_built_patterns() -> None:
    total: Counter = Counter()
    for name in handmade.PATTERNS:
        if name not in handmade.CHECKER_EXEMPT:
            total += merge_oracles(handmade.PATTERNS[name](0))
    # not vacuous: most equalized multiples and constants are claimed exact, and were checked
    assert total[("multiple", True)] > 20 and total[("constant", True)] > 20, total


@pytest.mark.parametrize("path", TORCHVISION, ids=[p.stem for p in TORCHVISION])
def test_torchvision(path: Path) -> None:
    counts = merge_oracles(onnx.load(path), groups=2)
    assert sum(counts.values()) > 0


@pytest.mark.parametrize("name", list(OCR_MODELS))
def test_pp_ocr(name: str) -> None:
    counts = merge_oracles(onnx.load(ocr_model(name)), OCR_MODELS[name], groups=3)
    assert sum(counts.values()) > 0


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_yolo_and_keras(path: Path) -> None:
    counts = merge_oracles(onnx.load(path), groups=3)
    assert sum(counts.values()) > 0
