"""LASSO selection and least-squares reconstruction (He et al. 2017) on models with known answers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import cli as run_cli
from oracle import run
from onnxprune import prune
from onnxprune.calibration.consumers import linear_view
from onnxprune.errors import OnnxPruneError
from onnxprune.analysis.builder import Member
from onnxprune.loading import prepare

LIVE = [1, 4, 6]  # the only channels of conv1 that conv2 reads


def _model(nodes, weights: dict[str, np.ndarray], in_shape, outputs: dict[str, list]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape[1:]])],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def two_convs(w1, b1, w2, b2=None, pads=1) -> onnx.ModelProto:
    """x -> conv1 (3x3) -> conv2 (3x3): linear, no activation."""
    weights = {"w1": w1, "b1": b1, "w2": w2, **({"b2": b2} if b2 is not None else {})}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[pads] * 4, name="conv1"),
             helper.make_node("Conv", ["h", "w2"] + (["b2"] if b2 is not None else []), ["y"], pads=[pads] * 4,
                              name="conv2")]
    return _model(nodes, weights, (1, 4, 8, 8), {"y": ["N", w2.shape[0], None, None]})


def dependent_weights(rng: np.random.Generator):
    """conv1 channels 5, 6, 7 are exact linear combinations of channels 0..4: removable without loss.

    conv2 reads them with weaker weights (0.3x), so their contributions are the smallest and the LASSO
    drops them; it measures contribution, not redundancy, and with equal weights it often keeps a set
    that does not span (4 of 20 seeds exact at 1x, 19 of 20 at 0.3x).
    """
    w1, b1 = rng.standard_normal((8, 4, 3, 3)), rng.standard_normal(8)
    for n, combo in ((5, {0: 2.0, 3: -1.0}), (6, {1: 1.0, 2: 0.5}), (7, {4: -1.0})):
        w1[n] = sum(a * w1[m] for m, a in combo.items())
        b1[n] = sum(a * b1[m] for m, a in combo.items())
    w2 = rng.standard_normal((6, 8, 3, 3))
    w2[:, 5:] *= 0.3
    return w1, b1, w2, rng.standard_normal(6)


@pytest.fixture
def calib(tmp: Path) -> Path:
    np.savez(tmp / "calib.npz", x=np.random.default_rng(1).standard_normal((40, 4, 8, 8)).astype(np.float32))
    return tmp / "calib.npz"


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def _x(shape=(3, 4, 8, 8)) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(7).standard_normal(shape).astype(np.float32)}


def test_lasso_keeps_exactly_the_channels_the_output_depends_on(calib: Path) -> None:
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 4, 3, 3)), rng.standard_normal(8)
    w2 = rng.standard_normal((6, 8, 3, 3))
    dead = [c for c in range(8) if c not in LIVE]
    w2[:, dead] = 0
    w1[dead] *= 10  # the largest filters: l1 keeps these
    model = two_convs(w1, b1, w2, rng.standard_normal(6))
    pruned, plan, report = prune(model, ratio=5 / 8, criterion="lasso", calibration=str(calib))
    assert plan["groups"] == {"conv1": dead}
    assert report["groups"][0]["compensation"]["selection"] == "lasso"
    assert _rel(run(model, _x())[0], run(pruned, _x())[0]) < 1e-5
    assert prune(model, ratio=5 / 8, criterion="l1", compensate="none")[1]["groups"] != {"conv1": dead}


def test_reconstruction_restores_linearly_dependent_channels(calib: Path) -> None:
    model = two_convs(*dependent_weights(np.random.default_rng(2)))
    ref = run(model, _x())[0]
    lines: list[str] = []
    pruned, plan, report = prune(model, ratio=3 / 8, criterion="lasso", calibration=str(calib),
                                 progress=lines.append)
    assert plan["groups"] == {"conv1": [5, 6, 7]}
    assert len(lines) == 1 and lines[0].startswith("group 1/1 conv1: kept 5/8 by lasso; consumer error 0.")
    assert _rel(ref, run(pruned, _x())[0]) < 1e-5  # float32 round-off: machine precision
    fit = report["groups"][0]["compensation"]["consumers"][0]
    assert fit["node"] == "conv2" and fit["error_before"] > 0.1 and fit["error_after"] < 1e-6
    assert fit["held_out_rows"] == 80 and fit["rows"] == 400  # 8 of 40 samples held out, 10 points each
    bare, same_plan, _ = prune(model, ratio=3 / 8, criterion="lasso", calibration=str(calib), compensate="none")
    assert same_plan["groups"] == plan["groups"] and _rel(ref, run(bare, _x())[0]) > 0.1


def test_reconstruction_of_channels_chosen_by_another_criterion(calib: Path) -> None:
    """--reconstruct with l1: the removed set is l1's, still spanned by what is kept, so the fit is exact."""
    rng = np.random.default_rng(3)
    w1, b1, w2, b2 = dependent_weights(rng)
    w1[5:] *= 3  # l1 keeps the dependent channels 5..7; two of 0..4 go, spanned by the rest
    model = two_convs(w1, b1, w2, b2)
    removed = prune(model, ratio=2 / 8, criterion="l1", compensate="none")[1]["groups"]["conv1"]
    assert set(removed) <= {0, 1, 2, 3, 4}
    pruned, plan, report = prune(model, ratio=2 / 8, criterion="l1", compensate="reconstruct",
                                 calibration=str(calib))
    assert plan["groups"]["conv1"] == removed and report["groups"][0]["compensation"]["selection"] == "l1"
    assert _rel(run(model, _x())[0], run(pruned, _x())[0]) < 1e-5


