"""Quantized models (QDQ): pruned with their Q/DQ nodes kept, weights sliced bit for bit, refusals in one line."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import oracle
import quantized_models as qm
from conftest import ROOT, cli, sha
from onnxprune import analyze, apply_plan, make_plan
from onnxprune.graph.quantized import dequantize, quantize

logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process
FLOAT = {
    "vgg": ROOT / "models/fashion/vgg_bnkeep.onnx",
    "resnet18": ROOT / "models/torchvision/resnet18_ts_bnkeep.onnx",
    "yolov8n": ROOT / "models/yolo/yolov8n_w0.0625_nc10_160_ul.onnx",
    "bert": ROOT / "models/transformers/bert_ts.onnx",
    "llama": ROOT / "models/transformers/llama_ts.onnx",
}


@pytest.fixture(scope="module")
def qdq(tmp_path_factory) -> dict[str, Path]:
    """QDQ copies of the float models: per channel (onnxruntime's default for TensorRT), and VGG per tensor."""
    folder = tmp_path_factory.mktemp("qdq")
    made = {name: qm.quantize_qdq(path, folder / f"{name}.onnx") for name, path in FLOAT.items()}
    made["vgg_per_tensor"] = qm.quantize_qdq(FLOAT["vgg"], folder / "vgg_per_tensor.onnx", per_channel=False)
    for name in ("vgg", "resnet18", "yolov8n", "bert", "llama"):
        made[f"{name}_dynamic"] = qm.quantize_dyn(FLOAT[name], folder / f"{name}_dynamic.onnx")
    made["llama_nbits"] = qm.quantize_nbits(FLOAT["llama"], folder / "llama_nbits.onnx")  # 4 bits, blocks of 32
    made["bert_nbits_sym16"] = qm.quantize_nbits(FLOAT["bert"], folder / "bert_nbits.onnx", block=16, symmetric=True)
    made["bert_nbits8"] = qm.quantize_nbits(FLOAT["bert"], folder / "bert_nbits8.onnx", bits=8)
    return made


def _dq_count(model: onnx.ModelProto) -> int:
    """How many quantization nodes the model holds (QDQ pairs, dynamic int8 ops)."""
    return sum(n.op_type in QUANTIZED_OPS for n in model.graph.node)


ORACLE_CASES = [(n, s) for n in ("vgg", "vgg_per_tensor", "resnet18", "bert") for s in ("random", "all_but_one")] + \
    [("yolov8n", "random"), ("llama", "all_but_one"), ("vgg_dynamic", "random"), ("resnet18_dynamic", "all_but_one"),
     ("yolov8n_dynamic", "random"), ("bert_dynamic", "random"), ("llama_dynamic", "all_but_one"),
     ("llama_nbits", "random"), ("llama_nbits", "all_but_one"), ("bert_nbits_sym16", "random"), ("bert_nbits8", "first")]
QUANTIZED_OPS = ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                 "MatMulNBits")


@pytest.mark.parametrize("name, subset", ORACLE_CASES, ids=[f"{n}-{s}" for n, s in ORACLE_CASES])
def test_dead_channels_of_a_qdq_model_leave_outputs_bit_identical(qdq, name: str, subset: str) -> None:
    """Dead channels (their int8 weights at the zero point) removed: the same outputs exactly, every Q/DQ kept."""
    pruned = oracle.check_dead_exact(onnx.load(qdq[name]), subset, _dq_count)  # every Q/DQ kept
    quantized_inputs = {n.input[0] for n in pruned.graph.node if n.op_type == "DequantizeLinear"} | \
        {n.input[1] for n in pruned.graph.node if n.op_type in ("ConvInteger", "MatMulInteger", "MatMulNBits")}
    ints = [t for t in pruned.graph.initializer if t.name in quantized_inputs]
    assert ints and all(t.data_type in (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32) for t in ints)
    assert not any(t.name.endswith("_dequantized") for t in pruned.graph.initializer)  # no float copy left behind


