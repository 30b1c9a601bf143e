"""Recovery: blocks cut where the pruned model meets the original, trained to match it, never made worse."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import handmade
import transformer_graphs
from conftest import ROOT
from onnxprune import prune
from onnxprune.errors import OnnxPruneError
from onnxprune.recovery import distill
from onnxprune.recovery.distill import RecoverOptions, find_blocks, masked_sse, recover
from onnxprune.recovery.losses import cosine_sum, feature_moments, feature_weights, loss_sum
from onnxprune.recovery.torch_graph import TorchGraph

RESTORED = "original weights (held-out error rose)"
rng = np.random.default_rng(0)


# -- helpers -------------------------------------------------------------------
def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The first output for each sample of a static-batch-1 model, in onnxruntime."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.stack([session.run(None, {name: sample[None]})[0][0] for sample in x])


def mse(model: onnx.ModelProto, reference: onnx.ModelProto, x: np.ndarray) -> float:
    """Mean squared difference of two models' outputs on the samples."""
    return float(np.mean((outputs(model, x) - outputs(reference, x)) ** 2))


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The initializers as arrays."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def assert_only_values_changed(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Same nodes, graph inputs/outputs, opsets and initializer names/shapes/types; values may differ."""
    g, h = before.graph, after.graph
    assert [n.SerializeToString() for n in g.node] == [n.SerializeToString() for n in h.node]
    assert [v.SerializeToString() for v in g.input] == [v.SerializeToString() for v in h.input]
    assert [v.SerializeToString() for v in g.output] == [v.SerializeToString() for v in h.output]
    assert list(before.opset_import) == list(after.opset_import)
    assert [(t.name, list(t.dims), t.data_type) for t in g.initializer] == \
        [(t.name, list(t.dims), t.data_type) for t in h.initializer]


