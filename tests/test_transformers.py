"""Attention heads and FFN units as channel units: analysis, dead-unit oracles, CLI runs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import oracle
import transformer_graphs as tg
from conftest import cli
from onnxprune import analyze
from onnxprune.plan import FORMAT


@pytest.mark.parametrize("name", list(tg.PATTERNS))
def test_units_are_prunable_groups(name: str) -> None:
    """Heads (or K/V heads with their Q groups) and FFN units are prunable; the hidden size is not."""
    analysis = analyze(tg.PATTERNS[name](0))
    assert sorted(g.channels for g in analysis.prunable) == sorted(n for n, _ in tg.EXPECT[name])
    hidden = [g for g in analysis.groups if g.channels == tg.C]
    assert hidden and all(not g.prunable for g in hidden)
    assert any("LayerNormalization" in g.reason or "ReduceMean" in g.reason for g in hidden)


@pytest.mark.parametrize("name", list(tg.PATTERNS))
def test_dead_units_leave_outputs_unchanged(name: str) -> None:
    """Zeroing a set of heads (Q, K, V rows and biases, output rows) or FFN units, then pruning them, is exact."""
    model = tg.PATTERNS[name](0)
    analysis = analyze(model)
    rng = np.random.default_rng(3)
    for group in analysis.prunable:
        for idx in oracle.subsets(group.channels, rng).values():
            oracle.check_dead_channels(model, {group.id: idx})
    oracle.check_dead_channels(model, {g.id: [g.channels - 1] for g in analysis.prunable})


def test_head_pruning_rewrites_every_count() -> None:
    """Pruning 1 of 4 heads leaves Reshape targets at 3 heads; the model runs at its new width."""
    model = tg.bert_block(0)
    heads = next(g for g in analyze(model).prunable if g.channels == tg.H)
    pruned = oracle.check_dead_channels(model, {heads.id: [1]})
    targets = [list(onnx.numpy_helper.to_array(t)) for t in pruned.graph.initializer
               if t.data_type == onnx.TensorProto.INT64 and len(t.dims) == 1 and t.dims[0] == 4]
    assert [1, tg.S, tg.H - 1, tg.D] in [list(map(int, t)) for t in targets]
    weights = {t.name: t.dims for t in pruned.graph.initializer}
    assert list(weights["linear1.weight"]) == [tg.C, (tg.H - 1) * tg.D]
    assert list(weights["linear4.weight"]) == [(tg.H - 1) * tg.D, tg.C]


def test_gqa_removes_a_kv_head_with_its_query_group() -> None:
    """Removing one of 2 K/V heads removes its 2 Q heads: Q 16 -> 8 columns, K and V 8 -> 4."""
    model = tg.llama_block(0)
    kv = next(g for g in analyze(model).prunable if g.channels == 2)
    pruned = oracle.check_dead_channels(model, {kv.id: [0]})
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["linear1.weight"] == [tg.C, 2 * tg.D]
    assert dims["linear2.weight"] == dims["linear3.weight"] == [tg.C, tg.D]
    assert dims["linear4.weight"] == [2 * tg.D, tg.C]


def test_computed_reshape_target_is_rewritten() -> None:
    """GPT-2's Conv1D Reshape target Concat(Shape(x)[:-1], [out]) gets its constant entry replaced."""
    model = tg.gpt2_block(0)
    ffn = next(g for g in analyze(model).prunable if g.channels == tg.FF)
    pruned = oracle.check_dead_channels(model, {ffn.id: [0, 5, 7]})
    assert any(n.op_type == "ScatterElements" for n in pruned.graph.node)


def test_fused_qkv_pruned_by_whole_heads(tmp_path) -> None:
    """prune --ratio on a fused-QKV block through the CLI removes whole heads, checked in onnxruntime."""
    src, out = tmp_path / "qkv.onnx", tmp_path / "out.onnx"
    onnx.save(tg.fused_qkv_block(0), src)
    r = cli("prune", str(src), "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--criterion", "l2")
    assert r.returncode == 0, r.stderr
    dims = {t.name: list(t.dims) for t in onnx.load(out).graph.initializer}
    assert dims["linear1.weight"] == [tg.C, 3 * 2 * tg.D]
    assert dims["linear2.weight"] == [2 * tg.D, tg.C]