def test_intercept_goes_into_a_new_bias(calib: Path) -> None:
    """A constant channel (zero filter, bias 3) feeding a bias-less, unpadded conv: exact only via a bias."""
    rng = np.random.default_rng(4)
    w1, b1 = rng.standard_normal((8, 4, 3, 3)), rng.standard_normal(8)
    w1[2], b1[2] = 0, 3.0
    model = two_convs(w1, b1, rng.standard_normal((6, 8, 3, 3)), None, pads=0)
    pruned, plan, _ = prune(model, ratio=1 / 8, criterion="l1", compensate="reconstruct", calibration=str(calib))
    assert plan["groups"]["conv1"] == [2]
    conv2 = next(n for n in pruned.graph.node if n.name == "conv2")
    assert len(conv2.input) == 3  # it was given a bias
    assert _rel(run(model, _x())[0], run(pruned, _x())[0]) < 1e-5


def test_flatten_gemm_consumer_is_reconstructed(calib: Path) -> None:
    """conv -> Flatten -> Gemm: each channel spreads over 64 features of the Gemm's input."""
    rng = np.random.default_rng(5)
    w1, b1 = rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    w1[5], b1[5] = w1[0] - 2 * w1[1], b1[0] - 2 * b1[1]
    fc = rng.standard_normal((3, 6 * 64)) * 0.1
    fc[:, 5 * 64:] *= 0.3  # the weakest contribution: the LASSO drops it
    weights = {"w1": w1, "b1": b1, "fc": fc, "fcb": rng.standard_normal(3)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1] * 4, name="conv1"),
             helper.make_node("Flatten", ["h"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1, alpha=0.5, name="fc")]
    model = _model(nodes, weights, (1, 4, 8, 8), {"y": ["N", 3]})
    np.savez(calib, x=np.random.default_rng(1).standard_normal((500, 4, 8, 8)).astype(np.float32))
    pruned, plan, report = prune(model, ratio=1 / 6, criterion="lasso", calibration=str(calib))
    assert plan["groups"]["conv1"] == [5]
    assert report["groups"][0]["compensation"]["consumers"][0]["features"] == 5 * 64
    assert _rel(run(model, _x())[0], run(pruned, _x())[0]) < 1e-5


def test_two_consumers_are_solved_jointly(calib: Path) -> None:
    """conv1 feeds conv2 and a MatMul over channels-last rows: one channel set, each consumer re-fit."""
    rng = np.random.default_rng(6)
    w1, b1 = dependent_weights(rng)[:2]
    weights = {"w1": w1, "b1": b1, "w2": rng.standard_normal((6, 8, 3, 3)), "b2": rng.standard_normal(6),
               "m": rng.standard_normal((8, 5)) * np.r_[np.ones(5), np.full(3, 0.3)][:, None]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1] * 4, name="conv1"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["y"], pads=[1] * 4, name="conv2"),
             helper.make_node("Transpose", ["h"], ["t"], perm=[0, 2, 3, 1], name="nhwc"),
             helper.make_node("MatMul", ["t", "m"], ["z"], name="mm")]
    model = _model(nodes, weights, (1, 4, 8, 8), {"y": ["N", 6, 8, 8], "z": ["N", 8, 8, 5]})
    pruned, plan, report = prune(model, ratio=3 / 8, criterion="lasso", calibration=str(calib))
    comp = report["groups"][0]["compensation"]
    assert comp["solved"] == "jointly over all consumers" and {c["node"] for c in comp["consumers"]} == {"conv2", "mm"}
    for a, b in zip(run(model, _x()), run(pruned, _x())):
        assert _rel(a, b) < 1e-5


@pytest.mark.parametrize("attrs", [dict(pads=[1, 0, 2, 1], strides=[2, 1]), dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
                                   dict(auto_pad="SAME_UPPER", strides=[2, 2]), dict(auto_pad="SAME_LOWER"),
                                   dict(auto_pad="VALID", strides=[1, 3])])
