"""Criteria on hand-made weights with known answers."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

import handmade
from onnxprune.analysis.analyze import build_analysis
from onnxprune.loading import prepare
from onnxprune.scoring import score_groups
from onnxprune.scoring.fpgm import fpgm


def _set(model: onnx.ModelProto, name: str, values: np.ndarray) -> None:
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))


def _weights(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _scores(model: onnx.ModelProto, criterion: str, **kw):
    prep = prepare(model)
    return score_groups(prep, build_analysis(prep), criterion, **kw)


def _conv(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def test_l1_and_l2_rank_zero_filters_lowest() -> None:
    m = handmade.conv_bn_relu_chain()
    w_name = _conv(m, "conv1").input[1]
    w = _weights(m, w_name).copy()
    w[[2, 5]] = 0
    _set(m, w_name, w)
    for criterion in ("l1", "l2"):
        s = _scores(m, criterion)["conv1"].scores
        assert set(np.argsort(s)[:2]) == {2, 5}, criterion


def test_l1_matches_numpy() -> None:
    m = handmade.conv_bn_relu_chain()
    w = _weights(m, _conv(m, "conv2").input[1])
    s = _scores(m, "l1", normalize=False)["conv2"].scores
    assert np.allclose(s, np.abs(w).reshape(len(w), -1).sum(1))


def test_fpgm_picks_the_geometric_median() -> None:
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((9, 5))
    median = pts.mean(0)  # a point at the centroid of a symmetric set is its geometric median
    pts = np.concatenate([median + d for d in (pts - median, median - pts)] + [median[None]])
    assert int(np.argmin(fpgm(pts))) == len(pts) - 1


def test_fpgm_chunks_equal_one_block(monkeypatch) -> None:
    import onnxprune.scoring.fpgm as f

    rows = np.random.default_rng(1).standard_normal((50, 7))
    whole = f.fpgm(rows)
    monkeypatch.setattr(f, "CHUNK_BYTES", 8 * 50 * 3)
    assert np.allclose(f.fpgm(rows), whole)


def test_fpgm_equals_scipy_cdist_sums() -> None:
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(2)
    rows = rng.standard_normal((64, 300)).astype(np.float32) * 1e-3
    rows[5] = rows[9]  # a duplicate: the zero distance must not come out as NaN
    expected = cdist(rows.astype(np.float64), rows.astype(np.float64)).sum(axis=1)
    assert np.allclose(fpgm(rows), expected, rtol=1e-9, atol=0)


def test_bn_ranks_smallest_gamma_and_falls_back_when_folded() -> None:
    m = handmade.conv_bn_relu_chain()
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    gamma = _weights(m, bn.input[1]).copy()
    gamma[[1, 6]] = [1e-3, -2e-3]
    _set(m, bn.input[1], gamma)
    result = _scores(m, "bn")["conv1"]
    assert result.criterion == "bn" and set(np.argsort(result.scores)[:2]) == {1, 6}
    folded = _scores(handmade.flatten_gemm(), "bn")["conv1"]
    assert folded.criterion == "l1" and "no BatchNormalization" in folded.note


def test_random_is_seeded() -> None:
    m = handmade.residual_add()
    a, b, c = (_scores(m, "random", seed=s)["conv1"].scores for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