def _ffn_unit_set(model: onnx.ModelProto, weight: str, bias: str, unit: int, value: float) -> onnx.ModelProto:
    """A copy where FFN unit `unit` of an up projection reads nothing: weight column 0, bias `value`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        a = onnx.numpy_helper.to_array(t).copy()
        if t.name == weight:
            a[:, unit] = 0
        elif t.name == bias:
            a[unit] = value
        else:
            continue
        t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
    return out


def _calib(tmp_path, n: int = 16):
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(5).standard_normal((n, tg.S, tg.C)).astype(np.float32))
    return str(path)


@pytest.mark.parametrize("criterion", ["wanda", "flap"])
def test_data_criteria_rank_a_dead_unit_last(tmp_path, criterion: str) -> None:
    """A unit whose input is always 0 scores 0 (wanda: no norm; flap: no fluctuation)."""
    from onnxprune.calibration.data import Calibration
    from onnxprune.loading import prepare
    from onnxprune.scoring import score_groups

    model = _ffn_unit_set(tg.bert_block(0), "linear5.weight", "linear5.bias", 7, 0.0)
    prep = prepare(model)
    analysis = analyze(model)
    ffn = next(g for g in analysis.prunable if g.channels == tg.FF)
    scores = score_groups(prep, analysis, criterion, calibration=Calibration(_calib(tmp_path)))[ffn.id].scores
    assert int(np.argmin(scores)) == 7 and scores[7] <= 1e-9 * scores.max()


def test_mean_fold_is_exact_for_a_constant_unit(tmp_path) -> None:
    """A unit that is constant (GELU of a bias) is pruned with its mean folded into the down projection's
    bias: outputs unchanged, recorded exact; plain removal changes them."""
    from onnxprune import prune
    from onnxprune.api import apply_plan

    model = _ffn_unit_set(tg.bert_block(0), "linear5.weight", "linear5.bias", 3, 1.5)
    ffn = next(g for g in analyze(model).prunable if g.channels == tg.FF)
    plan = {"format": FORMAT, "model_sha256": analyze(model).sha256, "compensation": {"compensate": "mean"},
            "groups": {ffn.id: [3]}}
    x = oracle.feeds(model)
    want = oracle.run(model, x)[0]
    folded = apply_plan(model, plan, calibration=_calib(tmp_path))
    plain = apply_plan(model, {**plan, "compensation": {"compensate": "none"}})
    assert np.abs(oracle.run(folded, x)[0] - want).max() < 1e-5 * np.abs(want).max()
    assert np.abs(oracle.run(plain, x)[0] - want).max() > 1e-2
    _, _, report = prune(model, 0.25, "flap", calibration=_calib(tmp_path))
    record = report["groups"][[g["id"] for g in report["groups"]].index(ffn.id)]["compensation"]
    assert record["channels"]["3"]["exact"] and record["approximate"] == len(record["channels"]) - 1


def _relu_mlp(seed: int = 0) -> onnx.ModelProto:
    """MatMul + Add, Relu, then a MatMul with no bias (the LLaMA spelling): a fold must add the bias."""
    from handmade import Builder

    b = Builder(seed)
    h = b.relu(b.op("Add", [b.op("MatMul", ["x", b.randn([tg.C, tg.FF], tg.C, "up.weight")], name="up"),
                            b.small([tg.FF], "up.bias")]))
    b.op("MatMul", [h, b.randn([tg.FF, tg.C], tg.FF, "down.weight")], out="y", name="down")
    return b.model("relu_mlp", [1, tg.S, tg.C])


def test_mean_fold_adds_a_bias_to_a_bias_less_matmul(tmp_path) -> None:
    """Folding a constant unit into a MatMul with no bias inserts an Add after it: outputs unchanged."""
    from onnxprune.api import apply_plan

    model = _ffn_unit_set(_relu_mlp(0), "up.weight", "up.bias", 2, 0.7)
    gid = next(g.id for g in analyze(model).prunable)
    plan = {"format": FORMAT, "model_sha256": analyze(model).sha256, "compensation": {"compensate": "mean"},
            "groups": {gid: [2, 5]}}
    model = _ffn_unit_set(model, "up.weight", "up.bias", 5, 0.0)  # unit 5: dead (Relu of 0)
    plan["model_sha256"] = analyze(model).sha256
    pruned = apply_plan(model, plan, calibration=_calib(tmp_path))
    assert [n.op_type for n in pruned.graph.node][-1] == "Add"
    x = oracle.feeds(model)
    want = oracle.run(model, x)[0]
    assert np.abs(oracle.run(pruned, x)[0] - want).max() < 1e-5 * np.abs(want).max()
