"""Calibration inputs and the data-driven `activation` criterion (mean |activation| per channel)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import handmade
from conftest import cli
from oracle import run
from onnxprune import prune
from onnxprune.calibration import Calibration
from onnxprune.errors import OnnxPruneError

SILENT = 3  # conv1's channel whose BN gives exactly zero: its activation is 0 on every input


def silent_channel_model() -> onnx.ModelProto:
    """conv_bn_relu_chain with conv1 channel 3 silenced by its BN (gamma = beta = 0) but the largest filter."""
    model = handmade.conv_bn_relu_chain()
    for t in model.graph.initializer:
        values = numpy_helper.to_array(t).copy()
        if t.name in ("bn1.gamma", "bn1.beta"):
            values[SILENT] = 0
        elif t.name == "conv1.weight":
            values[SILENT] *= 10  # l1 would keep it first
        else:
            continue
        t.CopyFrom(numpy_helper.from_array(values, t.name))
    return model


def calib_file(tmp: Path, n: int = 20) -> Path:
    x = np.random.default_rng(3).standard_normal((n, 3, 16, 16)).astype(np.float32)
    np.savez(tmp / "calib.npz", x=x)
    return tmp / "calib.npz"


def test_activation_removes_the_silent_channel_exactly(tmp: Path) -> None:
    model = silent_channel_model()
    keep_conv2 = {"conv2": 0.0}  # prune conv1's group only
    pruned, plan, report = prune(model, ratio=0.15, criterion="activation", calibration=str(calib_file(tmp)),
                                 overrides=keep_conv2, compensate="none")
    assert plan["groups"] == {"conv1": [SILENT]} and report["groups"][0]["criterion"] == "activation"
    x = {"x": np.random.default_rng(9).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(pruned, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-6)
    _, l1_plan, _ = prune(model, ratio=0.15, criterion="l1", overrides=keep_conv2, compensate="none")
    assert l1_plan["groups"]["conv1"] != [SILENT]  # weights alone cannot see it


def test_calibration_folder_equals_npz(tmp: Path) -> None:
    model = silent_channel_model()
    npz = calib_file(tmp, 6)
    folder = tmp / "samples"
    folder.mkdir()
    for i, sample in enumerate(np.load(npz)["x"]):  # one sample per file, no batch axis
        np.save(folder / f"{i:03d}.npy", sample)
    a = prune(model, ratio=0.5, criterion="activation", calibration=str(npz))[1]
    b = prune(model, ratio=0.5, criterion="activation", calibration=Calibration(str(folder), batch=4))[1]
    assert a["groups"] == b["groups"]
    c = prune(model, ratio=0.5, criterion="activation", calibration=Calibration(str(npz), samples=2))[1]
    assert c["groups"]["conv1"][0] == SILENT


def test_calibration_errors_name_the_input(tmp: Path) -> None:
    model = handmade.conv_bn_relu_chain()
    np.savez(tmp / "wrong.npz", image=np.zeros((2, 3, 16, 16), np.float32))
    np.savez(tmp / "shape.npz", x=np.zeros((2, 3, 8, 16), np.float32))
    for uses in (dict(criterion="activation"), dict(criterion="lasso"), dict(compensate="reconstruct")):
        with pytest.raises(OnnxPruneError, match="no array for input 'x' \\(it has image\\)"):
            prune(model, ratio=0.5, calibration=str(tmp / "wrong.npz"), **uses)
        with pytest.raises(OnnxPruneError, match="data for input 'x' has shape \\[2, 3, 8, 16\\]"):
            prune(model, ratio=0.5, calibration=str(tmp / "shape.npz"), **uses)
        with pytest.raises(OnnxPruneError, match="needs calibration inputs"):
            prune(model, ratio=0.5, **uses)
    with pytest.raises(OnnxPruneError, match="at least 1"):
        Calibration(str(tmp / "wrong.npz"), points=0)
    path = tmp / "chain.onnx"
    onnx.save(model, path)
    out = tmp / "out.onnx"
    r = cli("prune", str(path), "-o", str(out), "--ratio", "0.5", "--criterion", "activation", "--calib",
            str(tmp / "wrong.npz"))
    assert r.returncode == 2 and "no array for input 'x'" in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()
    r = cli("prune", str(path), "-o", str(out), "--ratio", "0.5", "--criterion", "activation", "--calib",
            str(calib_file(tmp)), "--calib-samples", "5")
    assert r.returncode == 0, r.stderr
