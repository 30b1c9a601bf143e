"""The command line end to end, including every kind of bad input: one line, nonzero, nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import handmade
from conftest import cli, sha
from onnxprune import analyze, make_plan, save_plan


@pytest.fixture
def model_file(tmp: Path) -> Path:
    path = tmp / "chain.onnx"
    onnx.save(handmade.residual_add(), path)
    return path


def plan_file(tmp: Path, model: Path, removed: dict[str, list[int]], **edit) -> Path:
    plan = make_plan(analyze(model), removed)
    plan.update(edit)
    path = tmp / "plan.json"
    save_plan(plan, path)
    return path


def test_analyze_table_and_json(model_file: Path, tmp: Path) -> None:
    out = tmp / "a.json"
    r = cli("analyze", str(model_file), "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "conv1" in r.stdout and "prunable" in r.stdout and "frozen: reaches graph output" in r.stdout
    data = json.loads(out.read_text())
    g = next(g for g in data["groups"] if g["id"] == "conv1")
    assert {"id", "channels", "prunable", "reason", "members", "params_share", "macs_share"} <= set(g)
    roles = {m["role"] for m in g["members"]}
    assert roles == {"producer", "consumer", "pass-through"}
    for m in g["members"]:
        assert {"node", "op_type", "role", "tensor", "axis", "offset"} <= set(m)


def test_prune_with_plan(model_file: Path, tmp: Path) -> None:
    before = sha(model_file)
    plan = plan_file(tmp, model_file, {"conv1": [0, 1], "conv2": [3]})
    out = tmp / "out.onnx"
    r = cli("prune", str(model_file), "-o", str(out), "--plan", str(plan))
    assert r.returncode == 0, r.stderr
    assert "removed 3 channels in 2 groups" in r.stdout
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert sha(model_file) == before
    assert analyze(pruned).group("conv1").channels == 6


BAD_PLANS = {
    "another model": ({"conv1": [0]}, {"model_sha256": "0" * 64}, "plan is for another model"),
    "index out of range": ({"conv1": [99]}, {}, "out of range"),
    "every channel": ({"conv1": list(range(8))}, {}, "removes all 8 channels"),
    "frozen group": ({}, {"groups": {"conv6": [0]}}, "is frozen (reaches graph output"),
    "unknown group": ({}, {"groups": {"nope": [0]}}, "does not have"),
    "duplicate index": ({}, {"groups": {"conv1": [1, 1]}}, "listed twice"),
    "wrong format": ({"conv1": [0]}, {"format": "other/1"}, "plan format"),
    "not integers": ({}, {"groups": {"conv1": ["a"]}}, "list of integers"),
}


@pytest.mark.parametrize("case", list(BAD_PLANS))
def test_bad_plans(case: str, model_file: Path, tmp: Path) -> None:
    removed, edit, message = BAD_PLANS[case]
    plan = plan_file(tmp, model_file, removed, **edit)
    out = tmp / "out.onnx"
    r = cli("prune", str(model_file), "-o", str(out), "--plan", str(plan))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    assert sorted(p.name for p in tmp.iterdir()) == ["chain.onnx", "plan.json"]


def _quantized(tmp: Path) -> Path:
    """QAttention: a quantized op still refused (QDQ, QOperator and dynamic int8 are pruned: tests/test_quantized.py)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, [1, 4])
    scale = onnx.helper.make_tensor("s", onnx.TensorProto.FLOAT, [], [0.1])
    zp = onnx.helper.make_tensor("z", onnx.TensorProto.UINT8, [], [0])
    w = onnx.helper.make_tensor("w", onnx.TensorProto.UINT8, [4, 4], [1] * 16)
    nodes = [onnx.helper.make_node("QAttention", ["x", "w", "s", "s", "s"], ["y"], name="qatt", domain="com.microsoft",
                                   num_heads=1)]
    g = onnx.helper.make_graph(nodes, "q", [x], [y], [scale, zp, w])
    path = tmp / "quant.onnx"
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 13),
                                                       onnx.helper.make_opsetid("com.microsoft", 1)]), path)
    return path


def _old_opset(tmp: Path) -> Path:
    m = handmade.conv_bn_relu_chain()
    m.opset_import[0].version = 8
    path = tmp / "old.onnx"
    onnx.save(m, path)
    return path


