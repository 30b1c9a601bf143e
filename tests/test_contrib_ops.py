"""onnxruntime's fused com.microsoft ops: heads and FFN units through them, exact under the dead-unit oracle.

The fused models are exports of models/transformers after onnxruntime's transformer optimizer
(tools/export_optimized.py); the small graphs below hold the variants the optimizer did not write here
(GroupQueryAttention, qkv_hidden_sizes, BiasAdd, QuickGelu ...) and the ones that must freeze.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import oracle
from conftest import ROOT, cli
from onnxprune import analyze, apply_plan, make_plan
from onnxprune.errors import OnnxPruneError

FUSED = ROOT / "models" / "transformers_fused"
SOURCES = {"bert_ts_fused": "bert_ts", "bert_ts_mha": "bert_ts", "gpt2_ts_fused": "gpt2_ts"}
FUSED_OPS = {"bert_ts_fused": {"Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"},
             "bert_ts_mha": {"MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"},
             "gpt2_ts_fused": {"SkipLayerNormalization", "FastGelu"}}
HEAD_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention")
MS, S = "com.microsoft", 8


def _attrs(model: onnx.ModelProto, op: str) -> list[dict]:
    """The attributes of every com.microsoft node of this op type."""
    return [{a.name: helper.get_attribute_value(a) for a in n.attribute}
            for n in model.graph.node if n.domain == MS and n.op_type == op]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# -- the fused exports ------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", sorted(SOURCES))
def test_fused_exports_hold_the_fused_ops(stem: str) -> None:
    """The committed copies really are fused, and compute what their unfused sources do."""
    model = onnx.load(FUSED / f"{stem}.onnx")
    assert {n.op_type for n in model.graph.node if n.domain == MS} == FUSED_OPS[stem]
    source = onnx.load(ROOT / "models" / "transformers" / f"{SOURCES[stem]}.onnx")
    mask = np.ones((2, 16), np.int64)
    mask[1, 12:] = 0  # right padding: the fused mask_index holds lengths, a mask with holes would differ
    x = {"input_ids": np.random.default_rng(0).integers(0, 500, (2, 16)), "attention_mask": mask}
    for want, got in zip(_run(source, x), _run(model, x)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("stem", sorted(SOURCES))
def test_fused_exports_find_heads_and_ffn_units(stem: str) -> None:
    """Per layer one group of 4 heads and one of 128 FFN units, as in the unfused source; the residual
    width frozen by the fused norms; MACs counted as in the unfused source."""
    fused = analyze(FUSED / f"{stem}.onnx")
    source = analyze(ROOT / "models" / "transformers" / f"{SOURCES[stem]}.onnx")
    assert sorted(g.channels for g in fused.prunable) == [4, 4, 128, 128]
    assert fused.cost.macs == source.cost.macs
    frozen = [g.reason for g in fused.groups if not g.prunable]
    assert any("SkipLayerNormalization" in r and "residual width stays" in r for r in frozen)


def test_analyze_cli_lists_fused_groups() -> None:
    """`onnxprune analyze` on the fused BERT: the Attention ops' heads and the BiasGelu FFN units."""
    out = cli("analyze", str(FUSED / "bert_ts_fused.onnx"))
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.rstrip().endswith("prunable")]
    assert sorted((r[0], r[1]) for r in rows if r[0].startswith("Attention")) == [("Attention_0", "4"),
                                                                                   ("Attention_1", "4")]
    assert sum(r[1] == "128" for r in rows) == 2


@pytest.mark.parametrize("stem", sorted(SOURCES))
@pytest.mark.parametrize("subset", ["random", "all_but_one"])
def test_dead_units_of_fused_exports(stem: str, subset: str) -> None:
    """Dead heads and FFN units removed at once: outputs unchanged, the head counts rewritten."""
    model = onnx.load(FUSED / f"{stem}.onnx")
    analysis = analyze(model)
    rng = np.random.default_rng(5)
    removed = {g.id: oracle.subsets(g.channels, rng)[subset] for g in analysis.prunable}
    pruned = oracle.check_dead_channels(model, removed)
    heads = sorted(4 - len(idx) for gid, idx in removed.items() if analysis.group(gid).channels == 4)
    for op in HEAD_OPS:
        for attrs in _attrs(pruned, op):
            assert attrs["num_heads"] in heads
    assert len([a for op in HEAD_OPS for a in _attrs(pruned, op)]) == (0 if stem.startswith("gpt2") else 2)