@pytest.mark.parametrize("name", ["vgg", "bert"])
def test_read_and_written_back_a_qdq_model_keeps_every_dequantize_input_as_it_was(qdq, name: str) -> None:
    """Folded and put back: each DequantizeLinear reads the same integers, scales and zero points, shapes and
    types included (a scale that came back [1] instead of [] stopped onnxruntime fusing QLinearAdd)."""
    from onnxprune.loading import export, prepare, whole_weights
    prep = prepare(qdq[name])
    back = export(prep, requantize=whole_weights(prep))
    original = onnx.load(qdq[name])

    def dq_inputs(model: onnx.ModelProto) -> dict[str, list]:
        inits = {t.name: t for t in model.graph.initializer}
        return {n.output[0]: [(list(inits[i].dims), inits[i].data_type, numpy_helper.to_array(inits[i]).tobytes())
                              if i in inits else i for i in n.input]
                for n in model.graph.node if n.op_type == "DequantizeLinear"}

    assert dq_inputs(back) == dq_inputs(original)


def test_macs_of_a_quantized_model_are_its_float_model_s(qdq) -> None:
    for name in ("vgg", "resnet18", "bert", "bert_dynamic", "bert_nbits8"):
        assert analyze(qdq[name]).cost.macs == analyze(FLOAT[name.split("_")[0]]).cost.macs


