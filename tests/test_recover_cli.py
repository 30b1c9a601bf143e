"""Recovery from the command line and the API: `prune --recover`, `onnxprune recover`, plans that replay it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import onnx
from onnx import numpy_helper

import handmade
import onnxprune
from conftest import cli, sha

FAST = ["--recover-epochs", "2", "--recover-lr", "1e-3"]


def _model_and_data(tmp: Path) -> tuple[Path, Path]:
    model = tmp / "chain.onnx"
    onnx.save(handmade.conv_bn_relu_chain(0), model)
    name = onnx.load(model).graph.input[0]
    dims = [d.dim_value or 1 for d in name.type.tensor_type.shape.dim]
    data = tmp / "calib.npz"
    np.savez(data, **{name.name: np.random.default_rng(0).standard_normal((24, *dims[1:])).astype(np.float32)})
    return model, data


def _same_but_initializer_values(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Same nodes, inputs, outputs and initializer names, shapes and types; some values differ."""
    def skeleton(m: onnx.ModelProto) -> bytes:
        g = onnx.GraphProto()
        g.CopyFrom(m.graph)
        del g.initializer[:]
        return g.SerializeToString()

    shapes = [[(t.name, tuple(t.dims), t.data_type) for t in m.graph.initializer] for m in (a, b)]
    values = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in (a, b)]
    changed = any(not np.array_equal(values[0][k], values[1][k]) for k in values[0])
    return skeleton(a) == skeleton(b) and shapes[0] == shapes[1] and changed


def test_prune_recover_changes_only_initializer_values(tmp_path: Path) -> None:
    model, data = _model_and_data(tmp_path)
    plain, recovered = tmp_path / "p.onnx", tmp_path / "r.onnx"
    assert cli("prune", str(model), "-o", str(plain), "--ratio", "0.5").returncode == 0
    r = cli("prune", str(model), "-o", str(recovered), "--ratio", "0.5", "--recover", "--calib", str(data), *FAST,
            "--report", str(tmp_path / "rep.json"), "--save-plan", str(tmp_path / "plan.json"), quiet=False)
    assert r.returncode == 0, r.stderr
    assert _same_but_initializer_values(onnx.load(plain), onnx.load(recovered))
    rec = json.loads((tmp_path / "rep.json").read_text())["recovery"]
    assert rec["blocks"] and rec["samples"]["train"] + rec["samples"]["held_out"] == 24
    assert all(b["held_out_loss_after"] < b["held_out_loss_before"] or b["kept"] != "recovered"
               for b in rec["blocks"])  # the guard
    assert "recovery: " in r.stdout and "group 1/" in r.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["recovery"]["settings"]["epochs"] == 2 and plan["recovery"]["settings"]["lr"] == 1e-3


def test_replaying_a_plan_with_recover_reuses_its_settings(tmp_path: Path) -> None:
    model, data = _model_and_data(tmp_path)
    assert cli("prune", str(model), "-o", str(tmp_path / "a.onnx"), "--ratio", "0.5", "--recover", "--calib",
               str(data), *FAST, "--save-plan", str(tmp_path / "plan.json")).returncode == 0
    r = cli("prune", str(model), "-o", str(tmp_path / "b.onnx"), "--plan", str(tmp_path / "plan.json"), "--recover",
            "--calib", str(data), "--report", str(tmp_path / "rep.json"))
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "rep.json").read_text())["recovery"]["settings"]
    assert settings["epochs"] == 2 and settings["lr"] == 1e-3
    a, b = onnx.load(tmp_path / "a.onnx"), onnx.load(tmp_path / "b.onnx")
    assert all(np.array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y))
               for x, y in zip(a.graph.initializer, b.graph.initializer))  # same seed, same data: same weights


def test_recover_command(tmp_path: Path) -> None:
    model, data = _model_and_data(tmp_path)
    pruned, out = tmp_path / "p.onnx", tmp_path / "r.onnx"
    assert cli("prune", str(model), "-o", str(pruned), "--ratio", "0.5").returncode == 0
    before = sha(model), sha(pruned), sha(data)
    r = cli("recover", str(model), str(pruned), "-o", str(out), "--calib", str(data), *FAST, "--report",
            str(tmp_path / "rec.json"))
    assert r.returncode == 0, r.stderr
    assert _same_but_initializer_values(onnx.load(pruned), onnx.load(out))
    assert (sha(model), sha(pruned), sha(data)) == before
    assert json.loads((tmp_path / "rec.json").read_text())["blocks"]
    r = cli("recover", str(model), str(pruned), "-o", str(pruned), "--calib", str(data))
    assert r.returncode == 2 and "never overwritten" in r.stderr and sha(pruned) == before[1]


