"""Token models: positions where the attention mask is 0 are padding, and no statistic, fit or fold may count
them. The oracle: two calibration sets that differ only at padding positions give the same plan and the same
weights; with masking off (--calib-mask none) they do not."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.calibration import Calibration

T, F, H = 6, 8, 16


def _sequence_model(seed: int = 0) -> onnx.ModelProto:
    """x [N, T, 8] -> MatMul 16 -> Relu -> MatMul 8 -> Relu -> MatMul 4, times the mask: [N, T, 4]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), n)
             for n, s in (("w0", (F, H)), ("w1", (H, 8)), ("w2", (8, 4)))]
    inits += [numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), f"b{i}")
              for i, n in enumerate((H, 8))]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "last"))
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"], name="fc0"),
             helper.make_node("Add", ["m0", "b0"], ["a0"], name="bias0"),
             helper.make_node("Relu", ["a0"], ["r0"], name="relu0"),
             helper.make_node("MatMul", ["r0", "w1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="bias1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="fc2"),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"], name="unsq"),
             helper.make_node("Mul", ["m2", "mask3"], ["y"], name="masked")]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, F]),
                                             helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                                                           ["N", T])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", T, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _data(tmp: Path, garbage_seed: int) -> Path:
    """Sentences of 2..6 real positions; the padding holds zeros (seed 0) or large values that differ with
    `garbage_seed`."""
    rng = np.random.default_rng(0)
    n = 48
    lengths = rng.integers(2, T + 1, n)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    pad = np.random.default_rng(garbage_seed).standard_normal((n, T, F)).astype(np.float32) * 50 * garbage_seed
    x = np.where(mask[..., None] == 1, x, pad)
    path = tmp / f"calib{garbage_seed}.npz"
    np.savez(path, x=x, attention_mask=mask)
    return path


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("criterion,compensate", [("activation", "none"), ("wanda", "none"), ("flap", "mean"),
                                                  ("l1", "reconstruct"), ("lasso", "reconstruct")])
def test_padding_does_not_enter_any_statistic(tmp_path: Path, criterion: str, compensate: str) -> None:
    model = _sequence_model()
    a, b = _data(tmp_path, 0), _data(tmp_path, 2)
    got = {}
    for mask in ("auto", None):
        for path in (a, b):
            cal = Calibration(str(path), mask=mask)
            pruned, plan, _ = onnxprune.prune(model, ratio=0.5, criterion=criterion, calibration=cal,
                                              compensate=compensate)
            got[mask, path] = (plan["groups"], _weights(pruned))
    same = got["auto", a], got["auto", b]
    assert same[0][0] == same[1][0]
    assert all(np.array_equal(same[0][1][k], same[1][1][k]) for k in same[0][1])
    # the oracle has teeth: counting the padding changes the outcome
    plain = got[None, a], got[None, b]
    assert plain[0][0] != plain[1][0] or any(not np.array_equal(plain[0][1][k], plain[1][1][k])
                                             for k in plain[0][1] if k in plain[1][1])


def test_mask_is_found_or_named(tmp_path: Path) -> None:
    specs = [("input_ids", ["N", "T"]), ("attention_mask", ["N", "T"])]
    assert Calibration("x", mask="auto").mask_input(specs) == "attention_mask"
    assert Calibration("x", mask=None).mask_input(specs) is None
    assert Calibration("x", mask="input_ids").mask_input(specs) == "input_ids"
    with pytest.raises(onnxprune.OnnxPruneError, match="no such input"):
        Calibration("x", mask="mask").mask_input(specs)
    assert Calibration("x").mask_input([("image", [1, 3, 8, 8])]) is None


def test_cli_says_which_input_masks(tmp_path: Path) -> None:
    from conftest import cli

    path = tmp_path / "seq.onnx"
    onnx.save(_sequence_model(), path)
    data = _data(tmp_path, 1)
    r = cli("prune", str(path), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--criterion", "wanda", "--calib",
            str(data), quiet=False)
    assert r.returncode == 0 and "where 'attention_mask' is 0 are left out" in r.stderr
    r = cli("prune", str(path), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--criterion", "wanda", "--calib",
            str(data), "--calib-mask", "nope")
    assert r.returncode == 2 and "--calib-mask nope: the model has no such input" in r.stderr