def _two_convs(weight_form: str = "int", act_per_channel: bool = False) -> onnx.ModelProto:
    """x -> Conv(8) -> Relu -> [Q/DQ] -> Conv(4): weights int8 per output channel behind DequantizeLinear
    (`weight_form` "float": a float constant through QuantizeLinear first, as QAT exports write it)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        q = rng.integers(-127, 128, shape).astype(np.int8)
        scale = rng.uniform(0.001, 0.02, shape[0]).astype(np.float32)
        zp = np.zeros(shape[0], np.int8)
        inits.extend([numpy_helper.from_array(scale, f"{name}_scale"), numpy_helper.from_array(zp, f"{name}_zp")])
        source = f"{name}_q"
        if weight_form == "float":
            w = dequantize(q, scale, zp, 0)
            inits.append(numpy_helper.from_array(w, f"{name}_float"))
            nodes.append(helper.make_node("QuantizeLinear", [f"{name}_float", f"{name}_scale", f"{name}_zp"],
                                          [source], name=f"{name}_Q", axis=0))
        else:
            inits.append(numpy_helper.from_array(q, source))
        nodes.append(helper.make_node("DequantizeLinear", [source, f"{name}_scale", f"{name}_zp"], [name],
                                      name=f"{name}_DQ", axis=0))
        return name

    nodes.append(helper.make_node("Conv", ["x", weight("w1", (8, 3, 3, 3))], ["h"], name="conv1", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["h"], ["r"], name="relu"))
    feed = "r"
    if act_per_channel:
        inits += [numpy_helper.from_array(rng.uniform(0.01, 0.05, 8).astype(np.float32), "a_scale"),
                  numpy_helper.from_array(np.full(8, 3, np.uint8), "a_zp")]
        nodes += [helper.make_node("QuantizeLinear", ["r", "a_scale", "a_zp"], ["rq"], name="act_Q", axis=1),
                  helper.make_node("DequantizeLinear", ["rq", "a_scale", "a_zp"], ["rd"], name="act_DQ", axis=1)]
        feed = "rd"
    nodes.append(helper.make_node("Conv", [feed, weight("w2", (4, 8, 1, 1))], ["y"], name="conv2"))
    graph = helper.make_graph(nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("form", ["int", "float"])
@pytest.mark.parametrize("act_per_channel", [False, True], ids=["act_per_tensor", "act_per_channel"])
def test_sliced_weights_scales_and_zero_points_are_the_original_s(form: str, act_per_channel: bool) -> None:
    model = _two_convs(form, act_per_channel)
    analysis = analyze(model)
    (group,) = analysis.prunable
    pruned = apply_plan(model, make_plan(analysis, {group.id: [1, 5]}))
    keep = [0, 2, 3, 4, 6, 7]
    before, after = _inits(model), _inits(pruned)
    kinds = {n.name: n.op_type for n in pruned.graph.node}
    assert sorted(kinds.values()).count("DequantizeLinear") == sorted(
        n.op_type for n in model.graph.node).count("DequantizeLinear")
    assert np.array_equal(after["w1_scale"], before["w1_scale"][keep])
    assert np.array_equal(after["w2_scale"], before["w2_scale"])
    if form == "int":
        assert after["w1_q"].dtype == np.int8
        assert np.array_equal(after["w1_q"], before["w1_q"][keep])
        assert np.array_equal(after["w2_q"], before["w2_q"][:, keep])
    else:  # QuantizeLinear of a float constant: the float weight that quantizes to the same integers
        assert np.array_equal(after["w1_float"], before["w1_float"][keep])
        assert "w1_Q" in kinds and kinds["w1_Q"] == "QuantizeLinear"
    if act_per_channel:
        assert np.array_equal(after["a_scale"], before["a_scale"][keep])
        assert np.array_equal(after["a_zp"], before["a_zp"][keep])
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    (y,) = oracle.run(pruned, x)
    assert y.shape == (1, 4, 8, 8)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.sampled_from([np.int8, np.uint8, np.int32]), st.integers(0, 2**31 - 1))
def test_quantize_of_dequantized_integers_gives_them_back(rows: int, cols: int, dtype, seed: int) -> None:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -2**20), min(info.max, 2**20)
    q = rng.integers(lo, hi, (rows, cols), endpoint=True).astype(dtype)
    scale = rng.uniform(1e-5, 1.0, rows).astype(np.float32)
    zp = rng.integers(max(lo, -100), min(hi, 100), rows, endpoint=True).astype(dtype) if dtype != np.int32 else None
    back, clipped = quantize(dequantize(q, scale, zp, 0), scale, zp, 0, np.dtype(dtype))
    assert clipped == 0 and np.array_equal(back, q)


def test_values_outside_the_integer_range_are_clipped_and_counted() -> None:
    scale = np.array([0.1, 0.1], np.float32)
    values = np.array([[13.0, -12.0], [12.7, 0.0]], np.float32)  # 130 and -120 steps; 127
    q, clipped = quantize(values, scale, np.zeros(2, np.int8), 0, np.dtype(np.int8))
    assert clipped == 1 and q[0, 0] == 127 and q[0, 1] == -120 and q[1, 0] == 127


def test_prune_a_qdq_model_from_the_cli_with_a_re_fit_and_replay_it(qdq, tmp: Path) -> None:
    src, out, again = qdq["vgg"], tmp / "p.onnx", tmp / "again.onnx"
    before = sha(src)
    calib = ROOT / "models/fashion/calib256.npz"
    r = cli("prune", str(src), "-o", str(out), "--ratio", "0.5", "--criterion", "wanda", "--calib", str(calib),
            "--compensate", "reconstruct", "--report", str(tmp / "r.json"), "--save-plan", str(tmp / "plan.json"),
            quiet=False)
    assert r.returncode == 0, r.stderr
    assert "quantized: 20 weights written back as integers" in r.stdout
    total = json.loads((tmp / "r.json").read_text())["total"]
    assert total["requantized"]["weights"] == 20 and total["requantized"]["per_channel"] == 12
    assert total["macs_removed"] > 0.4 and sha(src) == before
    assert _dq_count(onnx.load(out)) == _dq_count(onnx.load(src))
    r = cli("prune", str(src), "-o", str(again), "--plan", str(tmp / "plan.json"), "--calib", str(calib))
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == out.read_bytes()


def test_the_python_api_prunes_quantized_models_with_a_data_criterion(qdq) -> None:
    """onnxprune.prune on dynamic int8 and 4-bit copies, wanda on calibration inputs: integer ops in, integer ops out."""
    from onnxprune import prune
    calib = ROOT / "models/fashion/calib256.npz"
    model, plan, report = prune(qdq["vgg_dynamic"], ratio=0.3, criterion="wanda", calibration=str(calib))
    assert report["total"]["requantized"]["dynamic"] == 6 and report["total"]["macs_removed"] > 0.2
    assert sum(n.op_type in ("ConvInteger", "MatMulInteger") for n in model.graph.node) == 6
    again = apply_plan(qdq["vgg_dynamic"], plan)
    assert again.SerializeToString() == model.SerializeToString()


def test_analyze_says_the_model_is_quantized(qdq, tmp: Path) -> None:
    r = cli("analyze", str(qdq["resnet18"]), "--json", str(tmp / "a.json"), quiet=False)
    assert r.returncode == 0, r.stderr
    assert "quantized: " in r.stdout and "read dequantized" in r.stdout
    data = json.loads((tmp / "a.json").read_text())
    assert data["quantized_weights"]["all"] > 20


def test_depth_pruning_keeps_the_remaining_blocks_quantized(qdq, tmp: Path) -> None:
    out = tmp / "shallow.onnx"
    r = cli("prune", str(qdq["resnet18"]), "-o", str(out), "--drop-blocks", "1")
    assert r.returncode == 0, r.stderr
    model, shallow = onnx.load(qdq["resnet18"]), onnx.load(out)
    assert 0 < _dq_count(model) - _dq_count(shallow) < 20  # one basic block: weights, biases, activations
    weights = {t.name for t in shallow.graph.initializer}
    assert all(n.input[0] in weights or n.input[0] in {o for m in shallow.graph.node for o in m.output}
               for n in shallow.graph.node if n.op_type == "DequantizeLinear")
    assert not any(t.data_type == TensorProto.FLOAT and len(t.dims) == 4 for t in shallow.graph.initializer)


def test_recovery_of_a_qdq_model_is_refused_in_one_line(qdq, tmp: Path) -> None:
    r = cli("recover", str(qdq["vgg"]), str(qdq["vgg"]), "-o", str(tmp / "rec.onnx"),
            "--calib", str(ROOT / "models/fashion/calib256.npz"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "quantized" in r.stderr and "recover the float model, then quantize it" in r.stderr
    assert not (tmp / "rec.onnx").exists()
    r = cli("prune", str(qdq["vgg_dynamic"]), "-o", str(tmp / "p.onnx"), "--ratio", "0.3", "--recover",
            "--calib", str(ROOT / "models/fashion/calib256.npz"), quiet=False)  # progress lines show what ran
    assert r.returncode == 2 and "recover the float model, then quantize it" in r.stderr
    assert "analyzing" not in r.stderr and not (tmp / "p.onnx").exists()  # refused before any work


def _refused(model: onnx.ModelProto, tmp: Path) -> str:
    path = tmp / "m.onnx"
    onnx.save(model, path)
    r = cli("prune", str(path), "-o", str(tmp / "out.onnx"), "--ratio", "0.3")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp / "out.onnx").exists()
    return r.stderr


def test_qoperator_is_refused_naming_its_ops(tmp: Path) -> None:
    """QOperator models are pruned (tests/test_qoperator.py); a QLinearConv whose weight is computed is not."""
    path = qm.quantize_qop(FLOAT["vgg"], tmp / "qop.onnx")
    model = onnx.load(path)
    conv = next(n for n in model.graph.node if n.op_type == "QLinearConv")
    model.graph.node.insert(0, helper.make_node("Identity", [conv.input[3]], ["w_computed"], name="w_copy"))
    conv.input[3] = "w_computed"
    err = _refused(model, tmp)
    assert f"QLinearConv '{conv.name}'" in err and "computed" in err


@pytest.mark.parametrize("name", ["vgg_dynamic", "bert_dynamic"])
def test_a_dynamic_int8_model_read_and_written_back_has_its_nodes_and_integers(qdq, name: str) -> None:
    """Every node of the dynamic pattern comes back with its name, inputs and outputs, and each integer op
    reads the same integer weight, zero point and scale (constant subgraphs, e.g. a Reshape of a bias, are
    folded to initializers as for any model)."""
    from onnxprune.loading import export, prepare, whole_weights
    prep = prepare(qdq[name])
    back, original = export(prep, requantize=whole_weights(prep)), onnx.load(qdq[name])

    pattern = {name for op in prep.quantized for name in (op.node, op.dql[0], op.scales[0], op.cast[0], op.scaled[0])}
    assert len(pattern) > 10

    def nodes(model: onnx.ModelProto) -> set:
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return {(n.op_type, n.name, tuple(n.output),
                 tuple((inits[i].shape, inits[i].dtype.str, inits[i].tobytes()) if i in inits else i for i in n.input))
                for n in model.graph.node if n.name in pattern}

    assert nodes(back) == nodes(original)


def test_a_dynamic_int8_model_prunes_from_the_cli(qdq, tmp: Path) -> None:
    out = tmp / "p.onnx"
    r = cli("prune", str(qdq["vgg_dynamic"]), "-o", str(out), "--ratio", "0.5", "--compensate", "merge", quiet=False)
    assert r.returncode == 0, r.stderr
    assert "quantized: 6 weights written back as integers with their own scales (0 per channel, 6 of dynamic int8 " \
        "ops)" in r.stdout
    ops = qm.ops(out)
    assert ops["ConvInteger"] == 4 and ops["MatMulInteger"] == 2 and ops["DynamicQuantizeLinear"] == 6
    assert "Conv" not in ops and "MatMul" not in ops  # nothing left dequantized


def _nbits_node(extra_inputs: list[str], op: str = "MatMulNBits") -> onnx.ModelProto:
    node = helper.make_node(op, ["x", "w", "s", *extra_inputs], ["y"], name="nb", domain="com.microsoft", K=32, N=8,
                            bits=4, block_size=32)
    inits = [numpy_helper.from_array(np.zeros((8, 1, 16), np.uint8), "w"), numpy_helper.from_array(np.ones(8, np.float32), "s"),
             numpy_helper.from_array(np.zeros(32, np.int32), "g")]
    graph = helper.make_graph([node], "nbits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_matmulnbits_with_g_idx_and_other_packed_ops_are_refused_naming_them(tmp: Path) -> None:
    err = _refused(_nbits_node(["", "g"]), tmp)
    assert "MatMulNBits 'nb'" in err and "g_idx" in err and "no channel groups" not in err
    err = _refused(_nbits_node([], op="MatMulBnb4"), tmp)
    assert "MatMulBnb4" in err and "not supported" in err


@pytest.mark.parametrize("name", ["llama_nbits", "bert_nbits_sym16", "bert_nbits8"])
def test_a_matmulnbits_model_read_and_written_back_has_the_same_nodes_and_packed_weights(qdq, name: str) -> None:
    from onnxprune.loading import export, prepare, whole_weights
    prep = prepare(qdq[name])
    back, original = export(prep, requantize=whole_weights(prep)), onnx.load(qdq[name])

    def nbits(model: onnx.ModelProto) -> dict:
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return {n.name: (n.input[0], [(inits[i].shape, inits[i].dtype.str, inits[i].tobytes()) for i in n.input[1:]],
                         list(n.output), sorted((a.name, helper.get_attribute_value(a)) for a in n.attribute))
                for n in model.graph.node if n.op_type == "MatMulNBits"}

    assert len(nbits(original)) >= 12 and nbits(back) == nbits(original)


def test_matmulnbits_input_channels_go_in_whole_blocks(qdq) -> None:
    """Each block of 32 input channels of a 4-bit weight is one unit: LLaMA's 128 FFN units become 4 (its 2 units of
    grouped-query heads, 2 heads of 16 each, are one block already); the MACs are the float model's."""
    quantized, floating = analyze(qdq["llama_nbits"]), analyze(FLOAT["llama"])
    assert sorted(g.channels for g in quantized.prunable) == [2, 2, 4, 4]
    assert sorted(g.channels for g in floating.prunable) == [2, 2, 128, 128]
    assert quantized.cost.macs == floating.cost.macs and quantized.quantized[3] == 14


