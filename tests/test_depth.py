"""Depth pruning: residual blocks found, and removed exactly (the zeroed-branch oracle)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oracle
import random_graphs
from conftest import ROOT, sha
from handmade import Builder
from onnxprune.analysis.residual import find_blocks
from onnxprune.errors import OnnxPruneError
from onnxprune.loading import export, prepare
from onnxprune.rewrite.depth import remove_blocks, zero_branch, zero_branches

# model -> (removable, refused) block counts
MODELS = {
    "torchvision/resnet18_ts_bnfold": (5, 3),  # 8 basic blocks, 3 with a downsample projection
    "torchvision/resnet50_ts_bnkeep": (4, 4),
    "torchvision/mobilenet_v2_ts_bnfold": (6, 0),
    "torchvision/convnext_tiny_ts_bnfold": (5, 0),
    "yolo/yolov8n_w0.0625_nc10_160_ul": (6, 0),  # C2f bottlenecks with shortcut: 1 + 2 + 2 + 1
    "transformers/bert_ts": (4, 0),  # 2 layers x (attention, FFN)
    "transformers/vit_ts": (4, 0),
    "transformers/llama_ts": (4, 0),
    "transformers/gpt2_ts": (4, 0),
    "transformers_trained/vit_fashion": (8, 0),
    "fashion/resnet_small": (7, 2),  # trained: 3-3-3 basic blocks, 2 with a projection shortcut
    "keras/mobilenet_v2_a0.35_96": (10, 0),
}
PER_MODEL = 6  # blocks checked one by one per model (spread over the depth)


def _path(name: str):
    return ROOT / "models" / f"{name}.onnx"


def _same_outputs(want_model: onnx.ModelProto, got_model: onnx.ModelProto, feeds, rtol: float = 1e-5) -> None:
    """Every output equal within rtol of its scale (plus a float32 floor)."""
    names = [o.name for o in want_model.graph.output]
    assert names == [o.name for o in got_model.graph.output]
    for name, want, got in zip(names, oracle.run(want_model, feeds), oracle.run(got_model, feeds)):
        assert want.shape == got.shape, f"output {name}: shape {got.shape} != {want.shape}"
        err = float(np.abs(want.astype(np.float32) - got.astype(np.float32)).max()) if want.size else 0.0
        bound = rtol * float(np.abs(want).max(initial=0.0)) + 1e-6
        assert err <= bound, f"output {name}: max error {err:.2e} > bound {bound:.2e}"


def _spread(items: list, k: int) -> list:
    """Up to k items, evenly spread, first and last included."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def _counts(blocks) -> tuple[int, int]:
    removable = sum(b.removable for b in blocks)
    return removable, len(blocks) - removable


@pytest.mark.parametrize("name", list(MODELS))
def test_blocks_found_and_removed_exactly(name: str) -> None:
    """Counts as expected; each checked block, zeroed then removed: outputs equal the zeroed model's."""
    path = _path(name)
    before = sha(path)
    model = onnx.load(path)
    blocks = find_blocks(model)
    assert _counts(blocks) == MODELS[name], [(b.id, b.reason) for b in blocks]
    feeds = oracle.feeds(model)
    for block in _spread([b for b in blocks if b.removable], PER_MODEL):
        zeroed = zero_branch(model, block.id)
        removed = remove_blocks(zeroed, [block.id])
        onnx.checker.check_model(removed, full_check=True)
        _same_outputs(zeroed, removed, feeds)
        base = export(prepare(zeroed))
        assert len(removed.graph.node) <= len(base.graph.node) - len(block.nodes) - 1
        assert len(removed.graph.initializer) <= len(base.graph.initializer) - len(block.initializers) < len(
            base.graph.initializer)
    assert sha(path) == before


@pytest.mark.parametrize("name", ["transformers/bert_ts", "yolo/yolov8n_w0.0625_nc10_160_ul",
                                  "keras/mobilenet_v2_a0.35_96"])
