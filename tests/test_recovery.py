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
from onnxprune.recovery.distill import RecoverOptions, find_blocks, masked_sse, recover
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
        assert b["kept"] == "recovered" and b["held_out_mse_after"] < b["held_out_mse_before"]
        assert b["train_mse_after"] < b["train_mse_before"]
    block_lines = [line for line in lines if line.startswith("group ")]
    assert [line.split(" block ")[0] for line in block_lines] == ["group 1/2", "group 2/2"]


def test_end_to_end_epochs_are_recorded(bert, samples):
    original, pruned = bert
    _, record = recover(original, pruned, {"x": samples[0][:8]},
                        RecoverOptions(epochs=1, lr=1e-3, end_to_end=1, batch=4))
    e2e = record["end_to_end"]
    assert e2e["outputs"] == ["y"] and e2e["epochs"] == 1
    assert e2e["kept"] == "recovered" or e2e["held_out_mse_after"] >= e2e["held_out_mse_before"]


def test_guard_keeps_the_original_weights_when_the_held_out_error_rises(bert, samples):
    original, pruned = bert
    calib, test = samples
    model, record = recover(original, pruned, {"x": calib}, RecoverOptions(epochs=1, lr=10.0, batch=4))
    assert record["blocks"]
    for b in record["blocks"]:
        assert b["held_out_mse_after"] > b["held_out_mse_before"]  # lr=10 wrecks every block ...
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


# -- errors --------------------------------------------------------------------
def test_user_errors_are_one_line(bert, samples):
    original, pruned = bert
    with pytest.raises(OnnxPruneError, match="at least 2 samples"):
        recover(original, pruned, {"x": samples[0][:1]})
    with pytest.raises(OnnxPruneError, match="mask 'attention_mask' is not an input"):
        recover(original, pruned, {"x": samples[0][:4]}, RecoverOptions(mask="attention_mask"))
    with pytest.raises(OnnxPruneError, match="no array for input 'x'"):
        recover(original, pruned, {"y": samples[0][:4]})


def test_without_torch_recover_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import onnx\n"
            "from onnxprune.errors import OnnxPruneError\n"
            "from onnxprune.recovery.distill import RecoverOptions, recover\n"
            "try:\n    recover(onnx.ModelProto(), onnx.ModelProto(), {}, RecoverOptions())\n"
            "except OnnxPruneError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.stdout.strip() == "recovery needs PyTorch: pip install 'onnxprune[recover]'", done.stderr