def test_sampled_rows_times_weights_are_the_conv_output(attrs: dict) -> None:
    """The receptive-field rows of every geometry reproduce onnxruntime's conv output minus bias."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((5, 3, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c", **attrs)]
    model = _model(nodes, {"w": w, "b": rng.standard_normal(5)}, (1, 3, 9, 10), {"y": ["N", 5, None, None]})
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    y = run(model, {"x": x})[0] - numpy_helper.to_array(model.graph.initializer[1])[None, :, None, None]
    prep = prepare(model)
    view = linear_view(prep.graph.nodes[0], Member("c", "Conv", "consumer", "w", 1, np.arange(3), "weight", 1))
    assert view.grid(x.shape) == y.shape[2:]
    where = view.sample(x.shape, 2, 6, np.random.default_rng(0))
    got = view.rows(x, where) @ view.matrix().T
    want = y.reshape(2, 5, -1).transpose(0, 2, 1)[np.arange(2)[:, None], where].reshape(-1, 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_cli_lasso_report_plan_replay_and_errors(tmp: Path, calib: Path) -> None:
    path, out = tmp / "m.onnx", tmp / "out.onnx"
    onnx.save(two_convs(*dependent_weights(np.random.default_rng(2))), path)

    def cli(*args: str):
        return run_cli("prune", str(path), *args)

    r = cli("-o", str(out), "--ratio", "0.375", "--round-to", "1", "--criterion", "lasso", "--calib", str(calib),
            "--save-plan", str(tmp / "plan.json"), "--report", str(tmp / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "reconstruction: 1 consumers read on 40 calibration samples x 10 points" in r.stdout
    report = json.loads((tmp / "r.json").read_text())
    assert report["total"]["compensation"]["median_error_after"] < 1e-6
    assert report["total"]["compensation"]["target_bytes_max"] == 400 * 6 * 4  # rows x outputs, float32
    plan = json.loads((tmp / "plan.json").read_text())
    assert plan["compensation"]["compensate"] == "reconstruct"
    again = tmp / "again.onnx"
    assert cli("-o", str(again), "--plan", str(tmp / "plan.json"), "--calib", str(calib)).returncode == 0
    assert again.read_bytes() == out.read_bytes()  # the same channels, the same re-fit
    for args, message in ((["--plan", str(tmp / "plan.json")], "reconstruction needs calibration inputs"),
                          (["--ratio", "0.5", "--criterion", "lasso", "--compensate", "merge", "--calib", str(calib)],
                           "--criterion lasso compensates by reconstruction"),
                          (["--ratio", "0.5", "--no-reconstruct", "--compensate", "reconstruct"], "contradicts"),
                          (["--ratio", "0.5", "--reconstruct"], "reconstruction needs calibration inputs")):
        bad = tmp / "bad.onnx"
        r = cli("-o", str(bad), *args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not bad.exists()


def test_missing_scikit_learn_is_one_clear_line(calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)  # import fails as if not installed
    model = two_convs(*dependent_weights(np.random.default_rng(2)))
    with pytest.raises(OnnxPruneError, match=r"needs scikit-learn: pip install 'onnxprune\[lasso\]'"):
        prune(model, ratio=0.5, criterion="lasso", calibration=str(calib))
    prune(model, ratio=0.5, criterion="l1", compensate="reconstruct", calibration=str(calib))  # lstsq needs only scipy


def test_gathered_rows_are_handed_on_in_order_within_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of consecutive batches go on in few pieces of at most about GATHER_BYTES, covering every sample once."""
    from onnxprune.rewrite import reconstruction

    monkeypatch.setattr(reconstruction, "GATHER_BYTES", 4 * 10 * 10)  # 10 rows of 10 float32 features
    got = []
    g = reconstruction._Gather(10, lambda start, stop, rows: got.append((start, stop, rows.copy())))
    rows = np.arange(13 * 2 * 10, dtype=np.float32).reshape(13 * 2, 10)  # 13 samples, 2 rows each
    for start in range(0, 13, 3):
        stop = min(start + 3, 13)
        g.add(start, stop, rows[2 * start:2 * stop])
    g.flush()
    g.flush()  # nothing held: nothing handed on
    assert [(a, b) for a, b, _ in got] == [(0, 6), (6, 12), (12, 13)]
    assert np.array_equal(np.concatenate([r for _, _, r in got]), rows)


def test_reconstruction_runs_blas_on_one_thread() -> None:
    """Small products and decompositions: one BLAS thread, not threads spinning against onnxruntime's."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from onnxprune.rewrite.reconstruction import _one_blas_thread

    with _one_blas_thread():
        assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {1}