def test_live_heads_change_the_output() -> None:
    """The oracle can fail: removing heads that are not dead moves the fused BERT's output."""
    model = onnx.load(FUSED / "bert_ts_fused.onnx")
    analysis = analyze(model)
    heads = [g for g in analysis.prunable if g.channels == 4]
    pruned = apply_plan(model, make_plan(analysis, {heads[0].id: [0, 2]}))
    assert [a["num_heads"] for a in _attrs(pruned, "Attention")] == [2, 4]
    weights = {t.name: t.dims for t in pruned.graph.initializer}
    assert list(weights["Attention_0_qkv_weight"]) == [64, 96]
    x = oracle.feeds(model)
    assert np.abs(_run(model, x)[0] - _run(pruned, x)[0]).max() > 1e-3


@pytest.mark.parametrize("stem", ["bert_ts_fused", "bert_ts_mha"])
def test_ratio_prune_through_the_cli(stem: str, tmp) -> None:
    """`prune --ratio 0.3 --round-to 1`: a checked model that runs, 3 heads and 90 FFN units per layer."""
    out = tmp / "out.onnx"
    done = cli("prune", str(FUSED / f"{stem}.onnx"), "-o", str(out), "--ratio", "0.3", "--round-to", "1")
    assert done.returncode == 0, done.stderr
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    op = "Attention" if stem.endswith("fused") else "MultiHeadAttention"
    assert [a["num_heads"] for a in _attrs(pruned, op)] == [3, 3]
    assert sorted(list(t.dims) for t in pruned.graph.initializer if t.name.endswith("intermediate.dense.bias")) \
        == [[90], [90]]
    (y,) = _run(pruned, oracle.feeds(pruned))
    assert y.shape == (1, 128, 64) and np.isfinite(y).all()


def test_recovery_refuses_fused_ops() -> None:
    """The torch interpreter of --recover has no com.microsoft op: it says which one, in one line."""
    from onnxprune.recovery.torch_graph import check_supported

    with pytest.raises(OnnxPruneError, match=r"recovery cannot run com\.microsoft\.EmbedLayerNormalization"):
        check_supported(onnx.load(FUSED / "bert_ts_fused.onnx").graph)


# -- small graphs ---------------------------------------------------------------------------------
class Graph:
    """A seeded graph with input x [1, S, width] and float outputs of declared shapes."""

    def __init__(self, seed: int = 0) -> None:
        self.rng, self.nodes, self.inits, self.count = np.random.default_rng(seed), [], [], 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value) -> str:
        arr = np.asarray(value)
        arr = arr.astype(np.float32) if arr.dtype == np.float64 else arr
        self.inits.append(numpy_helper.from_array(arr, self.name("c")))
        return self.inits[-1].name

    def weight(self, *shape: int) -> str:
        return self.const(self.rng.standard_normal(shape) / np.sqrt(shape[0]))

    def op(self, op: str, inputs: list[str], outputs: int | list[str] = 1, ms: bool = False, **attrs):
        """One node; returns its output name (or names, when several are asked for)."""
        name = self.name(op.lower())
        outs = outputs if isinstance(outputs, list) else [f"{name}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=MS if ms else None, **attrs))
        return outs[0] if outputs == 1 else outs

    def linear(self, x: str, n_in: int, n_out: int) -> str:
        return self.op("MatMul", [x, self.weight(n_in, n_out)])

    def model(self, width: int, outputs: dict[str, list[int]],
              inputs: dict[str, tuple] | None = None) -> onnx.ModelProto:
        ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, width])]
        ins += [helper.make_tensor_value_info(n, t, s) for n, (t, s) in (inputs or {}).items()]
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()]
        graph = helper.make_graph(self.nodes, "contrib", ins, outs, self.inits)
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
        return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def attention_block(**attrs) -> onnx.ModelProto:
    """x -> MatMul (32 hidden) -> Attention (4 heads; Q, K 32 wide, V 48) -> MatMul -> y."""
    g = Graph(1)
    h = g.linear("x", 24, 32)
    sizes = attrs.pop("qkv_hidden_sizes", [32, 32, 48])
    a = g.op("Attention", [h, g.weight(32, sum(sizes)), g.const(g.rng.standard_normal(sum(sizes)) * 0.1)], ms=True,
             num_heads=4, qkv_hidden_sizes=sizes, **attrs)
    g.op("MatMul", [a, g.weight(sizes[2], 16)], ["y"])
    return g.model(24, {"y": [1, S, 16]})