def test_recover_command_takes_the_loss_flags(tmp_path: Path) -> None:
    model, data = _model_and_data(tmp_path)
    pruned, out = tmp_path / "p.onnx", tmp_path / "r.onnx"
    assert cli("prune", str(model), "-o", str(pruned), "--ratio", "0.5").returncode == 0
    r = cli("recover", str(model), str(pruned), "-o", str(out), "--calib", str(data), *FAST, "--recover-loss",
            "normalized", "--recover-end-to-end", "1", "--recover-end-to-end-lr", "1e-4", "--report",
            str(tmp_path / "rec.json"), quiet=False)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["settings"]["loss"] == "normalized" and rec["settings"]["end_to_end_lr"] == 1e-4
    assert rec["settings"]["end_to_end_loss"] == "cosine" and rec["end_to_end"]["loss"] == "cosine"
    assert all(b["loss"] == "normalized" for b in rec["blocks"]) and "held-out normalized loss" in r.stdout
    r = cli("recover", str(model), str(pruned), "-o", str(out), "--calib", str(data), "--recover-loss", "l1")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_recover_needs_calibration_data(tmp_path: Path) -> None:
    model, _ = _model_and_data(tmp_path)
    r = cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--recover")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--recover needs --calib" in r.stderr
    assert not (tmp_path / "p.onnx").exists()
    r = cli("prune", str(model), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--recover-epochs", "1")
    assert r.returncode == 2 and "--recover needs --calib" in r.stderr  # a --recover-* flag implies --recover


def test_api_recover(tmp_path: Path) -> None:
    model, data = _model_and_data(tmp_path)
    pruned, _, _ = onnxprune.prune(str(model), ratio=0.5)
    got, record = onnxprune.recover(str(model), pruned, str(data), epochs=1, lr=1e-3)
    assert _same_but_initializer_values(pruned, got) and record["settings"]["epochs"] == 1


SIZES = {"third_party/rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx": (1, 3, 48, 192)}  # else: batch 1, dims 8
FAMILIES = ["yolo/yolov8n_w0.0625_nc10_160_ul.onnx", "keras/mobilenet_v2_a0.35_96.onnx",
            "torchvision/resnet18_ts_bnkeep.onnx", "transformers/gpt2_ts.onnx",
            "third_party/rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx"]


@pytest.mark.parametrize("name", FAMILIES)
def test_recover_every_family(tmp_path: Path, name: str) -> None:
    """Recovery on one model of each family (through the API; the CLI path is the chain's above): blocks
    found, the guard held, only initializer values changed."""
    from conftest import ROOT

    path = ROOT / "models" / name
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    arrays, shapes = {}, {}
    for i in model.graph.input:
        size = SIZES.get(name, (1, 8, 8, 8, 8))  # a dynamic dim's size: batch 1, else 8
        dims = [d.dim_value if d.dim_value > 0 else size[k] for k, d in enumerate(i.type.tensor_type.shape.dim)]
        shapes[i.name] = tuple(dims)
        if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            arrays[i.name] = rng.standard_normal((6, *dims[1:])).astype(np.float32)
        else:
            arrays[i.name] = rng.integers(0, 50, (6, *dims[1:])).astype(np.int64)
    np.savez(tmp_path / "calib.npz", **arrays)
    pruned, _, _ = onnxprune.prune(str(path), ratio=0.3, input_shapes=shapes)
    got, record = onnxprune.recover(str(path), pruned, str(tmp_path / "calib.npz"), epochs=1, batch=2)
    blocks = record["blocks"]
    assert blocks and all(b["held_out_loss_after"] < b["held_out_loss_before"] or b["kept"] != "recovered"
                          for b in blocks)
    assert _same_but_initializer_values(pruned, got) or all(b["kept"] != "recovered" for b in blocks)
