"""Speed targets: the bisection over the MAC target keeps the least cut measured to reach the speed-up."""
from __future__ import annotations

import pytest

from onnxprune.errors import OnnxPruneError
from onnxprune.selection.speed import search_speedup


def test_bisection_finds_the_least_cut_that_reaches_the_speedup() -> None:
    """With speed-up 1 / (1 - cut), 2x needs a cut of 0.5: found within the tolerance, never below it."""
    calls = []
    t, result, record = search_speedup(2.0, lambda cut: calls.append(cut) or cut, lambda cut: 1 / (1 - cut), steps=8)
    assert 0.5 <= t <= 0.53 and result == t
    assert all(s["speedup"] >= 2.0 for s in record.steps if s["target_macs"] == round(t, 4))
    assert calls[0] == pytest.approx(0.5)  # the first guess is the MAC ratio itself


def test_a_runtime_that_never_speeds_up_is_refused() -> None:
    """Channel counts the kernels dislike: no cut reaches 1.5x; one line says how far it got."""
    with pytest.raises(OnnxPruneError, match="not reached"):
        search_speedup(1.5, lambda cut: cut, lambda cut: 1.1, steps=4)


def test_no_speedup_is_no_target() -> None:
    with pytest.raises(OnnxPruneError, match="must be above 1"):
        search_speedup(1.0, lambda cut: cut, lambda cut: 2.0)


def test_cli_a_latency_the_original_already_meets_is_refused(tmp_path) -> None:
    """--target-latency above the original's own latency asks for no speed-up: exit 2, nothing written."""
    from conftest import ROOT, cli

    r = cli("prune", str(ROOT / "models" / "fashion" / "lenet300.onnx"), "-o", str(tmp_path / "o.onnx"),
            "--target-latency", "10000", "--runs", "3", "--warmup", "1")
    assert r.returncode == 2 and "is no speed-up" in r.stderr and not (tmp_path / "o.onnx").exists()