def test_all_blocks_at_once(name: str) -> None:
    """Every removable block zeroed and removed together (sequences of blocks bypassed in one go)."""
    model = onnx.load(_path(name))
    ids = [b.id for b in find_blocks(model) if b.removable]
    zeroed = zero_branches(model, ids)
    removed = remove_blocks(zeroed, ids)
    onnx.checker.check_model(removed, full_check=True)
    assert not [b for b in find_blocks(removed) if b.removable]
    _same_outputs(zeroed, removed, oracle.feeds(model))


def test_kinds_and_reasons() -> None:
    bert = find_blocks(_path("transformers/bert_ts"))
    assert [b.kind for b in bert] == ["attention", "mlp"] * 2
    assert all(b.x.endswith("LayerNormalization_output_0") for b in bert[::2])  # post-norm: LN stays outside
    llama = find_blocks(_path("transformers/llama_ts"))
    assert all(any("input_layernorm" in n or "post_attention_layernorm" in n for n in b.nodes) for b in llama)
    resnet = find_blocks(_path("torchvision/resnet50_ts_bnkeep"))
    refused = [b for b in resnet if not b.removable]
    assert all(b.reason.startswith("projection shortcut") and "downsample" in b.reason for b in refused)
    assert all(b.params > 0 and b.initializers for b in resnet)


def test_the_oracle_catches_a_kept_bias() -> None:
    """Sabotage: zero the last Conv's weight but keep its bias; removing the block must change outputs."""
    model = onnx.load(_path("torchvision/resnet18_ts_bnfold"))
    block = next(b for b in find_blocks(model) if b.removable)
    zeroed = zero_branch(model, block.id)
    conv = next(n for n in zeroed.graph.node if n.output[0] == block.branch_output)
    bias = next(t for t in zeroed.graph.initializer if t.name == conv.input[2])
    bias.CopyFrom(onnx.numpy_helper.from_array(np.full(bias.dims, 0.5, np.float32), bias.name))
    with pytest.raises(AssertionError, match="max error"):
        _same_outputs(zeroed, remove_blocks(zeroed, [block.id]), oracle.feeds(model))


def test_input_untouched_and_ids_refused() -> None:
    model = onnx.load(_path("torchvision/resnet18_ts_bnfold"))
    snapshot = model.SerializeToString()
    blocks = find_blocks(model)
    remove_blocks(model, [blocks[0].id])
    zero_branch(model, blocks[0].id)
    assert model.SerializeToString() == snapshot
    with pytest.raises(OnnxPruneError, match="no residual block 'nope'"):
        remove_blocks(model, ["nope"])
    with pytest.raises(OnnxPruneError, match="no residual block"):
        zero_branch(model, "/layer1/layer1.0/relu/Relu")
    projection = next(b for b in blocks if not b.removable)
    with pytest.raises(OnnxPruneError, match="cannot be removed: projection shortcut"):
        remove_blocks(model, [projection.id])


# -- hand-made graphs ---------------------------------------------------------------------------
C = 4


def _block(b: Builder, x: str) -> str:
    """Conv -> Relu -> Conv: the branch of a basic block."""
    return b.conv(b.relu(b.conv(x, C, C)), C, C)


def test_post_norm_output_sum_and_bias_add() -> None:
    """LN(x + f(x)): LN outside; a sum that is a graph output keeps its name; a bias Add is no block."""
    b = Builder(1)
    h = b.op("Add", ["x", b.small([1, C, 1, 1], "bias")])
    s = b.op("Add", [h, _block(b, h)])
    ln = b.op("LayerNormalization", [s, b.const(np.ones(8, np.float32)), b.const(np.zeros(8, np.float32))], axis=-1)
    b.op("Add", [ln, _block(b, ln)], out="y")
    model = b.model("post_norm", [1, C, 8, 8])
    blocks = find_blocks(model)
    assert [bl.removable for bl in blocks] == [True, True] and blocks[1].id == "add3"
    assert "LayerNormalization" not in " ".join(blocks[0].nodes)
    removed = remove_blocks(zero_branches(model, ["add2", "add3"]), ["add2", "add3"])
    assert [o.name for o in removed.graph.output] == ["y"]
    assert [n.op_type for n in removed.graph.node] == ["Add", "LayerNormalization", "Identity"]
    onnx.checker.check_model(removed, full_check=True)


