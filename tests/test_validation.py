"""Validation with onnxruntime: fidelity metrics, the gate, provider choice, bench, MAC counts, sensitivity."""
from __future__ import annotations

import json
import warnings
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import handmade
from conftest import cli
from oracle import dead_copy
from onnxprune.analysis.cost import count_model_cost
from onnxprune.errors import OnnxPruneError
from onnxprune.runtime import providers
from onnxprune.validation.bench import bench
from onnxprune.runtime.feeds import random_inputs
from onnxprune.runtime.providers import open_session
from onnxprune.search.sensitivity import sensitivity
from onnxprune.validation.validate import AUTO_BATCH_BYTES, Inputs, gate_failures, open_inputs, validate

CLASSES, FEATURES = 5, 6


def linear(factor: float = 1.0, batch: int | str = "N") -> onnx.ModelProto:
    """y = (x W + b) * factor, a classifier-shaped [batch, 5] output; factor 2 or -1 is exact in float."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((FEATURES, CLASSES)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32), "b")
    k = numpy_helper.from_array(np.array([factor], np.float32), "k")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["z"]), helper.make_node("Mul", ["z", "k"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CLASSES])], [w, b, k])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save(model: onnx.ModelProto, path: Path) -> str:
    onnx.save(model, path)
    return str(path)


@pytest.fixture
def models(tmp: Path) -> dict[str, str]:
    return {name: save(linear(f), tmp / f"{name}.onnx") for name, f in (("same", 1), ("double", 2), ("neg", -1))}


def outputs(path: str, x: np.ndarray) -> np.ndarray:
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_identical_models_validate_with_zero_error(models: dict[str, str]) -> None:
    report = validate(models["same"], models["same"], provider="cpu")
    out = report["outputs"]["y"]
    assert out["max_abs"] == 0 and out["rel_l2"] == 0 and out["cosine"] == pytest.approx(1, abs=1e-12)
    assert out["top1_agreement"] == 1 and report["provider"] == "cpu"
    assert gate_failures(report, max_drop=0, min_cosine=0.999999) == []


def test_known_perturbations_give_known_numbers(models: dict[str, str]) -> None:
    inputs = Inputs(shapes={"x": (7, FEATURES)}, random_batches=3, seed=5)
    x = np.concatenate([random_inputs({"x": np.dtype(np.float32)}, {"x": (7, FEATURES)}, 5 + k)["x"]
                        for k in range(3)])
    y = outputs(models["same"], x)
    double = validate(models["same"], models["double"], inputs, "cpu")["outputs"]["y"]
    assert double["rel_l2"] == pytest.approx(1.0, abs=1e-9)  # |y - 2y| / |y|
    assert double["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert double["max_abs"] == pytest.approx(float(np.abs(y).max()), rel=1e-6)
    assert double["top1_agreement"] == 1
    neg = validate(models["same"], models["neg"], inputs, "cpu")
    assert neg["inputs"]["samples"] == 21
    out = neg["outputs"]["y"]
    assert out["rel_l2"] == pytest.approx(2.0, abs=1e-9) and out["cosine"] == pytest.approx(-1.0, abs=1e-9)
    assert out["top1_agreement"] == 0  # argmax(-y) is argmin(y)
    assert gate_failures(neg, min_cosine=0.5) == ["output 'y' cosine -1.000000 < 0.5"]
    assert gate_failures(neg, max_drop=99.0)[0].startswith("output 'y' top-1 agreement 0.00%")


def _data(tmp: Path, n: int = 40) -> tuple[str, str, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((n, FEATURES)).astype(np.float32)
    y = outputs(str(tmp / "same.onnx"), x).argmax(1)  # labels the original gets all right
    np.savez(tmp / "data.npz", x=x)
    np.save(tmp / "labels.npy", y)
    return str(tmp / "data.npz"), str(tmp / "labels.npy"), y


def test_accuracy_against_labels_and_gate_exit_codes(models: dict[str, str], tmp: Path) -> None:
    data, labels, _ = _data(tmp)
    report = validate(models["same"], models["neg"], Inputs(data=data, labels=labels, batch=16), "cpu")
    assert report["accuracy"] == {"original": 1.0, "pruned": 0.0, "drop_points": 100.0, "samples": 40}
    base = ["validate", models["same"], models["neg"], "--data", data, "--labels", labels, "--provider", "cpu"]
    r = cli(*base, "--max-drop", "5")
    assert r.returncode == 1 and "below the bar: accuracy drop 100.00 points > 5.0" in r.stderr
    r = cli(*base, "--max-drop", "100", "--json", str(tmp / "v.json"))
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp / "v.json").read_text())
    assert saved["accuracy"]["drop_points"] == 100 and saved["cost"]["macs_before"] == FEATURES * CLASSES
    r = cli("validate", models["same"], models["double"], "--min-cosine", "0.99")
    assert r.returncode == 0 and "cosine 1.000000" in r.stdout
    r = cli("validate", models["same"], models["neg"], "--min-cosine", "0.99")
    assert r.returncode == 1 and r.stderr.count("\n") == 1


def test_bad_data_is_one_line_naming_the_input(models: dict[str, str], tmp: Path) -> None:
    data, labels, y = _data(tmp)
    np.savez(tmp / "wrong_name.npz", image=np.zeros((4, FEATURES), np.float32))
    np.savez(tmp / "wrong_shape.npz", x=np.zeros((4, FEATURES + 1), np.float32))
    np.save(tmp / "short_labels.npy", y[:3])
    for args, message in ((["--data", str(tmp / "wrong_name.npz")], "no array for input 'x' (it has image)"),
                          (["--data", str(tmp / "wrong_shape.npz")], "data for input 'x' has shape [4, 7]"),
                          (["--data", data, "--labels", str(tmp / "short_labels.npy")], "labels must be 40 integers"),
                          (["--labels", labels], "--labels needs --data"),
                          (["--data", str(tmp / "missing.npz")], "no such data file")):
        r = cli("validate", models["same"], models["same"], *args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


def test_prune_validate_appends_reports_and_gate_writes_nothing(tmp: Path) -> None:
    model = save(handmade.conv_bn_relu_chain(), tmp / "chain.onnx")
    out, report = tmp / "out.onnx", tmp / "report.json"
    r = cli("prune", model, "-o", str(out), "--ratio", "0.5", "--validate", "--runs", "3", "--warmup", "1",
            "--report", str(report))
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    assert set(data["validation"]["outputs"]) == {o.name for o in onnx.load(model).graph.output}
    assert data["bench"]["batches"]["1"]["speedup"] > 0 and data["validation"]["provider"] == "cpu"
    blocked = tmp / "blocked.onnx"
    r = cli("prune", model, "-o", str(blocked), "--ratio", "0.5", "--min-cosine", "0.9999999")
    assert r.returncode == 1 and "below the bar" in r.stderr and not blocked.exists()
    assert not list(tmp.glob(".onnxprune-*"))


def _fake_runtime(monkeypatch, available: list[str], ran: list[str] | None = None) -> None:
    """onnxruntime claiming `available` providers; with `ran`, sessions claiming to run on those."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(available))
    if ran is not None:
        class Session:
            def __init__(self, *args, **kwargs) -> None:
                self.asked = kwargs["providers"]

            def get_providers(self) -> list[str]:
                return list(ran)
        monkeypatch.setattr(onnxruntime, "InferenceSession", Session)