def test_a_matmulnbits_model_prunes_from_the_cli_and_runs(qdq, tmp: Path) -> None:
    out = tmp / "p.onnx"
    r = cli("prune", str(qdq["llama_nbits"]), "-o", str(out), "--ratio", "0.5", "--round-to", "1", quiet=False)
    assert r.returncode == 0, r.stderr
    assert "14 of MatMulNBits ops); 0 values clipped" in r.stdout
    model = onnx.load(out)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 14
    for n in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert list(inits[n.input[1]].dims) == [attrs["N"], -(-attrs["K"] // 32), 16]
    assert any({a.name: helper.get_attribute_value(a) for a in n.attribute}["K"] == 64 for n in nodes)  # down_proj: 128 -> 64
    x = oracle.random_feeds(model, analyze(qdq["llama_nbits"]).cost.input_dims)
    assert all(np.isfinite(y).all() for y in oracle.run(model, x))


def test_block_wise_and_four_bit_weights_are_refused_naming_the_node(tmp: Path) -> None:
    model = _two_convs()
    dq = next(n for n in model.graph.node if n.name == "w1_DQ")
    dq.attribute.append(helper.make_attribute("block_size", 2))
    model.opset_import[0].version = 21
    err = _refused(model, tmp)
    assert "w1_DQ" in err and "block-wise" in err
    model = _two_convs()
    for t in model.graph.initializer:
        if t.name == "w1_q":
            t.CopyFrom(helper.make_tensor("w1_q", TensorProto.INT4, list(t.dims),
                                          np.zeros(int(np.prod(t.dims)), np.int8).tolist()))
        if t.name == "w1_zp":
            t.CopyFrom(helper.make_tensor("w1_zp", TensorProto.INT4, [8], [0] * 8))
    model.opset_import[0].version = 21
    err = _refused(model, tmp)
    assert "w1_DQ" in err and "not supported" in err


def test_quantize_then_prune_is_close_to_prune_then_quantize(qdq, tmp: Path) -> None:
    """The two orders give close models: onnxprune on a QDQ file is not a worse path than on the float one."""
    data = np.load(ROOT / "models/fashion/test500.npz")
    x = {k: data[k][:200] for k in data.files}
    first = tmp / "pruned_float.onnx"
    assert cli("prune", str(FLOAT["vgg"]), "-o", str(first), "--ratio", "0.3").returncode == 0
    pq = qm.quantize_qdq(first, tmp / "pruned_then_quantized.onnx")
    qp = tmp / "quantized_then_pruned.onnx"
    assert cli("prune", str(qdq["vgg"]), "-o", str(qp), "--ratio", "0.3").returncode == 0
    ref = oracle.run(onnx.load(FLOAT["vgg"]), x)[0]
    a, b = oracle.run(onnx.load(pq), x)[0], oracle.run(onnx.load(qp), x)[0]
    agree = float(np.mean(a.argmax(1) == b.argmax(1)))
    assert agree > 0.9, agree
    assert abs(float(np.mean(a.argmax(1) == ref.argmax(1))) - float(np.mean(b.argmax(1) == ref.argmax(1)))) < 0.05
