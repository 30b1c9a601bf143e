"""`prune` end to end: criteria + selection + rewrite, guards, targets, replay, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import handmade
import oracle
from conftest import cli, ROOT
from onnxprune import OnnxPruneError, analyze, apply_plan, load_plan, prune, save_plan

MODELS = sorted((ROOT / "models" / "torchvision").glob("*_ts_bnkeep.onnx"))


def _kept(report: dict) -> list[tuple[int, int]]:
    return [(g["channels_before"], g["channels_after"]) for g in report["groups"]]


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_round_to_and_guards_on_every_group(path: Path) -> None:
    """Kept widths (channels x the positions each spans: a grouped conv's group) are multiples of 8, never below."""
    widths = {g.id: analyze(path).unit_width(g) for g in analyze(path).prunable}
    for kw in ({"ratio": 0.6}, {"ratio": 0.9, "global_rank": True}):
        _, _, report = prune(path, criterion="l2", round_to=8, min_channels=4, **kw)
        for g in report["groups"]:
            before, after, width = g["channels_before"], g["channels_after"], widths[g["id"]]
            assert after >= min(before, 4) and after * width >= min(before * width, 8)
            assert after == before or (after * width) % 8 == 0, (before, after, width)


def test_global_threshold_never_empties_a_layer() -> None:
    _, _, report = prune(MODELS[0], ratio=0.95, criterion="bn", global_rank=True)
    assert all(after >= 1 for _, after in _kept(report))
    assert sum(b - a for b, a in _kept(report)) > 0


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_target_macs_within_tolerance_by_recount(target: float) -> None:
    path = ROOT / "models" / "torchvision" / "resnet50_ts_bnfold.onnx"
    model, _, report = prune(path, criterion="l1", target_macs=target)
    before, after = analyze(path).cost.macs, analyze(model).cost.macs  # independent recount
    assert abs((1 - after / before) - target) <= 0.02
    assert report["total"]["macs_after"] == after


def test_criterion_plan_passes_dead_channel_oracle() -> None:
    """Dead filters have the lowest L1: a 25% l1 prune removes exactly them, outputs unchanged."""
    model = handmade.conv_bn_relu_chain()
    dead = oracle.dead_copy(model, {"conv1": [1, 6], "conv2": [0, 4, 9]})
    pruned, plan, _ = prune(dead, ratio=0.25, criterion="l1")
    assert plan["groups"] == {"conv1": [1, 6], "conv2": [0, 4, 9]}
    x = oracle.feeds(dead)
    np.testing.assert_allclose(oracle.run(pruned, x)[0], oracle.run(dead, x)[0], rtol=1e-5, atol=1e-6)


def test_saved_plan_replays_identically(tmp_path: Path) -> None:
    path = MODELS[0]
    model, plan, _ = prune(path, ratio=0.4, criterion="fpgm", round_to=4)
    save_plan(plan, tmp_path / "plan.json")
    assert apply_plan(path, load_plan(tmp_path / "plan.json")).SerializeToString() == model.SerializeToString()


def test_exclude_and_overrides() -> None:
    model = handmade.residual_add()
    _, plan, _ = prune(model, ratio=0.5, exclude=["conv2"])
    assert "conv2" not in plan["groups"] and "conv1" in plan["groups"]
    _, plan, _ = prune(model, ratio=0.5, overrides={"conv1": 0.0})
    assert "conv1" not in plan["groups"]
    _, plan, _ = prune(model, ratio=0.5, global_rank=True, overrides={"conv1": 0.0, "conv2": 0.5})
    assert "conv1" not in plan["groups"] and len(plan["groups"]["conv2"]) == 3  # 6 channels
    _, plan, _ = prune(model, target_macs=0.3, overrides={"conv1": 0.0})
    assert "conv1" not in plan["groups"]


@pytest.mark.parametrize("kw, message", [
    ({"ratio": 1.0}, "impossible"), ({"ratio": -0.1}, "impossible"), ({"ratio": 0.5, "round_to": 0}, "at least 1"),
    ({"target_macs": 0.95, "min_channels": 64}, "impossible under the guards"), ({"ratio": 0.5, "criterion": "x"}, "unknown"),
])
def test_impossible_requests(kw: dict, message: str) -> None:
    kw.setdefault("criterion", "l1")
    with pytest.raises(OnnxPruneError, match=message):
        prune(handmade.residual_add(), **kw)


def test_cli_prune_with_criterion(tmp: Path) -> None:
    src = ROOT / "models" / "torchvision" / "mobilenet_v2_ts_bnfold.onnx"
    out, plan, rep = tmp / "m.onnx", tmp / "p.json", tmp / "r.json"
    r = cli("prune", str(src), "-o", str(out), "--criterion", "fpgm", "--ratio", "0.3", "--round-to", "8",
            "--save-plan", str(plan), "--report", str(rep))
    assert r.returncode == 0, r.stderr
    assert "parameters" in r.stdout and "MACs" in r.stdout and "file size" in r.stdout
    report = json.loads(rep.read_text())
    assert report["total"]["params_after"] == analyze(out).cost.params
    replay = tmp / "again.onnx"
    r = cli("prune", str(src), "-o", str(replay), "--plan", str(plan))
    assert r.returncode == 0 and replay.read_bytes() == out.read_bytes()
    r = cli("prune", str(src), "-o", str(out.with_name("bad.onnx")), "--criterion", "fpgm", "--ratio", "1.5")
    assert r.returncode == 2 and "impossible" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    onnx.checker.check_model(str(out), full_check=True)