def test_auto_takes_cpu_without_cuda(monkeypatch, models: dict[str, str]) -> None:
    _fake_runtime(monkeypatch, ["CPUExecutionProvider"])
    s = open_session(models["same"], "auto")
    assert (s.provider, s.device, s.note) == ("cpu", "cpu", "")
    with pytest.raises(OnnxPruneError, match="has no CUDAExecutionProvider"):
        open_session(models["same"], "cuda")


def test_silent_cpu_fallback_is_detected(monkeypatch, models: dict[str, str]) -> None:
    # The real CPU build is told CUDA is there: it drops CUDA with a warning and runs on CPU anyway.
    _fake_runtime(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings(record=True) as seen:  # onnxruntime's own warning is kept off the terminal
        warnings.simplefilter("always")
        s = open_session(models["same"], "auto")
    assert not seen, [str(w.message) for w in seen]
    assert s.provider == "cpu" and "CUDAExecutionProvider is listed but did not load" in s.note
    report = validate(models["same"], models["same"])
    assert report["provider"] == "cpu" and "did not load" in report["provider_note"]
    with pytest.raises(OnnxPruneError, match="--provider cuda: CUDAExecutionProvider is listed but did not load"):
        open_session(models["same"], "cuda")


def test_gpu_providers_reported_as_they_ran(monkeypatch) -> None:
    _fake_runtime(monkeypatch, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                  ran=["CUDAExecutionProvider", "CPUExecutionProvider"])
    s = open_session(b"model", "auto")
    assert (s.provider, s.device) == ("cuda", "cuda") and s.session.asked[0] == "CUDAExecutionProvider"
    with pytest.raises(OnnxPruneError, match="--provider tensorrt: TensorrtExecutionProvider .* ran on cuda"):
        open_session(b"model", "tensorrt")
    with pytest.raises(OnnxPruneError, match="unknown provider 'rocm'"):
        open_session(b"model", "rocm")


def test_bench_fields_and_ratios(models: dict[str, str], tmp: Path) -> None:
    report = bench([models["same"], models["double"]], batches=(1, 3), warmup=1, runs=7, provider="cpu", threads=1)
    assert report["provider"] == "cpu" and report["threads"] == 1 and set(report["batches"]) == {"1", "3"}
    for batch, entry in report["batches"].items():
        first, second = entry["models"]
        for s in (first, second):
            assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"]
            assert s["throughput"] == pytest.approx(int(batch) * 1000 / s["median_ms"])
        assert entry["speedup"] == pytest.approx(first["median_ms"] / second["median_ms"])
    static = save(linear(batch=1), tmp / "static.onnx")
    with pytest.raises(OnnxPruneError, match="static batch of 1; batch 8 cannot run"):
        bench([static], batches=(8,), runs=1)
    r = cli("bench", models["same"], models["neg"], "--batch", "1,2", "--runs", "3", "--warmup", "1",
            "--json", str(tmp / "b.json"))
    assert r.returncode == 0, r.stderr
    assert "speed-up" in r.stdout and "threads" in r.stdout and "MACs per sample at x=1x6: 30 -> 30" in r.stdout
    assert set(json.loads((tmp / "b.json").read_text())["batches"]) == {"1", "2"}


def _single(node: onnx.NodeProto, x: list[int], y: list[int], weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("node, x, y, weights, macs", [
    # 6 filters x 8x8 outputs x (4 inputs x 3x3)
    (helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4), [1, 4, 8, 8], [1, 6, 8, 8],
     {"w": np.ones((6, 4, 3, 3))}, 6 * 64 * 4 * 9),
    # 2 groups: each output sees 2 of the 4 inputs
    (helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1] * 4, group=2), [1, 4, 8, 8], [1, 6, 8, 8],
     {"w": np.ones((6, 2, 3, 3)), "b": np.ones(6)}, 6 * 64 * 2 * 9),
    # every input pixel scatters into 3 outputs x 3x3, stride 2
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2]), [2, 4, 5, 5], [2, 3, 11, 11],
     {"w": np.ones((4, 3, 3, 3))}, 2 * 4 * 25 * 3 * 9),
    (helper.make_node("Gemm", ["x", "w"], ["y"], transB=1), [2, 5], [2, 7], {"w": np.ones((7, 5))}, 2 * 7 * 5),
    (helper.make_node("MatMul", ["x", "w"], ["y"]), [3, 2, 5], [3, 2, 4], {"w": np.ones((5, 4))}, 3 * 2 * 4 * 5),
])
def test_mac_counter_matches_hand_counts(node, x, y, weights, macs) -> None:
    cost = count_model_cost(_single(node, x, y, weights))
    assert cost.macs == macs
    assert cost.params == sum(v.size for v in weights.values())


