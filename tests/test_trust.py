"""Regressions for the defects found on real graphs and random ones: each test failed before its fix."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import handmade
import oracle
from onnxprune import OnnxPruneError, analyze, apply_plan, make_plan, prune


def _slice_gap_gemm() -> onnx.ModelProto:
    """Conv(8) -> Slice(channels 2:5) -> GlobalAveragePool -> Flatten -> Gemm, and Conv(8) -> head."""
    b = handmade.Builder(0)
    h = b.relu(b.conv("x", 3, 8))
    part = b.op("Slice", [h, b.ints([2]), b.ints([5]), b.ints([1]), b.ints([1])])
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [part])], axis=1)
    b.gemm(pooled, 3, 4, out="y")
    b.head(h, 8, 4, out="z")
    return b.model("slice_gap_gemm", handmade.X2D_SMALL, outputs=("y", "z"))


def _split_parts(opset: int = 17) -> onnx.ModelProto:
    """Conv(8) -> Split[2, 6] -> a conv on each part -> Add."""
    b = handmade.Builder(1)
    h = b.relu(b.conv("x", 3, 8))
    if opset >= 13:
        p, q = b.op_multi("Split", [h, b.ints([2, 6])], 2, axis=1)
    else:
        p, q = b.op_multi("Split", [h], 2, axis=1, split=[2, 6])
    b.head(b.relu(b.op("Add", [b.conv(p, 2, 5), b.conv(q, 6, 5)])), 5)
    return b.model("split_parts", handmade.X2D_SMALL, opset=opset)


def _weaken(model: onnx.ModelProto, conv: str, channels: list[int]) -> onnx.ModelProto:
    """The conv's filters for these channels scaled down, so magnitude criteria rank them lowest."""
    for t in model.graph.initializer:
        if t.name in (f"{conv}.weight", f"{conv}.bias"):
            values = numpy_helper.to_array(t).copy()
            values[channels] *= 0.01
            t.CopyFrom(numpy_helper.from_array(values, t.name))
    return model


def test_plan_emptying_a_slice_is_refused_naming_the_node() -> None:
    model = _slice_gap_gemm()
    plan = make_plan(analyze(model), {"conv1": [2, 3, 4]})
    with pytest.raises(OnnxPruneError, match=r"every channel that Slice 'slice1' reads \(group 'conv1' channels 2..4\)"):
        apply_plan(model, plan)


def test_plan_emptying_a_split_output_is_refused() -> None:
    model = _split_parts()
    with pytest.raises(OnnxPruneError, match="every channel that Split 'split1' reads"):
        apply_plan(model, make_plan(analyze(model), {"conv1": [0, 1]}))


@pytest.mark.parametrize("global_rank", [False, True])
@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_selection_never_empties_a_part(ratio: float, global_rank: bool) -> None:
    for model in (_weaken(_slice_gap_gemm(), "conv1", [2, 3, 4]), _weaken(_split_parts(), "conv1", [0, 1]),
                  _weaken(_split_parts(opset=11), "conv1", [0, 1])):
        pruned, plan, _ = prune(model, ratio, "l1", global_rank=global_rank, compensate="none")
        for out in oracle.run(pruned, oracle.feeds(model)):
            assert out.size and np.isfinite(out).all()
        assert analyze(model).emptied_part(plan["groups"]) is None


def test_a_part_keeps_min_channels_and_the_group_keeps_its_count() -> None:
    model = _weaken(_split_parts(), "conv1", [0, 1])
    pruned, plan, _ = prune(model, 0.5, "l1", min_channels=2, compensate="none")
    removed = plan["groups"]["conv1"]
    assert len(removed) == 4  # the group's count is met, by other channels than the lowest ones
    assert len(set(removed) & {0, 1}) == 0  # the 2-channel part keeps both (min_channels=2)


def _runtime_expand() -> onnx.ModelProto:
    """An Expand whose shape is computed (Shape of a pruned tensor) next to prunable convs (YOLO's anchors)."""
    b = handmade.Builder(2)
    h = b.relu(b.conv("x", 3, 8))
    grid = b.op("Expand", [b.scalar(0.5), b.op("Shape", [b.op("ReduceMean", [h], axes=[1], keepdims=1)])])
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    b.op("Identity", [grid], out="z")
    return b.model("runtime_expand", handmade.X2D_SMALL, outputs=("y", "z"))


def test_rewrite_reads_only_what_analysis_noted() -> None:
    model = _runtime_expand()
    pruned, plan, _ = prune(model, 0.5, "l1")
    assert plan["groups"]
    oracle.check_dead_channels(model, {g.id: [0, 3] for g in analyze(model).prunable})
    assert len(oracle.run(pruned, oracle.feeds(model))) == 2