def gqa_block(packed: bool, rotary: bool = False, extra: dict[int, np.ndarray] | None = None) -> onnx.ModelProto:
    """x -> Q, K, V projections (or one packed) -> GroupQueryAttention (4 Q heads, 2 K/V heads of 16) -> MatMul -> y."""
    g = Graph(2)
    qkv = [g.linear("x", 32, 128), "", ""] if packed else [g.linear("x", 32, n) for n in (64, 32, 32)]
    ins = qkv + ["", "", g.const(np.full(1, S - 1, np.int32)), g.const(np.array(S, np.int32))]
    if rotary:
        ins += [g.const(np.cos(np.outer(np.arange(S), np.arange(8)) * 0.1)),
                g.const(np.sin(np.outer(np.arange(S), np.arange(8)) * 0.1))]
    for index, value in (extra or {}).items():
        ins += [""] * (index - len(ins)) + [g.const(value)]
    a = g.op("GroupQueryAttention", ins, ms=True, num_heads=4, kv_num_heads=2, do_rotary=int(rotary))
    g.op("MatMul", [a, g.weight(64, 16)], ["y"])
    return g.model(32, {"y": [1, S, 16]})


def activations_block() -> onnx.ModelProto:
    """FastGelu(+bias) -> QuickGelu -> Gelu between two MatMuls; FastGelu without bias, then BiasGelu,
    between the next ones."""
    g = Graph(3)
    h = g.op("FastGelu", [g.linear("x", 16, 24), g.const(g.rng.standard_normal(24) * 0.1)], ms=True)
    h = g.op("Gelu", [g.op("QuickGelu", [h], ms=True, alpha=1.702)], ms=True)
    h = g.op("FastGelu", [g.linear(h, 24, 20)], ms=True)
    h = g.op("BiasGelu", [h, g.const(g.rng.standard_normal(20) * 0.1)], ms=True)
    g.op("MatMul", [h, g.weight(20, 16)], ["y"])
    return g.model(16, {"y": [1, S, 16]})


def bias_add_block() -> onnx.ModelProto:
    """BiasAdd(MatMul(x), bias, MatMul(x)) -> Relu -> MatMul -> y."""
    g = Graph(8)
    h = g.op("BiasAdd", [g.linear("x", 16, 20), g.const(g.rng.standard_normal(20) * 0.1), g.linear("x", 16, 20)],
             ms=True)
    g.op("MatMul", [g.op("Relu", [h]), g.weight(20, 16)], ["y"])
    return g.model(16, {"y": [1, S, 16]})