@pytest.fixture(scope="module")
def bert() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A hand-built BERT block and its heads/FFN pruned by half."""
    model = transformer_graphs.bert_block()
    return model, prune(model, ratio=0.5)[0]


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    """Calibration and fresh test inputs for the BERT block ([samples, S, C])."""
    shape = (transformer_graphs.S, transformer_graphs.C)
    return rng.standard_normal((40, *shape)).astype(np.float32), rng.standard_normal((16, *shape)).astype(np.float32)


# -- blocks --------------------------------------------------------------------
def test_transformer_blocks_cut_at_the_hidden_size(bert):
    original, pruned = bert
    blocks = find_blocks(original, pruned)
    assert len(blocks) == 2
    assert [b.outputs for b in blocks] == [["ln1"], ["y"]]  # after each post-norm LayerNorm
    assert blocks[0].inputs == ["x"] and blocks[1].inputs == ["ln1"]
    x = torch.zeros(1, transformer_graphs.S, transformer_graphs.C)
    with torch.no_grad():
        cut = TorchGraph(pruned)({"x": x}, ["ln1"])["ln1"]
    assert list(cut.shape) == [1, transformer_graphs.S, transformer_graphs.C]  # the hidden size, unpruned
    assert all(b.params and b.nodes for b in blocks)
    assert not set(blocks[0].params) & set(blocks[1].params)


def test_cnn_chain_recovers_as_one_block():
    original = handmade.conv_bn_relu_chain()
    pruned = prune(original, ratio=0.5)[0]
    blocks = find_blocks(original, pruned)
    assert len(blocks) >= 1 and blocks[-1].outputs == ["y"]
    x = rng.standard_normal((6, *handmade.X2D[1:])).astype(np.float32)
    model, record = recover(original, pruned, {"x": x}, RecoverOptions(epochs=1, lr=1e-3, batch=2))
    assert_only_values_changed(pruned, model)
    assert len(record["blocks"]) == len(blocks)
    assert record["samples"] == {"train": 5, "held_out": 1}


# -- recovery ------------------------------------------------------------------
def test_recovery_lowers_the_error_and_changes_only_initializer_values(bert, samples):
    original, pruned = bert
    calib, test = samples
    lines: list[str] = []
    model, record = recover(original, pruned, {"x": calib}, RecoverOptions(epochs=2, lr=1e-2, batch=4),
                            progress=lines.append)
    assert_only_values_changed(pruned, model)
    assert weights(model).keys() == weights(pruned).keys()
    assert any(not np.array_equal(a, weights(pruned)[k]) for k, a in weights(model).items())
    assert mse(model, original, test) < 0.8 * mse(pruned, original, test)
    json.dumps(record)  # serialisable
    assert record["samples"] == {"train": 32, "held_out": 8} and record["end_to_end"] is None
    for b in record["blocks"]:
        assert b["kept"] == "recovered" and b["held_out_loss_after"] < b["held_out_loss_before"]
        assert b["train_loss_after"] < b["train_loss_before"]
    block_lines = [line for line in lines if line.startswith("group ")]
    assert [line.split(" block ")[0] for line in block_lines] == ["group 1/2", "group 2/2"]


def test_end_to_end_epochs_are_recorded(bert, samples):
    original, pruned = bert
    _, record = recover(original, pruned, {"x": samples[0][:8]},
                        RecoverOptions(epochs=1, lr=1e-3, end_to_end=1, batch=4))
    e2e = record["end_to_end"]
    assert e2e["outputs"] == ["y"] and e2e["epochs"] == 1
    assert e2e["kept"] == "recovered" or e2e["held_out_loss_after"] >= e2e["held_out_loss_before"]


def test_guard_keeps_the_original_weights_when_the_held_out_error_rises(bert, samples):
    original, pruned = bert
    calib, test = samples
    model, record = recover(original, pruned, {"x": calib}, RecoverOptions(epochs=1, lr=10.0, batch=4))
    assert record["blocks"]
    for b in record["blocks"]:
        assert b["held_out_loss_after"] > b["held_out_loss_before"]  # lr=10 wrecks every block ...
        assert b["kept"] == RESTORED  # ... so none of its weights are kept
    assert all(np.array_equal(a, weights(pruned)[k]) for k, a in weights(model).items())
    assert mse(model, original, test) <= mse(pruned, original, test)


# -- masking -------------------------------------------------------------------
def token_model(hidden: int, seed: int = 0) -> onnx.ModelProto:
    """Per-token MLP y = relu(x W1) W2 + b on [N, T, 4] with an (unread) attention_mask [N, T] input."""
    r = np.random.default_rng(seed)
    w1, w2 = r.standard_normal((4, 8)).astype(np.float32) / 2, r.standard_normal((8, 4)).astype(np.float32) / 3
    inits = [numpy_helper.from_array(w1[:, :hidden], "w1"), numpy_helper.from_array(w2[:hidden], "w2"),
             numpy_helper.from_array(r.standard_normal(4).astype(np.float32) / 10, "b")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "w2"], ["z"], name="down"),
             helper.make_node("Add", ["z", "b"], ["y"], name="bias")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"])]
    graph = helper.make_graph(nodes, "tokens", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                        ["N", "T", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_masked_sse_leaves_padded_positions_out():
    pred, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    sse, count = masked_sse(pred, target, mask)
    assert count == 3 * 4
    moved = target.clone()
    moved[mask == 0] = float("nan")
    assert torch.equal(masked_sse(pred, moved, mask)[0], sse)
    assert masked_sse(pred, target, None)[1] == 24
    assert masked_sse(pred[0], target[0], mask)[1] == 12  # not [N, T, ...]: counted whole


def test_padded_positions_do_not_change_the_trained_weights():
    original, pruned = token_model(8), token_model(4)
    x = rng.standard_normal((12, 5, 4)).astype(np.float32)
    mask = np.ones((12, 5), np.int64)
    mask[:, 3:] = 0
    options = RecoverOptions(epochs=2, lr=1e-2, batch=4, mask="attention_mask")

    def trained(inputs: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        model, record = recover(original, pruned, {"x": inputs, "attention_mask": mask}, options)
        return weights(model), record

    base, record = trained(x)
    assert record["blocks"][0]["kept"] == "recovered"
    assert record["masked_positions"] == pytest.approx(0.4)
    assert any(not np.array_equal(a, weights(pruned)[k]) for k, a in base.items())
    padded = x.copy()
    padded[:, 3:] = rng.standard_normal((12, 2, 4)) * 100
    same, _ = trained(padded)
    assert all(np.array_equal(base[k], same[k]) for k in base)
    shifted = x.copy()
    shifted[:, 0] += 1.0
    other, _ = trained(shifted)
    assert any(not np.array_equal(base[k], other[k]) for k in base)


# -- losses --------------------------------------------------------------------
def test_normalized_loss_is_blind_to_the_scale_of_one_feature():
    target = torch.randn(3, 5, 6)
    pred = target + 0.1 * torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])

    def normalized(p: torch.Tensor, t: torch.Tensor) -> float:
        weight = feature_weights(feature_moments(t, mask))
        total, count = loss_sum("normalized", p, t, mask, weight)
        return float(total) / count

    scale = torch.ones(6)
    scale[2] = 1000.0  # an outlier feature, as in a trained residual stream
    assert normalized(pred * scale, target * scale) == pytest.approx(normalized(pred, target), rel=1e-4)
    plain = [float(loss_sum("mse", p, t, mask, None)[0]) for p, t in ((pred, target), (pred * scale, target * scale))]
    assert plain[1] > 100 * plain[0]  # the plain MSE is all outlier


@pytest.mark.parametrize("kind", ["mse", "normalized", "cosine"])
def test_padded_positions_never_enter_a_loss(kind):
    pred, target = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    weight = feature_weights(feature_moments(target, mask))
    total, count = loss_sum(kind, pred, target, mask, weight)
    assert count == (5 if kind == "cosine" else 15)
    wild = target.clone()
    wild[mask == 0] = float("nan")
    assert torch.equal(feature_weights(feature_moments(wild, mask)), weight)
    assert torch.equal(loss_sum(kind, pred, wild, mask, weight)[0], total)


def test_cosine_loss_reads_directions_only():
    target = torch.randn(4, 8)
    assert float(cosine_sum(3 * target, target, None)[0]) == pytest.approx(0, abs=1e-5)
    assert float(cosine_sum(-target, target, None)[0]) == pytest.approx(8, rel=1e-5)  # 4 rows, 1 - (-1) each
    assert cosine_sum(target, target, None)[1] == 4


def test_recovery_trains_on_each_loss_and_records_it(bert, samples):
    original, pruned = bert
    calib, _ = samples
    for kind in ("normalized", "cosine"):
        _, record = recover(original, pruned, {"x": calib[:8]},
                            RecoverOptions(epochs=1, lr=1e-3, batch=4, loss=kind, end_to_end=1))
        assert all(b["loss"] == kind for b in record["blocks"]) and record["end_to_end"]["loss"] == "cosine"
        for b in record["blocks"] + [record["end_to_end"]]:  # never worse, whatever the loss
            assert b["kept"] != "recovered" or b["held_out_loss_after"] < b["held_out_loss_before"]


# -- trimming padding ----------------------------------------------------------
def mixing_model() -> onnx.ModelProto:
    """y = x + mean over all positions of x: every position reads the padding, so trimming would change it."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[1], keepdims=1),
             helper.make_node("MatMul", ["m", "w"], ["mw"], name="proj"),
             helper.make_node("Add", ["x", "mw"], ["y"], name="add")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"])]
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(nodes, "mixing", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                       ["N", "T", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fixed_length_model() -> onnx.ModelProto:
    """y = reshape(reshape(x, [N, 20]) W, [N, 5, 4]): it runs at 5 positions only."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "w"], ["g"], name="proj"),
             helper.make_node("Reshape", ["g", "back"], ["y"], name="unflatten")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"])]
    inits = [numpy_helper.from_array(np.eye(20, dtype=np.float32), "w"),
             numpy_helper.from_array(np.array([0, 20], np.int64), "flat"),
             numpy_helper.from_array(np.array([0, 5, 4], np.int64), "back")]
    graph = helper.make_graph(nodes, "fixed", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                      ["N", 5, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ragged(n: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples of lengths 1..t with padding at the end."""
    x = rng.standard_normal((n, t, 4)).astype(np.float32)
    mask = (np.arange(t)[None] < rng.integers(1, t, n)[:, None]).astype(np.int64)
    return x, mask


def test_trimmed_padding_trains_as_the_full_length(monkeypatch):
    original, pruned = token_model(8), token_model(4)
    x, mask = ragged(12, 6)
    # one mini-batch of every training run: trimming (which also groups runs by length) sees the same batches
    options = RecoverOptions(epochs=2, lr=1e-2, batch=16, mask="attention_mask")
    model, record = recover(original, pruned, {"x": x, "attention_mask": mask}, options)
    assert record["trimmed_padding"]
    monkeypatch.setattr(distill, "_trimmable", lambda *_: False)
    full, record = recover(original, pruned, {"x": x, "attention_mask": mask}, options)
    assert not record["trimmed_padding"]
    for k, a in weights(full).items():
        np.testing.assert_allclose(weights(model)[k], a, rtol=1e-4, atol=1e-6)


def test_trimmed_mini_batches_hold_runs_of_about_the_same_length():
    x, mask = ragged(64, 12)
    data = distill._Samples({"x": x, "attention_mask": mask}, distill.Layout([], True, 1, []), "attention_mask")
    data.trim = True
    lengths = torch.from_numpy(mask.sum(1))
    runs = torch.arange(64)
    steps = data.steps(runs, 8, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(steps).tolist()) == runs.tolist()  # every run once
    ordered = sorted(steps, key=lambda step: int(lengths[step].min()))
    assert torch.all(torch.diff(torch.cat([lengths[step].sort().values for step in ordered])) >= 0)
    again = data.steps(runs, 8, torch.Generator().manual_seed(1))
    assert [s.tolist() for s in again] != [s.tolist() for s in steps]  # shuffled, not one fixed order
    data.trim = False
    assert len(data.steps(runs, 8, torch.Generator().manual_seed(0))) == 8


def test_end_to_end_only_keeps_no_block_targets(bert, samples, monkeypatch):
    original, pruned = bert
    kept: list[str] = []
    compute = distill._compute
    monkeypatch.setattr(distill, "_compute", lambda *a: (kept.extend(a[3]), compute(*a))[1])
    lines: list[str] = []
    model, record = recover(original, pruned, {"x": samples[0]}, RecoverOptions(epochs=0, end_to_end=3, lr=1e-2,
                                                                                 batch=4), progress=lines.append)
    assert [line.split(",")[0] for line in lines if "epoch" in line] == [f"end to end: epoch {k}/3" for k in (1, 2, 3)]
    assert kept == ["y"]  # the final output only: no block's cut is stored
    assert record["blocks"] == [] and record["end_to_end"]["kept"] == "recovered"
    assert_only_values_changed(pruned, model)
    assert mse(model, original, samples[1]) < mse(pruned, original, samples[1])


@pytest.mark.parametrize("make", [mixing_model, fixed_length_model])
def test_no_trimming_where_positions_read_the_padding(make):
    x, mask = ragged(8, 5)
    _, record = recover(make(), make(), {"x": x, "attention_mask": mask},
                        RecoverOptions(epochs=1, batch=4, mask="attention_mask"))
    assert not record["trimmed_padding"]


# -- errors --------------------------------------------------------------------
def test_user_errors_are_one_line(bert, samples):
    original, pruned = bert
    with pytest.raises(OnnxPruneError, match="at least 2 samples"):
        recover(original, pruned, {"x": samples[0][:1]})
    with pytest.raises(OnnxPruneError, match="mask 'attention_mask' is not an input"):
        recover(original, pruned, {"x": samples[0][:4]}, RecoverOptions(mask="attention_mask"))
    with pytest.raises(OnnxPruneError, match="no array for input 'x'"):
        recover(original, pruned, {"y": samples[0][:4]})
    with pytest.raises(OnnxPruneError, match="would train nothing"):
        recover(original, pruned, {"x": samples[0][:4]}, RecoverOptions(epochs=0))
    with pytest.raises(OnnxPruneError, match="unknown recovery loss 'l1'"):
        recover(original, pruned, {"x": samples[0][:4]}, RecoverOptions(loss="l1"))


def test_without_torch_recover_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import onnx\n"
            "from onnxprune.errors import OnnxPruneError\n"
            "from onnxprune.recovery.distill import RecoverOptions, recover\n"
            "try:\n    recover(onnx.ModelProto(), onnx.ModelProto(), {}, RecoverOptions())\n"
            "except OnnxPruneError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.stdout.strip() == "recovery needs PyTorch: pip install 'onnxprune[recover]'", done.stderr
