"""QOperator models (QLinearConv, QGemm, QLinearMatMul, QLinearAdd...): pruned with every integer op kept."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import oracle
import quantized_models as qm
from conftest import ROOT, cli
from onnxprune import analyze
from onnxprune.loading import export, prepare, whole_weights

logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process
FLOAT = {
    "vgg": ROOT / "models/fashion/vgg_bnkeep.onnx",
    "resnet18": ROOT / "models/torchvision/resnet18_ts_bnkeep.onnx",
    "yolov8n": ROOT / "models/yolo/yolov8n_w0.0625_nc10_160_ul.onnx",
    "llama": ROOT / "models/transformers/llama_ts.onnx",  # its attention scores: QLinearMatMul of two activations
}
WEIGHT_OPS = ("QLinearConv", "QLinearMatMul", "QGemm")


@pytest.fixture(scope="module")
def qop(tmp_path_factory) -> dict[str, Path]:
    """QOperator copies of the float models, weights per channel."""
    folder = tmp_path_factory.mktemp("qop")
    made = {name: qm.quantize_qop(path, folder / f"{name}.onnx") for name, path in FLOAT.items()}
    made["vgg_per_tensor"] = qm.quantize_qop(FLOAT["vgg"], folder / "vgg_per_tensor.onnx", per_channel=False)
    onnx.save(_small(), folder / "small_float.onnx")
    made["small"] = qm.quantize_qop(folder / "small_float.onnx", folder / "small.onnx")
    return made


def _qlinear(model: onnx.ModelProto) -> dict[str, int]:
    """How many QLinear / QGemm / Q / DQ nodes of each type the model holds."""
    counts: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "QuantizeLinear", "DequantizeLinear"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _small(softmax_channels: bool = False) -> onnx.ModelProto:
    """A float CNN whose QOperator copy holds QLinearLeakyRelu, QLinearAveragePool, QLinearSigmoid, QLinearMul,
    QLinearConcat and QLinearSoftmax (over the last axis) between its QLinearConvs (`softmax_channels`: a
    softmax over the channels in place of the sigmoid)."""
    rng = np.random.default_rng(0)
    inits = []

    def conv(name: str, cin: int, cout: int, x: str, k: int = 3) -> onnx.NodeProto:
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.3
        inits.extend([numpy_helper.from_array(w, f"{name}_w"),
                      numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, f"{name}_b")])
        return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name, pads=[k // 2] * 4)

    nodes = [conv("c1", 3, 8, "x"), helper.make_node("LeakyRelu", ["c1"], ["l1"], alpha=0.1),
             helper.make_node("AveragePool", ["l1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             conv("c2a", 8, 8, "p1"),
             helper.make_node("Softmax", ["c2a"], ["s2"], axis=1) if softmax_channels else
             helper.make_node("Sigmoid", ["c2a"], ["s2"]),
             conv("c2b", 8, 6, "p1", k=1), helper.make_node("Mul", ["c2b", "c2b"], ["m2"]),
             helper.make_node("Concat", ["s2", "m2"], ["cat"], axis=1), conv("c3", 14, 4, "cat"),
             helper.make_node("Softmax", ["c3"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _float_output(path: Path) -> onnx.ModelProto:
    """The QOperator model with its last QGemm giving float (no y_scale, y_zero_point) in place of the
    DequantizeLinear after it."""
    model = onnx.load(path)
    gemm = [n for n in model.graph.node if n.op_type == "QGemm"][-1]
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == gemm.output[0])
    del gemm.input[7:]
    gemm.output[0] = dq.output[0]
    model.graph.node.remove(dq)
    return model


def _load(qop: dict[str, Path], name: str) -> onnx.ModelProto:
    """A test model by name: a QOperator copy, or a hand-made variant."""
    if name == "matmuls":
        return _matmuls()
    return _float_output(qop["vgg"]) if name == "vgg_float_output" else onnx.load(qop[name])


def _matmuls(act_scale: np.ndarray | None = None) -> onnx.ModelProto:
    """x -> QuantizeLinear -> QLinearMatMul(16 -> 8) -> QLinearMatMul(8 -> 4) -> DequantizeLinear -> y, weights
    int8 per column (`act_scale`: the first op's output scale, per tensor unless given)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z"),
             numpy_helper.from_array(np.array(0.02, np.float32) if act_scale is None else act_scale, "h_s")]
    for name, shape in (("w1", (16, 8)), ("w2", (8, 4))):
        inits += [numpy_helper.from_array(rng.integers(-127, 128, shape).astype(np.int8), name),
                  numpy_helper.from_array(rng.uniform(0.01, 0.02, shape[1]).astype(np.float32), f"{name}_s"),
                  numpy_helper.from_array(np.zeros(shape[1], np.int8), f"{name}_z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_Q"),
             helper.make_node("QLinearMatMul", ["xq", "s", "z", "w1", "w1_s", "w1_z", "h_s", "z"], ["h"], name="mm1"),
             helper.make_node("QLinearMatMul", ["h", "h_s", "z", "w2", "w2_s", "w2_z", "s", "z"], ["yq"], name="mm2"),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"], name="y_DQ")]
    graph = helper.make_graph(nodes, "matmuls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


ORACLE_CASES = [("vgg", "random"), ("vgg", "all_but_one"), ("vgg_per_tensor", "random"), ("vgg_float_output", "random"),
                ("resnet18", "random"), ("resnet18", "all_but_one"),
                ("yolov8n", "random"), ("small", "random"), ("small", "all_but_one"), ("matmuls", "random"),
                ("matmuls", "all_but_one"), ("llama", "random")]


def test_a_qoperator_transformer_keeps_its_heads_and_ffn_units_prunable(qop) -> None:
    """LLaMA's QOperator copy: the attention QLinearMatMuls of two activations carry the heads; its groups and
    MACs are the float model's (BERT's bias QLinearAdds with constant operands freeze, with that reason)."""
    quantized, floating = analyze(qop["llama"]), analyze(FLOAT["llama"])
    assert [g.channels for g in quantized.prunable] == [g.channels for g in floating.prunable]
    assert len(quantized.prunable) == 4


@pytest.mark.parametrize("name, subset", ORACLE_CASES, ids=[f"{n}-{s}" for n, s in ORACLE_CASES])
def test_dead_channels_of_a_qoperator_model_leave_outputs_bit_identical(qop, name: str, subset: str) -> None:
    """Dead channels (their int8 weights at the zero point) removed: the same outputs exactly, every QLinear op kept."""
    model = _load(qop, name)
    pruned = oracle.check_dead_exact(model, subset, _qlinear)  # nothing left in float
    added = {n.op_type for n in pruned.graph.node} - {n.op_type for n in model.graph.node}
    assert not {"Conv", "Gemm", "MatMul"} & added
    inits = {t.name: t for t in pruned.graph.initializer}
    weights = [inits[n.input[3]] for n in pruned.graph.node if n.op_type in WEIGHT_OPS and n.input[3] in inits]
    assert weights and all(t.data_type == TensorProto.INT8 for t in weights)  # (attention scores: no weight)
    before = {n.input[3] for n in model.graph.node if n.op_type in WEIGHT_OPS}
    assert sum(np.prod(t.dims) for t in weights) < sum(np.prod(t.dims) for t in model.graph.initializer
                                                       if t.name in before)


@pytest.mark.parametrize("name", ["vgg", "vgg_per_tensor", "vgg_float_output", "resnet18", "yolov8n", "small",
                                  "matmuls"])
def test_read_and_written_back_every_qlinear_node_reads_the_same_inputs(qop, name: str) -> None:
    """Folded and put back: each integer op has its name, inputs (integers, scales, zero points, int32 bias, byte
    for byte), output and attributes, and the folding adds or leaves no node."""
    src = _load(qop, name)
    prep = prepare(src)
    back = export(prep, requantize=whole_weights(prep))

    def nodes(model: onnx.ModelProto) -> dict:
        inits = {t.name: t for t in model.graph.initializer}
        return {n.name: (n.op_type, n.domain, list(n.output), sorted(str(a) for a in n.attribute),
                         [(i, list(inits[i].dims), inits[i].data_type, numpy_helper.to_array(inits[i]).tobytes())
                          if i in inits else i for i in n.input])
                for n in model.graph.node if n.op_type.startswith("QLinear") or n.op_type == "QGemm"}

    assert len(prep.quantized) == sum(n.op_type in WEIGHT_OPS for n in src.graph.node) > 0
    assert nodes(back) == nodes(src) and _qlinear(back) == _qlinear(src)


@pytest.mark.parametrize("name", ["vgg", "resnet18"])
def test_a_qoperator_model_prunes_from_the_cli(qop, name: str, tmp: Path) -> None:
    out = tmp / "p.onnx"
    r = cli("prune", str(qop[name]), "-o", str(out), "--ratio", "0.5", quiet=False)
    assert r.returncode == 0, r.stderr
    assert "written back as integers" in r.stdout
    assert _qlinear(onnx.load(out)) == _qlinear(onnx.load(qop[name]))
    ops = qm.ops(out)
    assert "Conv" not in ops and "Gemm" not in ops  # nothing left dequantized
    x = oracle.random_feeds(onnx.load(out), analyze(qop[name]).cost.input_dims)
    assert all(np.isfinite(y).all() for y in oracle.run(onnx.load(out), x))


def test_the_activation_ops_carry_channels_like_their_float_ones(qop) -> None:
    """The small CNN's groups are its float copy's: c1 through LeakyRelu and AveragePool, c2a and c2b joined by
    the concat; the last conv's channels reach the output (a softmax over the last axis passes them)."""
    ops = set(qm.ops(qop["small"]))
    assert {"QLinearLeakyRelu", "QLinearAveragePool", "QLinearSigmoid", "QLinearMul", "QLinearConcat",
            "QLinearSoftmax"} <= ops
    quantized, floating = analyze(qop["small"]), analyze(_small())
    assert sorted(g.channels for g in quantized.prunable) == sorted(g.channels for g in floating.prunable) == [6, 8, 8]


def test_a_qlinear_softmax_over_the_channels_freezes_them(tmp: Path) -> None:
    onnx.save(_small(softmax_channels=True), tmp / "f.onnx")
    analysis = analyze(qm.quantize_qop(tmp / "f.onnx", tmp / "q.onnx"))
    assert "QLinearSoftmax" in qm.ops(tmp / "q.onnx")
    assert sorted(g.channels for g in analysis.prunable) == [6, 8]
    assert any("QLinearSoftmax" in r and "channel axis" in r for g in analysis.groups for r in g.reasons)


def test_a_qlinear_op_outside_the_form_is_refused_naming_it(tmp: Path) -> None:
    """An output scale per channel is not what quantize_static writes: refused in one line with the node."""
    path = tmp / "m.onnx"
    onnx.save(_matmuls(np.full(8, 0.02, np.float32)), path)
    r = cli("prune", str(path), "-o", str(tmp / "out.onnx"), "--ratio", "0.3")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "QLinearMatMul 'mm1'" in r.stderr and "not per tensor" in r.stderr
    assert not (tmp / "out.onnx").exists()
    model = _matmuls()  # a QLinear op no rule follows: refused by name before any work
    model.graph.node[2].op_type, model.graph.node[2].domain = "QLinearWhere", "com.microsoft"
    onnx.save(model, path)
    r = cli("prune", str(path), "-o", str(tmp / "out.onnx"), "--ratio", "0.3")
    assert r.returncode == 2 and "not supported (found QLinearWhere" in r.stderr