def _lowered(model: onnx.ModelProto) -> onnx.ModelProto:
    """BiasAdd (no CPU kernel in onnxruntime) spelled as its definition: Add(Add(X, bias), skip)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for n in out.graph.node:
        if n.domain == MS and n.op_type == "BiasAdd":
            nodes += [helper.make_node("Add", n.input[:2], [n.output[0] + "_biased"]),
                      helper.make_node("Add", [n.output[0] + "_biased", n.input[2]], [n.output[0]])]
        else:
            nodes.append(n)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _dead_all_subsets(model: onnx.ModelProto, expected: list[int]) -> list[onnx.ModelProto]:
    """The prunable groups have these sizes; each oracle subset, dead, removed exactly."""
    analysis = analyze(model)
    assert sorted(g.channels for g in analysis.prunable) == sorted(expected)
    rng = np.random.default_rng(0)
    out = []
    for subset in ("first", "last", "random", "all_but_one"):
        removed = {g.id: oracle.subsets(g.channels, rng)[subset] for g in analysis.prunable}
        out.append(oracle.check_dead_channels(model, removed))
    return out


def test_attention_with_qkv_hidden_sizes_and_consumed_hidden() -> None:
    """Packed Attention (V heads wider than Q/K heads, causal): heads and the hidden channels its
    weight rows consume are both exact; num_heads and qkv_hidden_sizes follow."""
    for pruned in _dead_all_subsets(attention_block(unidirectional=1), [4, 32]):
        (attrs,) = _attrs(pruned, "Attention")
        q, k, v = attrs["qkv_hidden_sizes"]
        assert q == k == 8 * attrs["num_heads"] and v == 12 * attrs["num_heads"]
        node = next(n for n in pruned.graph.node if n.op_type == "Attention")
        w = next(t for t in pruned.graph.initializer if t.name == node.input[1])
        assert list(w.dims)[1] == q + k + v


@pytest.mark.parametrize("packed", [False, True], ids=["separate", "packed"])
def test_group_query_attention_removes_whole_groups(packed: bool) -> None:
    """A K/V head and its two Q heads are one unit (rotary inside the op needs nothing)."""
    model = gqa_block(packed, rotary=not packed)
    (pruned, *_) = _dead_all_subsets(model, [2])
    (attrs,) = _attrs(pruned, "GroupQueryAttention")
    assert (attrs["num_heads"], attrs["kv_num_heads"]) == (2, 1)
    assert analyze(model).cost.macs > analyze(pruned).cost.macs


def test_group_query_attention_macs() -> None:
    """Projections as MatMuls, then Q K^T and P V: S x S x 2 x (4 heads x 16) per batch."""
    cost = analyze(gqa_block(packed=False)).cost
    gqa = next(v for k, v in cost.node_macs.items() if k.startswith("groupqueryattention"))
    assert gqa == S * S * 2 * 64
    assert cost.macs == gqa + S * 32 * 128 + S * 64 * 16


def test_fused_activations() -> None:
    """FastGelu (with and without bias), QuickGelu, Gelu and BiasGelu pass FFN units through; biases sliced."""
    model = activations_block()
    _dead_all_subsets(model, [20, 24])
    addends = {g.channels: {m.op_type for m in g.members if m.kind == "addend"} for g in analyze(model).prunable}
    assert addends == {24: {"FastGelu"}, 20: {"BiasGelu"}}


def test_bias_add_couples_input_and_skip() -> None:
    """BiasAdd's input and skip are one group, its bias sliced with them: dead channels removed, the
    result run with BiasAdd spelled as two Adds (onnxruntime has no CPU BiasAdd) equals the original."""
    from onnxprune.analysis.analyze import build_analysis
    from onnxprune.loading import prepare

    model = bias_add_block()
    analysis = analyze(model)
    (group,) = analysis.prunable
    assert group.channels == 20 and len(group.nodes("producer")) == 2
    assert [m.op_type for m in group.members if m.kind == "addend"] == ["BiasAdd"]
    removed = {group.id: [0, 7, 19]}
    dead = oracle.dead_copy(model, removed)
    pruned = apply_plan(dead, make_plan(build_analysis(prepare(dead)), removed))
    assert sorted(list(t.dims) for t in pruned.graph.initializer if t.data_type == TensorProto.FLOAT) \
        == [[16, 17], [16, 17], [17], [17, 16]]
    x = oracle.feeds(model)
    np.testing.assert_allclose(_run(_lowered(pruned), x)[0], _run(_lowered(dead), x)[0], rtol=1e-5, atol=1e-6)


def test_skip_simplified_norm_freezes_the_residual_width() -> None:
    """SkipSimplifiedLayerNormalization (its input_skip_bias_sum output used too) freezes what it reads."""
    g = Graph(4)
    y, _, _, _ = g.op("SkipSimplifiedLayerNormalization", [g.linear("x", 16, 16), "x", g.const(np.ones(16))],
                      ["n", "", "", "s"], ms=True, epsilon=1e-5)
    g.op("Relu", [g.linear(y, 16, 16)], ["y"])
    model = g.model(16, {"y": [1, S, 16], "s": [1, S, 16]})
    assert all(np.isfinite(o).all() for o in _run(model, oracle.feeds(model)))
    analysis = analyze(model)
    assert not analysis.prunable
    assert any("SkipSimplifiedLayerNormalization" in g.reason and "residual width" in g.reason
               for g in analysis.groups)


NO_CPU_KERNEL = {"Attention rotary", "MultiHeadAttention packed"}  # onnxruntime's CPU kernels refuse them
FROZEN = {
    "Attention past": (lambda: _attention_with_past(), "past state input carries heads"),
    "Attention rotary": (lambda: attention_block(do_rotary=1, qkv_hidden_sizes=[32, 32, 32]),
                         "rotary embedding inside the op"),
    "Attention bias per head": (lambda: _attention_with_bias(), "attention_bias differs per head"),
    "MultiHeadAttention packed": (lambda: _packed_mha(), "do not all carry sliceable heads"),
    "MultiHeadAttention qk output": (lambda: _mha_with_qk(), "present key/value or qk outputs are used"),
    "GroupQueryAttention head_sink": (lambda: gqa_block(packed=False, extra={11: np.zeros(4, np.float32)}),
                                      "head_sink"),
    "GroupQueryAttention past": (lambda: _gqa_with_past(), "past key/value inputs carry heads"),
}


def _attention_with_past() -> onnx.ModelProto:
    """Attention reading a past state and writing its present state out."""
    g = Graph(5)
    a, _ = g.op("Attention", [g.linear("x", 24, 32), g.weight(32, 96), "", "", "past"], ["a", "present"], ms=True,
                num_heads=4)
    g.op("MatMul", [a, g.weight(32, 16)], ["y"])
    return g.model(24, {"y": [1, S, 16], "present": [2, 1, 4, 2 * S, 8]},
                   {"past": (TensorProto.FLOAT, [2, 1, 4, S, 8])})


def _attention_with_bias() -> onnx.ModelProto:
    """Attention with an attention_bias [1, heads, S, S] (a relative position bias)."""
    g = Graph(6)
    bias = g.const(g.rng.standard_normal((1, 4, S, S)) * 0.1)
    a = g.op("Attention", [g.linear("x", 24, 32), g.weight(32, 96), "", "", "", bias], ms=True, num_heads=4)
    g.op("MatMul", [a, g.weight(32, 16)], ["y"])
    return g.model(24, {"y": [1, S, 16]})


def _packed_mha() -> onnx.ModelProto:
    """MultiHeadAttention on packed QKV [B, S, heads, 3, head_size] (no key or value input)."""
    g = Graph(7)
    qkv = g.op("Reshape", [g.linear("x", 24, 96), g.const(np.array([1, S, 4, 3, 8], np.int64))])
    a = g.op("MultiHeadAttention", [qkv], ms=True, num_heads=4)
    g.op("MatMul", [a, g.weight(32, 16)], ["y"])
    return g.model(24, {"y": [1, S, 16]})


def _mha_with_qk() -> onnx.ModelProto:
    """MultiHeadAttention whose attention probabilities (qk) are a graph output."""
    g = Graph(10)
    q, k, v = (g.linear("x", 24, 32) for _ in range(3))
    a, _, _, _ = g.op("MultiHeadAttention", [q, k, v], ["a", "", "", "qk"], ms=True, num_heads=4)
    g.op("MatMul", [a, g.weight(32, 16)], ["y"])
    return g.model(24, {"y": [1, S, 16], "qk": [1, 4, S, S]})


def _gqa_with_past() -> onnx.ModelProto:
    """GroupQueryAttention reading a KV cache (past_key / past_value graph inputs)."""
    g = Graph(9)
    ins = [g.linear("x", 32, n) for n in (64, 32, 32)] + ["past_k", "past_v"]
    ins += [g.const(np.full(1, 2 * S - 1, np.int32)), g.const(np.array(2 * S, np.int32))]
    a, _, _ = g.op("GroupQueryAttention", ins, ["a", "", ""], ms=True, num_heads=4, kv_num_heads=2)
    g.op("MatMul", [a, g.weight(64, 16)], ["y"])
    cache = (TensorProto.FLOAT, [1, 2, S, 16])
    return g.model(32, {"y": [1, S, 16]}, {"past_k": cache, "past_v": cache})


def test_other_contrib_ops_freeze_naming_the_op() -> None:
    """A com.microsoft op without a rule (FusedMatMul) freezes the channels it reads, named with its domain."""
    g = Graph(11)
    g.op("FusedMatMul", [g.linear("x", 16, 24), g.weight(24, 16)], ["y"], ms=True)
    model = g.model(16, {"y": [1, S, 16]})
    assert _run(model, oracle.feeds(model))[0].shape == (1, S, 16)
    (group,) = analyze(model).groups
    assert not group.prunable and "no channel rule for com.microsoft.FusedMatMul" in group.reason


@pytest.mark.parametrize("case", sorted(FROZEN))
def test_unhandled_variants_freeze_with_the_reason(case: str) -> None:
    """What nobody could slice freezes the heads (the op named, the cause said); the model runs as given."""
    make, reason = FROZEN[case]
    model = make()
    feeds = oracle.feeds(model)
    if case == "Attention past":
        feeds["past"] = np.zeros((2, 1, 4, S, 8), np.float32)
    if case not in NO_CPU_KERNEL:
        assert all(np.isfinite(o).all() for o in _run(model, feeds))
    analysis = analyze(model)
    op = case.split()[0]
    frozen = [g for g in analysis.groups if not g.prunable and any(f"{op} '" in r and reason in r for r in g.reasons)]
    assert frozen, [g.reason for g in analysis.groups]
    assert all(g.channels != 4 and g.channels != 2 for g in analysis.prunable)
