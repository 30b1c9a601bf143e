"""What the channel rules decide on each pattern: groups, couplings, freezes, rewritten attributes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import handmade
from onnxprune import OnnxPruneError, analyze, apply_plan, make_plan


def groups(model: onnx.ModelProto) -> dict[str, tuple[int, bool]]:
    return {g.id: (g.channels, g.prunable) for g in analyze(model).groups}


def prune(model: onnx.ModelProto, removed: dict[str, list[int]]) -> onnx.ModelProto:
    return apply_plan(model, make_plan(analyze(model), removed))


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def const(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def attr(n: onnx.NodeProto, key: str):
    return next(onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == key)


def test_chain_groups_and_output_freeze() -> None:
    assert groups(handmade.conv_bn_relu_chain()) == {"conv1": (8, True), "conv2": (12, True), "conv3": (6, False)}
    reason = analyze(handmade.conv_bn_relu_chain()).group("conv3").reason
    assert reason == "reaches graph output 'y'"


def test_residual_adds_couple_stem_and_blocks() -> None:
    a = analyze(handmade.residual_add())
    stem = a.group("conv1")
    assert stem.prunable and {"conv1", "conv3", "conv5"} <= set(stem.nodes("producer"))


def test_spatial_attention_does_not_couple_channels() -> None:
    g = groups(handmade.se_block_hardsigmoid())
    assert g["conv1"] == (8, True)  # the [N,1,H,W] map broadcasts over the 8 channels


def test_concat_offsets_in_members() -> None:
    a = analyze(handmade.concat_offsets())
    offsets = {}
    for gid in ("conv2", "conv3", "conv4"):
        bn = [m for m in a.group(gid).members if m.op_type == "BatchNormalization" and m.kind == "scale"]
        offsets[gid] = int(a.positions(bn[0], a.group(gid))[0][0])
    assert offsets == {"conv2": 0, "conv3": 4, "conv4": 10}


def test_split_sizes_rewritten_as_input_and_attribute() -> None:
    pruned = prune(handmade.split_attr_and_input(), {"conv1": [0, 5, 6]})
    split = node(pruned, next(n.name for n in pruned.graph.node if n.op_type == "Split"))
    assert const(pruned, split.input[1]).tolist() == [3, 6]
    pruned = prune(handmade.split_attribute_opset11(), {"conv1": [0, 5, 6]})
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    assert attr(split, "split") == [3, 6]


def test_slice_bounds_rewritten() -> None:
    pruned = prune(handmade.slice_channels(), {"conv1": [0, 3, 8]})
    bounds = sorted((const(pruned, n.input[1]).tolist(), const(pruned, n.input[2]).tolist())
                    for n in pruned.graph.node if n.op_type == "Slice")
    assert bounds == [([1], [5]), ([5], [7])]


def test_depthwise_and_grouped_group_attribute() -> None:
    pruned = prune(handmade.depthwise(), {"conv1": [1, 2, 7]})
    dw = next(n for n in pruned.graph.node if n.op_type == "Conv" and attr(n, "group") > 1)
    assert attr(dw, "group") == 5
    assert groups(handmade.grouped_conv())["conv1"] == (2, True)  # two whole groups of conv2
    model = handmade.grouped_conv()
    assert attr(node(model, "conv2"), "group") == 2
    pruned = prune(model, {"conv1": [1]})
    assert attr(node(pruned, "conv2"), "group") == 1
    assert [t.dims for t in pruned.graph.initializer if t.name == node(pruned, "conv2").input[1]][0][0] == 6


def test_depthwise_multiplier_removes_pairs() -> None:
    model = handmade.depthwise_multiplier()
    pruned = prune(model, {"conv1": [3]})
    w = {t.name: t.dims for t in pruned.graph.initializer}
    dw = next(n for n in pruned.graph.node if n.op_type == "Conv" and attr(n, "group") > 1)
    assert attr(dw, "group") == 7 and list(w[dw.input[1]])[:2] == [14, 1]


def test_flatten_gemm_removes_blocks_of_rows() -> None:
    model = handmade.flatten_gemm()
    before = {t.name: list(t.dims) for t in model.graph.initializer}
    pruned = prune(model, {"conv1": [2]})
    gemm = next(n for n in pruned.graph.node if n.op_type == "Gemm")
    after = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert after[gemm.input[1]][1] == before[gemm.input[1]][1] - 16  # H*W = 4*4 columns per channel


def test_reshape_and_expand_constants_rewritten() -> None:
    pruned = prune(handmade.expand_tile_shape(), {"conv1": [0, 1]})
    shapes = [const(pruned, n.input[1]).tolist() for n in pruned.graph.node if n.op_type in ("Reshape", "Expand")]
    assert len(shapes) == 3 and all(s[1] == 6 for s in shapes), shapes  # two Reshapes and an Expand, C 8 -> 6


def test_resize_sizes_rewritten() -> None:
    pruned = prune(handmade.resize_sizes(), {"conv1": [4]})
    resize = next(n for n in pruned.graph.node if n.op_type == "Resize")
    assert const(pruned, resize.input[3]).tolist()[1] == 7


def test_group_norm_whole_groups() -> None:
    g = groups(handmade.group_norm())
    assert g["conv1"] == (4, True)  # 8 channels in 4 normalisation groups of 2
    pruned = prune(handmade.group_norm(), {"conv1": [0]})
    gn = next(n for n in pruned.graph.node if n.op_type == "GroupNormalization")
    assert attr(gn, "num_groups") == 3


def test_frozen_with_reason_naming_node_and_op() -> None:
    cases = {
        handmade.unknown_op: ("conv1", "LpNormalization 'lpnormalization1'"),
        handmade.layernorm_channels: ("conv1", "LayerNormalization"),
        handmade.channel_shuffle: ("conv1", "splits or reorders the channel axis"),
        handmade.graph_output_channels: ("conv1", "reaches graph output 'y2'"),
    }
    for build, (gid, text) in cases.items():
        g = analyze(build()).group(gid)
        assert not g.prunable and text in g.reason, (build.__name__, g.reason)


def test_unknown_op_without_rule_freezes_its_inputs() -> None:
    model = handmade.conv_bn_relu_chain()
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Relu6Custom"
    relu.domain = "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    g = analyze(model).group("conv1")
    assert not g.prunable and "no channel rule for com.example.Relu6Custom" in g.reason


def test_paddle_constant_nodes_are_parameters() -> None:
    model = handmade.paddle_constants()
    assert not model.graph.initializer
    assert groups(model) == groups(handmade.conv_bn_relu_chain())


@pytest.mark.parametrize("name", sorted(handmade.CHECKER_EXEMPT))
def test_patterns_the_checker_rejects_are_refused(name: str) -> None:
    """Left out of the oracles because the tool refuses them: that refusal is asserted here."""
    with pytest.raises(OnnxPruneError, match="invalid ONNX model .*deprecated"):
        analyze(handmade.PATTERNS[name](0))