BAD_MODELS = {
    "not onnx": (lambda tmp: _write(tmp / "x.onnx", b"hello, this is not a model"), "not a readable ONNX model"),
    "truncated": (lambda tmp: _write(tmp / "t.onnx", handmade.residual_add().SerializeToString()[:700]),
                  "not a readable ONNX model"),
    "empty": (lambda tmp: _write(tmp / "e.onnx", b""), "not an ONNX model"),
    "missing": (lambda tmp: tmp / "missing.onnx", "no such file"),
    "quantized": (_quantized, "this quantized format is not supported (found QAttention"),
    "opset 8": (_old_opset, "opset 8 is not supported"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_models(case: str, tmp: Path) -> None:
    make, message = BAD_MODELS[case]
    path = make(tmp)
    before = sha(path) if path.exists() else None
    for args in (["analyze", str(path)], ["prune", str(path), "-o", str(tmp / "o.onnx"), "--ratio", "0.5"]):
        r = cli(*args)
        assert r.returncode == 2, (case, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert message in r.stderr, (args[0], r.stderr)
    assert not (tmp / "o.onnx").exists()
    assert (sha(path) if path.exists() else None) == before


def test_bad_plan_file(model_file: Path, tmp: Path) -> None:
    bad = tmp / "bad.json"
    bad.write_text("{not json")
    r = cli("prune", str(model_file), "-o", str(tmp / "o.onnx"), "--plan", str(bad))
    assert r.returncode == 2 and "not a JSON plan" in r.stderr


def test_output_may_not_overwrite_input(model_file: Path, tmp: Path) -> None:
    before = sha(model_file)
    plan = plan_file(tmp, model_file, {"conv1": [0]})
    r = cli("prune", str(model_file), "-o", str(model_file), "--plan", str(plan))
    assert r.returncode == 2 and "never overwritten" in r.stderr and sha(model_file) == before


def test_shape_option(model_file: Path) -> None:
    r = cli("analyze", str(model_file), "--shape", "nope:1x3x8x8")
    assert r.returncode == 2 and "is not a model input" in r.stderr
    r = cli("analyze", str(model_file), "--shape", "x:1x3xbad")
    assert r.returncode == 2 and "expected NAME:D1xD2" in r.stderr


def test_failed_verification_leaves_nothing(tmp: Path) -> None:
    from onnxprune import OnnxPruneError
    from onnxprune.loading import save_model

    def refuse(path: Path) -> None:
        assert path.is_file()  # verification sees the written bytes
        raise OnnxPruneError("no")

    with pytest.raises(OnnxPruneError):
        save_model(handmade.residual_add(), tmp / "o.onnx", external_data=True, verify=refuse)
    assert list(tmp.iterdir()) == []


def test_external_data_model_through_cli(tmp: Path) -> None:
    src = tmp / "ext.onnx"
    onnx.save(handmade.conv_bn_relu_chain(), src, save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    plan = plan_file(tmp, src, {"conv2": [0, 3]})
    out = tmp / "out.onnx"
    r = cli("prune", str(src), "-o", str(out), "--plan", str(plan))
    assert r.returncode == 0, r.stderr
    assert (tmp / "out.onnx.data").is_file() and analyze(out).group("conv2").channels == 10


def test_prune_compensation_flags_and_report(model_file: Path, tmp: Path) -> None:
    out, report = tmp / "merged.onnx", tmp / "report.json"
    r = cli("prune", str(model_file), "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--compensate", "merge",
            "--merge-threshold", "0", "--merge-order", "sequential", "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert "compensation: merge (BN factor: exact mode):" in r.stdout
    data = json.loads(report.read_text())
    total = data["total"]["compensation"]
    assert total["merged"] + total["folded"] + total["pruned_only"] == data["total"]["channels_removed"]
    assert all("compensation" in g for g in data["groups"] if g["removed"])
    for bad, message in ((["--compensate", "blend"], "invalid choice"), (["--merge-threshold", "1.5"], "[0, 1]")):
        r = cli("prune", str(model_file), "-o", str(tmp / "bad.onnx"), "--ratio", "0.5", "--round-to", "1", *bad)
        assert r.returncode == 2 and message in r.stderr and not (tmp / "bad.onnx").exists()


def test_plan_replay_keeps_the_recorded_compensation(model_file: Path, tmp: Path) -> None:
    first, plan = tmp / "first.onnx", tmp / "plan.json"
    r = cli("prune", str(model_file), "-o", str(first), "--ratio", "0.5", "--round-to", "1", "--compensate", "none", "--save-plan", str(plan))
    assert r.returncode == 0, r.stderr
    again, merged = tmp / "again.onnx", tmp / "merged.onnx"
    assert cli("prune", str(model_file), "-o", str(again), "--plan", str(plan)).returncode == 0
    assert sha(again) == sha(first)
    r = cli("prune", str(model_file), "-o", str(merged), "--plan", str(plan), "--compensate", "merge",
            "--merge-threshold", "0", "--merge-approximate")
    assert r.returncode == 0 and "compensation: merge (BN factor: exact mode)" in r.stdout and sha(merged) != sha(first)


def test_shape_that_contradicts_a_static_dim_is_refused(model_file: Path, tmp: Path) -> None:
    r = cli("prune", str(model_file), "-o", str(tmp / "o.onnx"), "--ratio", "0.5", "--shape", "x:1x3x32x32")
    assert r.returncode == 2 and "static dim 2 of 16" in r.stderr and not (tmp / "o.onnx").exists()