def test_refusals() -> None:
    """A branch tensor read outside, x broadcast, a projection shortcut: listed, not removable."""
    b = Builder(2)
    h = b.relu(b.conv("x", C, C))
    inner = b.relu(b.conv(h, C, C))
    leak = b.op("Add", [h, b.conv(inner, C, C)])
    pooled = b.op("GlobalAveragePool", [leak])
    broadcast = b.op("Add", [pooled, b.conv(b.op("Mul", [leak, pooled]), C, C)])
    wide = b.op("Add", [broadcast, b.op("Mul", [leak, b.scalar(1.0)])])
    proj = b.op("Add", [b.conv(wide, C, C, 1), _block(b, wide)])
    b.op("Concat", [proj, inner], axis=1, out="y")
    model = b.model("refusals", [1, C, 8, 8])
    reasons = {bl.id: bl.reason for bl in find_blocks(model)}
    assert reasons["add1"].startswith("branch output also read elsewhere: 'relu2'")
    assert reasons["add2"].startswith("stride/shape change")
    assert "add3" not in reasons  # pooled + leak: neither is computed from the other through a weight
    assert reasons["add4"].startswith("projection shortcut") and "conv5" in reasons["add4"]


def test_nested_blocks() -> None:
    """x + g(x) where g holds Sum(h, f(h)): both listed; removing both (inner first or not) is exact."""
    b = Builder(3)
    h = b.relu(b.conv("x", C, C))
    inner = b.op("Sum", [h, _block(b, h)])
    b.op("Relu", [b.op("Add", ["x", b.conv(inner, C, C)])], out="y")
    model = b.model("nested", [1, C, 8, 8])
    outer, inner_block = sorted(find_blocks(model), key=lambda bl: -len(bl.nodes))
    assert outer.inner == [inner_block.id] and inner_block.removable and outer.removable
    for ids in ([inner_block.id, outer.id], [outer.id, inner_block.id], [outer.id]):
        zeroed = zero_branch(model, outer.id)
        removed = remove_blocks(zeroed, ids)
        assert [n.op_type for n in removed.graph.node] == ["Relu"]
        _same_outputs(zeroed, removed, oracle.feeds(model))


class _ResidualGen(random_graphs.Gen):
    """random_graphs' generator, drawing residual blocks often, among lookalikes (shared-weight twins,
    added Split parts, per-channel constants)."""

    BLOCKS = ("residual", "residual", "residual", "conv", "bn", "act", "split", "shared", "se", "perchannel",
              "concat", "depthwise")


@st.composite
def _residual_models(draw) -> onnx.ModelProto:
    opset = draw(st.sampled_from(random_graphs.OPSETS))
    gen = _ResidualGen(draw, opset, draw(st.integers(0, 2**31 - 1)), draw(st.sampled_from(["init", "node"])))
    return gen.build()


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_residual_models())
def test_random_graphs(model: onnx.ModelProto) -> None:
    """Every generated identity residual is a removable block, removed exactly; nothing else is removable."""
    blocks = [b for b in find_blocks(model) if b.removable]
    assert len(blocks) == model.doc_string.count("Add(residual)"), random_graphs.describe(model)
    if blocks:
        ids = [b.id for b in blocks]
        zeroed = zero_branches(model, ids)
        _same_outputs(zeroed, remove_blocks(zeroed, ids), oracle.feeds(model))


def test_shape_of_x_shared_with_later_nodes() -> None:
    """A Shape(x) read by the branch and by nodes after the sum is not part of the branch (it stays)."""
    b = Builder(4)
    shape = b.op("Shape", ["x"])
    flat = b.op("Reshape", [b.conv("x", C, C), b.ints([1, C, -1])])
    s = b.op("Add", ["x", b.conv(b.op("Reshape", [flat, shape]), C, C)])
    b.op("Reshape", [b.op("Relu", [s]), shape], out="y")
    model = b.model("shared_shape", [1, C, 8, 8])
    (block,) = find_blocks(model)
    assert block.removable and "shape1" not in block.nodes
    zeroed = zero_branch(model, block.id)
    removed = remove_blocks(zeroed, [block.id])
    assert [n.op_type for n in removed.graph.node] == ["Shape", "Relu", "Reshape"]
    _same_outputs(zeroed, removed, oracle.feeds(model))