def test_sensitivity_sees_a_dead_channel_as_free(tmp: Path) -> None:
    model = dead_copy(handmade.conv_bn_relu_chain(), {"conv1": [3]})
    path = save(model, tmp / "dead.onnx")
    report = sensitivity(path, ratios=(0.15, 0.5), provider="cpu")
    by_id = {g["id"]: g for g in report["groups"]}
    assert set(by_id) == {"conv1", "conv2"} and report["metric"] == "cosine"
    conv1, conv2 = by_id["conv1"]["points"], by_id["conv2"]["points"]
    assert [p["removed"] for p in conv1] == [1, 4] and [p["removed"] for p in conv2] == [1, 6]
    assert conv1[0]["cosine"] == pytest.approx(1, abs=1e-6) and conv1[0]["rel_l2"] < 1e-5  # the dead one went
    assert conv2[0]["cosine"] < 1 - 1e-6 and conv1[1]["rel_l2"] > 1e-3


def test_sensitivity_cli_writes_json_and_plot(tmp: Path, models: dict[str, str]) -> None:
    model = save(handmade.residual_add(), tmp / "res.onnx")
    out, png = tmp / "s.json", tmp / "s.png"
    r = cli("sensitivity", model, "-o", str(out), "--plot", str(png), "--ratios", "0.25,0.5", "--compensate", "none")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["ratios"] == [0.25, 0.5] and data["compensation"]["compensate"] == "none"
    assert all(len(g["points"]) == 2 for g in data["groups"]) and data["groups"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("sensitivity", model, "-o", str(out), "--ratios", "0.5,1.5")
    assert r.returncode == 2 and "strictly between 0 and 1" in r.stderr
    data, labels, _ = _data(tmp)
    r = cli("sensitivity", models["same"], "-o", str(out), "--data", data, "--labels", labels)
    assert r.returncode == 0, r.stderr  # a Gemm feeding the output: nothing prunable, an empty report
    assert json.loads(out.read_text())["baseline_accuracy"] == 1.0


def test_missing_onnxruntime_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(OnnxPruneError, match=r"pip install 'onnxprune\[cpu\]'"):
        providers.runtime()


def _relu(shape: list) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_validation_batches_big_inputs_by_size_and_frees_buffers(tmp: Path) -> None:
    """No batch given: 32 samples a batch, fewer where that passes AUTO_BATCH_BYTES of inputs (a 3x320x320
    page is 1.2 MB: 6 a batch); the figures are those of one batch; the sessions keep no CPU arena."""
    model = save(_relu(["N", 3, 320, 320]), tmp / "big.onnx")
    x = np.random.default_rng(0).standard_normal((10, 3, 320, 320)).astype(np.float32)
    np.savez(tmp / "big.npz", x=x)
    session = open_session(model, "cpu").session
    sizes = [len(b["x"]) for b in open_inputs(Inputs(data=str(tmp / "big.npz")), session).batches]
    assert AUTO_BATCH_BYTES // x[0].nbytes == 6 and sizes == [6, 4]
    assert [len(b["x"]) for b in open_inputs(Inputs(data=str(tmp / "big.npz"), batch=32), session).batches] == [10]
    small = save(linear(), tmp / "small.onnx")
    np.savez(tmp / "small.npz", x=np.zeros((40, FEATURES), np.float32))
    assert [len(b["x"]) for b in open_inputs(Inputs(data=str(tmp / "small.npz")), open_session(small, "cpu").session)
            .batches] == [32, 8]
    by_size = validate(model, model, Inputs(data=str(tmp / "big.npz")), "cpu")
    whole = validate(model, model, Inputs(data=str(tmp / "big.npz"), batch=10), "cpu")
    figures = [{k: v for k, v in r["outputs"]["y"].items() if k != "task_why"} for r in (by_size, whole)]
    assert figures[0] == figures[1]  # task_why names the first batch's shape
    assert not open_session(model, "cpu", arena=False).session.get_session_options().enable_cpu_mem_arena
    assert open_session(model, "cpu").session.get_session_options().enable_cpu_mem_arena


def test_timed_sessions_do_not_spin(monkeypatch) -> None:
    """Two sessions timed in turn: neither may keep its threads spinning after its run (on 2 cores the
    spinning threads took the cores from the other model's run, A/A 0.76-1.29x); other sessions keep the
    default."""
    import importlib

    from conftest import ROOT
    from onnxprune.search import stopwatch as latency

    bench_module = importlib.import_module("onnxprune.validation.bench")  # the package exports bench() itself
    from onnxprune.runtime.providers import open_session

    path = str(ROOT / "models" / "fashion" / "lenet300.onnx")
    key = "session.intra_op.allow_spinning"
    assert open_session(path, "cpu", spin=False).session.get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(RuntimeError):  # not set: onnxruntime's default (spinning)
        open_session(path, "cpu").session.get_session_options().get_session_config_entry(key)
    opened = []

    def spy(*args, **kwargs):
        opened.append(kwargs.get("spin", True))
        return open_session(*args, **kwargs)

    monkeypatch.setattr(bench_module, "open_session", spy)
    monkeypatch.setattr(latency, "open_session", spy)
    bench_module.bench([path, path], runs=2, warmup=1)
    latency.Stopwatch(path, latency.SpeedTarget(speedup=2.0, runs=2, warmup=1)).speedup(path)
    assert opened == [False] * 4
