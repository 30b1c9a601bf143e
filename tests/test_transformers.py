"""Attention heads and FFN units as channel units: analysis, dead-unit oracles, CLI runs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import oracle
import transformer_graphs as tg
from conftest import cli
from onnxprune import analyze


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
    r = cli("prune", str(src), "-o", str(out), "--ratio", "0.5", "--criterion", "l2")
    assert r.returncode == 0, r.stderr
    dims = {t.name: list(t.dims) for t in onnx.load(out).graph.initializer}
    assert dims["linear1.weight"] == [tg.C, 3 * 2 * tg.D]
    assert dims["linear2.weight"] == [2 * tg.D, tg.C]
