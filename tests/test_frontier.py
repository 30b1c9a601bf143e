"""Segment-by-segment capture (calibration/frontier.py) and the lazy calibration reader (calibration/data.py)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from onnxprune.calibration import Calibration
from onnxprune.calibration.capture import stream
from onnxprune.calibration.data import Samples, data_digest
from onnxprune.calibration.frontier import Activations
from onnxprune.errors import OnnxPruneError
from onnxprune.loading import prepare
from onnxprune.runtime.feeds import load_arrays


def _chain_with_skip():
    """x -> c1 -> relu -> c2 -> relu -> c3 -> add(skip from relu1) -> c4: a chain with a skip connection."""
    rng = np.random.default_rng(0)
    w = {f"w{i}": rng.standard_normal((4, 4 if i > 1 else 3, 3, 3)).astype(np.float32) * 0.3 for i in range(1, 5)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a1"], pads=[1] * 4, name="c1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["a2"], pads=[1] * 4, name="c2"),
             helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["a3"], pads=[1] * 4, name="c3"),
             helper.make_node("Add", ["a3", "r1"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "w4"], ["y"], pads=[1] * 4, name="c4")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, ["N", 4, 8, 8])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _full(prep, tensors, cal):
    batches, _ = stream(prep, tensors, cal)
    parts = [v for _, v in batches]
    return {t: np.concatenate([p[t] for p in parts]) for t in tensors}


def test_segments_equal_the_whole_model_after_each_change(tmp_path: Path) -> None:
    """Each step read from stored segments equals a capture of the whole (changed) model, also when a
    change upstream makes stored values stale and when a later step needs a skip connection."""
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(1).standard_normal((10, 3, 8, 8)).astype(np.float32))
    cal = Calibration(str(tmp_path / "c.npz"), batch=3)
    prep = prepare(_chain_with_skip())
    by_name = {n.name: n for n in prep.graph.nodes}
    steps = [["r1"], ["r2"], ["s"], ["s"]]
    changes = ["c2", "c3", "c1", "c4"]  # c1 changes after r1/r2 were stored: they must be recomputed
    with Activations(prep, cal, steps, directory=str(tmp_path)) as acts:
        for tensors, node in zip(steps, changes):
            batches, n = acts.read(tensors)
            got = {t: np.concatenate([v[t] for _, v in batches]) for t in tensors}
            want = _full(prep, tensors, cal)
            assert n == 10
            for t in tensors:
                np.testing.assert_allclose(got[t], want[t], rtol=1e-5, atol=1e-6)
            w = by_name[node].inputs[1]
            w.values = (w.values * 0.5 + 0.1).astype(np.float32)  # a re-fit: a new array
            acts.changed([by_name[node]])
    assert not list(tmp_path.glob("onnxprune-activations-*"))  # cleaned up


def test_lazy_npz_reads_equal_np_load_and_digest_is_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "a.npz", x=rng.standard_normal((7, 3, 4, 4)).astype(np.float32))
    np.savez_compressed(tmp_path / "b.npz", x=rng.standard_normal((7, 3, 4, 4)).astype(np.float32))
    specs, dtypes = [("x", (None, 3, 4, 4))], {"x": np.dtype(np.float32)}
    for f in ("a.npz", "b.npz"):
        full = load_arrays(tmp_path / f)
        s = Samples(Calibration(str(tmp_path / f), samples=6), specs, dtypes)
        assert s.count == 6
        np.testing.assert_array_equal(np.concatenate([b["x"] for b in s.batches(4)]), full["x"][:6])
        h = hashlib.sha256()
        for name in sorted(full):
            a = np.ascontiguousarray(full[name])
            h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
            h.update(a.data)
        assert data_digest(tmp_path / f)["sha256"] == h.hexdigest()


def test_lazy_reader_finds_a_nan_anywhere(tmp_path: Path) -> None:
    x = np.zeros((9, 3, 4, 4), np.float32)
    x[7, 0, 0, 0] = np.nan
    np.savez(tmp_path / "n.npz", x=x)
    with pytest.raises(OnnxPruneError, match="NaN or Inf.*sample 7"):
        Samples(Calibration(str(tmp_path / "n.npz")), [("x", (None, 3, 4, 4))], {"x": np.dtype(np.float32)})
