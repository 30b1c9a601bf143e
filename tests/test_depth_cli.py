"""Depth pruning from the command line and the API: analyze --blocks, prune --drop-blocks, plans that replay it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import oracle
import onnxprune
from conftest import ROOT, cli, sha
from onnxprune.analysis.residual import find_blocks
from onnxprune.rewrite.depth import zero_branch

RESNET = ROOT / "models" / "torchvision" / "resnet18_ts_bnfold.onnx"
LENET = ROOT / "models" / "fashion" / "lenet300.onnx"


def _calib(tmp: Path, samples: int = 8) -> Path:
    """Random inputs for resnet18 (1x3x64x64) as a calibration .npz."""
    path = tmp / "calib.npz"
    np.savez(path, input=np.random.default_rng(0).standard_normal((samples, 3, 64, 64)).astype(np.float32))
    return path


def test_analyze_blocks(tmp: Path) -> None:
    """5 removable blocks, 3 frozen by a projection shortcut; the JSON lists them with branch MACs."""
    out = tmp / "a.json"
    r = cli("analyze", str(RESNET), "--blocks", "--json", str(out))
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("\n\n")[-1]
    assert table.count("  removable") == 5 and table.count("frozen: projection shortcut") == 3
    assert "8 residual blocks, 5 removable" in table
    blocks = json.loads(out.read_text())["blocks"]
    assert [b["removable"] for b in blocks].count(True) == 5
    assert all(b["macs"] > 0 and 0 < b["macs_share"] < 1 and b["params"] > 0 for b in blocks)
    plain = tmp / "plain.json"
    assert cli("analyze", str(RESNET), "--json", str(plain)).returncode == 0
    assert "blocks" not in json.loads(plain.read_text())


def test_drop_blocks_plan_and_replay(tmp: Path) -> None:
    before = sha(RESNET)
    out, plan, report = tmp / "out.onnx", tmp / "plan.json", tmp / "report.json"
    r = cli("prune", str(RESNET), "-o", str(out), "--drop-blocks", "2", "--save-plan", str(plan), "--report",
            str(report))
    assert r.returncode == 0, r.stderr
    assert "random inputs" in r.stderr and "removed 2 residual blocks" in r.stdout
    assert r.stdout.count("  removed") == 2
    assert len(onnx.load(out).graph.node) < len(onnx.load(RESNET).graph.node)
    saved, rep = json.loads(plan.read_text()), json.loads(report.read_text())
    assert len(saved["blocks_removed"]) == 2 and saved["groups"] == {}
    assert rep["blocks_removed"] == saved["blocks_removed"]
    rows = rep["block_importance"]["blocks"]
    assert len(rows) == 5 and all({"importance", "proxy", "macs", "top1_agreement"} <= set(row) for row in rows)
    chosen = sorted(rows, key=lambda row: row["importance"])[:2]
    assert {row["id"] for row in chosen} == set(saved["blocks_removed"])
    assert rep["total"]["macs_after"] < rep["total"]["macs_before"]
    replay = tmp / "replay.onnx"
    r = cli("prune", str(RESNET), "-o", str(replay), "--plan", str(plan))
    assert r.returncode == 0, r.stderr
    assert replay.read_bytes() == out.read_bytes()
    assert sha(RESNET) == before


def test_a_zeroed_block_goes_first(tmp: Path) -> None:
    """The block whose branch outputs zeros matters not at all: it is removed, and the outputs do not change."""
    target = [b for b in find_blocks(RESNET) if b.removable][3]
    zeroed = tmp / "zeroed.onnx"
    onnx.save(zero_branch(str(RESNET), target.id), zeroed)
    out, report = tmp / "out.onnx", tmp / "report.json"
    r = cli("prune", str(zeroed), "-o", str(out), "--drop-blocks", "1", "--calib", str(_calib(tmp)), "--report",
            str(report))
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert rep["blocks_removed"] == [target.id]
    rows = {row["id"]: row for row in rep["block_importance"]["blocks"]}
    assert rows[target.id]["importance"] < 1e-6 and rows[target.id]["proxy"] < 1e-6
    assert min(row["importance"] for bid, row in rows.items() if bid != target.id) > 1e-3
    model, pruned = onnx.load(zeroed), onnx.load(out)
    feeds = oracle.feeds(model)
    for want, got in zip(oracle.run(model, feeds), oracle.run(pruned, feeds)):
        assert np.abs(want - got).max() <= 1e-5 * np.abs(want).max() + 1e-6


@pytest.mark.parametrize("model, flags, code, says", [
    (RESNET, ["--drop-blocks", "99"], 2, "the model has 5 removable residual blocks"),
    (RESNET, ["--drop-blocks", "0"], 4, "removes no block"),
    (RESNET, ["--drop-blocks", "1", "--allocate", "sensitivity"], 2, "--drop-blocks N alone removes no channel"),
    (LENET, ["--drop-blocks", "1"], 4, "no residual block"),
])
def test_refusals(tmp: Path, model: Path, flags: list[str], code: int, says: str) -> None:
    out = tmp / "out.onnx"
    r = cli("prune", str(model), "-o", str(out), *flags)
    assert r.returncode == code and says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_api() -> None:
    model, plan, report = onnxprune.drop_blocks(str(RESNET), 1)
    assert len(plan["blocks_removed"]) == 1 and report["blocks_removed"] == plan["blocks_removed"]
    assert len(report["block_importance"]["blocks"]) == 5
    assert len(model.graph.node) < len(onnx.load(RESNET).graph.node)
    assert onnxprune.apply_plan(str(RESNET), plan).SerializeToString() == model.SerializeToString()
