"""Python API contracts: inputs untouched, deterministic ids, metadata kept, external data, replay."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import handmade
import oracle
from onnxprune import analysis_json, analyze, apply_plan, load_plan, make_plan, save_plan
from onnxprune.loading import save_model


def _with_metadata() -> onnx.ModelProto:
    m = handmade.concat_offsets()
    onnx.helper.set_model_props(m, {"character": "a\nb\nc", "labels": "cat,dog"})
    m.producer_name, m.producer_version = "unit-test", "9.9"
    return m


def test_caller_model_not_modified() -> None:
    m = _with_metadata()
    before = m.SerializeToString()
    a = analyze(m)
    apply_plan(m, make_plan(a, {g.id: [0] for g in a.prunable}))
    assert m.SerializeToString() == before


def test_ids_deterministic_and_path_equals_proto(tmp: Path) -> None:
    m = handmade.residual_add()
    path = tmp / "m.onnx"
    onnx.save(m, path)
    a, b = analyze(m), analyze(path)
    assert [g.id for g in a.groups] == [g.id for g in b.groups] and a.sha256 == b.sha256
    assert analysis_json(a)["groups"] == analysis_json(b)["groups"]
    assert analysis_json(a)["groups"] == analysis_json(analyze(m))["groups"]


def test_names_metadata_opsets_preserved() -> None:
    m = _with_metadata()
    a = analyze(m)
    p = apply_plan(m, make_plan(a, {g.id: [1] for g in a.prunable}))
    assert [i.name for i in p.graph.input] == [i.name for i in m.graph.input]
    assert [o.name for o in p.graph.output] == [o.name for o in m.graph.output]
    assert {x.key: x.value for x in p.metadata_props} == {"character": "a\nb\nc", "labels": "cat,dog"}
    assert (p.producer_name, p.producer_version) == ("unit-test", "9.9")
    assert [(o.domain, o.version) for o in p.opset_import] == [(o.domain, o.version) for o in m.opset_import]
    shapes = lambda g: [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in g.output]  # noqa: E731
    assert shapes(p.graph) == shapes(m.graph)


def test_plan_replays_to_identical_model(tmp: Path) -> None:
    m = handmade.flatten_gemm()
    a = analyze(m)
    plan = make_plan(a, {"conv1": [1, 4], "gemm1": [0, 5, 9]})
    save_plan(plan, tmp / "plan.json")
    assert apply_plan(m, load_plan(tmp / "plan.json")).SerializeToString() == apply_plan(m, plan).SerializeToString()


def test_external_data_in_and_out(tmp: Path) -> None:
    m = handmade.conv_bn_relu_chain()
    src = tmp / "ext.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(m)  # saving with external data rewrites the proto it is given
    onnx.save(copy, src, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp / "ext.onnx.data").exists()
    a = analyze(src)
    assert a.sha256 == analyze(m).sha256
    pruned = apply_plan(src, make_plan(a, {"conv1": [2]}))
    out = tmp / "out" / "pruned.onnx"
    written = save_model(pruned, out, external_data=True)
    assert written == [str(out.parent / "pruned.onnx.data"), str(out)]
    back = onnx.load(out)
    x = oracle.feeds(m)
    assert oracle.run(back, x)[0].shape == oracle.run(m, x)[0].shape


def test_external_save_leaves_the_model_and_matches_inline(tmp: Path) -> None:
    """save_model with external data writes each weight once, leaves the caller's proto as it was,
    and the file reads back to the same model (same digest, same outputs) as an inline save."""
    m = handmade.conv_bn_relu_chain()
    before = m.SerializeToString()
    save_model(m, tmp / "ext.onnx", external_data=True)
    save_model(m, tmp / "inline.onnx")
    assert m.SerializeToString() == before
    assert (tmp / "ext.onnx.data").stat().st_size > 0
    assert (tmp / "ext.onnx").stat().st_size < (tmp / "inline.onnx").stat().st_size
    assert analyze(tmp / "ext.onnx").sha256 == analyze(tmp / "inline.onnx").sha256 == analyze(m).sha256
    x = oracle.feeds(m)
    onnx.checker.check_model(str(tmp / "ext.onnx"), full_check=True)
    assert np.array_equal(oracle.run(onnx.load(tmp / "ext.onnx"), x)[0], oracle.run(m, x)[0])


def test_truncated_external_data_is_refused(tmp: Path, capsys) -> None:
    """A .data file cut short: one line naming the tensor and the file, not a numpy error."""
    from onnxprune.errors import OnnxPruneError

    save_model(handmade.conv_bn_relu_chain(), tmp / "m.onnx", external_data=True)
    data = tmp / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(OnnxPruneError, match="truncated"):
        analyze(tmp / "m.onnx")


def test_opsets_9_and_23() -> None:
    for build in (handmade.opset9_chain, handmade.opset23_chain):
        m = build()
        a = analyze(m)
        assert len(a.prunable) == 2
        p = apply_plan(m, make_plan(a, {g.id: [0] for g in a.prunable}))
        onnx.checker.check_model(p, full_check=True)


def test_counter_hand_computed() -> None:
    """MACs of a conv chain: out_elems * cin/g * k*k per conv, plus BN elements."""
    a = analyze(handmade.conv_bn_relu_chain())
    node = a.cost.node_macs
    m = handmade.conv_bn_relu_chain()
    w = {t.name: list(t.dims) for t in m.graph.initializer}
    conv1 = next(n for n in m.graph.node if n.name == "conv1")
    cout, cin, kh, kw = w[conv1.input[1]]
    assert node["conv1"] == 16 * 16 * cout * cin * kh * kw
    assert a.cost.params == sum(int(np.prod(d)) for d in w.values())


def test_input_shapes_are_checked_by_the_api() -> None:
    import pytest

    from onnxprune import OnnxPruneError

    with pytest.raises(OnnxPruneError, match="'nope', which is not a model input"):
        analyze(handmade.residual_add(), {"nope": (1, 3, 16, 16)})
    with pytest.raises(OnnxPruneError, match="has rank 4"):
        analyze(handmade.residual_add(), {"x": (1, 3, 16)})
