"""Depth and width together: --drop-blocks N with a width option, --depth choosing between blocks and channels for a
target, the joint plans they write (replayed byte for byte), the refusals, and the same from the API."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from conftest import ROOT, cli, sha
from handmade import X2D, Builder
from onnxprune.analysis.cost import Cost, count_model_cost
from onnxprune.analysis.residual import find_blocks
from onnxprune.errors import OnnxPruneError
from onnxprune.rewrite.depth import remove_blocks, zero_branch
from onnxprune.search.depth_width import Goal, remaining
from onnxprune.search.stopwatch import SpeedTarget

LENET = ROOT / "models" / "fashion" / "lenet300.onnx"
VIT = ROOT / "models" / "transformers_trained"
ZEROED = 2  # the block whose branch outputs zeros: removing it changes nothing


def _residual_net() -> onnx.ModelProto:
    """Stem conv, 4 residual blocks x + Conv(Relu(Conv(x))) (8 -> 16 -> 8 channels), a 1x1 head writing a dense map;
    the third block's branch zeroed."""
    b = Builder(5)
    h = b.relu(b.conv("x", 3, 8))
    for _ in range(4):
        h = b.op("Add", [h, b.conv(b.relu(b.conv(h, 8, 16)), 16, 8)])
    b.head(h, 8)
    model = b.model("residual_net", X2D)
    return zero_branch(model, [bl.id for bl in find_blocks(model)][ZEROED])


@pytest.fixture
def net(tmp: Path) -> tuple[Path, Path, str]:
    """The residual net's file, 16 calibration inputs, and the zeroed block's id."""
    path, calib = tmp / "net.onnx", tmp / "calib.npz"
    model = _residual_net()
    onnx.save(model, path)
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, *X2D[1:])).astype(np.float32))
    return path, calib, [bl.id for bl in find_blocks(model)][ZEROED]


def _prune(tmp: Path, model: Path, *flags: str, name: str = "out") -> tuple[Path, dict, dict]:
    """prune with --save-plan and --report: the output, the plan, the report (exit 0 asserted)."""
    out, plan, report = tmp / f"{name}.onnx", tmp / f"{name}_plan.json", tmp / f"{name}_report.json"
    r = cli("prune", str(model), "-o", str(out), *flags, "--save-plan", str(plan), "--report", str(report))
    assert r.returncode == 0, r.stderr
    return out, json.loads(plan.read_text()), json.loads(report.read_text())


def _replays(tmp: Path, model: Path, out: Path, *flags: str) -> None:
    """The saved plan writes the same bytes again."""
    again = tmp / "again.onnx"
    r = cli("prune", str(model), "-o", str(again), "--plan", str(out.with_name(out.stem + "_plan.json")), *flags)
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == out.read_bytes()


def test_drop_blocks_then_channels(tmp: Path, net) -> None:
    """--drop-blocks 1 --target-macs: the zeroed block goes, channels of what is left meet the target against the
    original; the plan holds both and replays to the same bytes; the report counts both."""
    model, calib, zeroed = net
    before = sha(model)
    out, plan, rep = _prune(tmp, model, "--drop-blocks", "1", "--target-macs", "0.4", "--round-to", "1",
                            "--calib", str(calib))
    assert plan["blocks_removed"] == [zeroed] and plan["groups"]
    shallow = remove_blocks(str(model), [zeroed])
    assert plan["after_blocks_sha256"] == onnxprune.analyze(shallow).sha256
    t = rep["total"]
    assert rep["blocks_removed"] == [zeroed] and rep["model_sha256"] == onnxprune.analyze(str(model)).sha256
    assert t["macs_after_blocks"] == count_model_cost(shallow).macs < t["macs_before"]
    assert t["macs_after"] < t["macs_after_blocks"] and t["channels_removed"] > 0
    assert t["macs_after"] == count_model_cost(str(out)).macs
    assert 0.38 <= t["macs_removed"] <= 0.45  # a target is met within 2 points of the model (selection)
    assert {r["id"] for r in rep["block_importance"]["blocks"]} == {bl.id for bl in find_blocks(model)}
    _replays(tmp, model, out, "--calib", str(calib))
    assert sha(model) == before


def test_drop_blocks_with_ratio_on_the_trained_vit(tmp: Path) -> None:
    """A transformer: 2 blocks, then --ratio on the heads and FFN units left; replayed byte for byte."""
    model = VIT / "vit_fashion.onnx"
    out, plan, rep = _prune(tmp, model, "--drop-blocks", "2", "--ratio", "0.25", "--calib",
                            str(VIT / "fashion_calib256.npz"), "--calib-samples", "32")
    rows = sorted(rep["block_importance"]["blocks"], key=lambda r: r["importance"])
    assert sorted(plan["blocks_removed"]) == sorted(r["id"] for r in rows[:2])
    assert plan["groups"] and rep["total"]["channels_removed"] == sum(map(len, plan["groups"].values()))
    assert rep["total"]["macs_after"] < rep["total"]["macs_after_blocks"] < rep["total"]["macs_before"]
    _replays(tmp, model, out)


def test_depth_picks_the_free_block(tmp: Path, net) -> None:
    """--depth --target-macs: width alone costs something, the zeroed block alone meets the target at no loss: it
    is kept, the candidates stop there, and the result meets the target."""
    model, calib, zeroed = net
    out, plan, rep = _prune(tmp, model, "--depth", "--target-macs", "0.2", "--calib", str(calib))
    choice = rep["depth_choice"]
    assert [c["blocks"] for c in choice["candidates"]] == [0, 1] and choice["metric"] == "cosine"
    width, depth = choice["candidates"]
    assert width["loss"] > 1e-4 and depth["loss"] < 1e-5 and depth["blocks_alone"] and "blocks_alone" not in width
    assert choice["kept"] == 1 and plan["blocks_removed"] == [zeroed] and plan["depth_choice"] == choice
    assert rep["total"]["macs_removed"] >= 0.2 and width["macs_removed"] >= 0.18
    _replays(tmp, model, out)


def test_depth_candidates_complete_the_target(tmp: Path, net) -> None:
    """Every candidate reaches the same target, blocks least important first; the least loss is the one kept."""
    model, calib, _ = net
    out, plan, rep = _prune(tmp, model, "--depth", "--max-blocks", "2", "--target-macs", "0.6", "--round-to", "1",
                            "--calib", str(calib))
    choice = rep["depth_choice"]
    done = [c for c in choice["candidates"] if "error" not in c]
    assert [c["blocks"] for c in choice["candidates"]] == [0, 1, 2] and len(done) >= 2
    assert all(c["macs_removed"] >= 0.6 - 0.02 and not c.get("blocks_alone") for c in done)
    assert [c["blocks_macs_removed"] for c in done] == sorted(c["blocks_macs_removed"] for c in done)
    kept = min(done, key=lambda c: c["loss"])
    assert choice["kept"] == kept["blocks"] and len(plan.get("blocks_removed", [])) == kept["blocks"]
    assert rep["total"]["macs_removed"] == kept["macs_removed"]
    _replays(tmp, model, out, "--calib", str(calib))


def test_depth_without_blocks_is_a_width_prune(tmp: Path) -> None:
    """A model with no residual block: the one candidate is width alone, the same bytes as without --depth."""
    out, plan, rep = _prune(tmp, LENET, "--depth", "--target-macs", "0.3", name="deep")
    plain, _, _ = _prune(tmp, LENET, "--target-macs", "0.3", name="plain")
    assert [c["blocks"] for c in rep["depth_choice"]["candidates"]] == [0] and "blocks_removed" not in plan
    assert out.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("flags, says", [
    (["--depth", "--ratio", "0.3"], "--depth chooses between blocks and channels for a target"),
    (["--depth", "--drop-blocks", "1", "--target-macs", "0.3"], "give --drop-blocks N or --depth, not both"),
    (["--max-blocks", "2", "--ratio", "0.3"], "--max-blocks is read by --depth only"),
    (["--drop-blocks", "1", "--criterion", "fpgm"], "--criterion is a channel-pruning option"),
    (["--drop-blocks", "5", "--ratio", "0.3"], "the model has 4 removable residual blocks"),
    (["--drop-blocks", "-1", "--ratio", "0.3"], "must be 0 or more"),
    (["--plan", "PLAN", "--drop-blocks", "1"], "--plan replays the blocks and channels it records"),
])
def test_refusals(tmp: Path, net, flags: list[str], says: str) -> None:
    """What cannot combine: one line on stderr, exit 2, nothing written."""
    model = net[0]
    plan = tmp / "plan.json"
    plan.write_text(json.dumps({"format": "onnxprune-plan/1", "groups": {}}))
    out = tmp / "out.onnx"
    r = cli("prune", str(model), "-o", str(out), *[str(plan) if f == "PLAN" else f for f in flags])
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_joint_plan_without_its_model_hash_is_refused(tmp: Path, net) -> None:
    """A plan with blocks and channels must say which model the channels are counted on."""
    model, calib, _ = net
    out, plan, _ = _prune(tmp, model, "--drop-blocks", "1", "--ratio", "0.5", "--calib", str(calib))
    del plan["after_blocks_sha256"]
    broken = tmp / "broken.json"
    broken.write_text(json.dumps(plan))
    r = cli("prune", str(model), "-o", str(tmp / "x.onnx"), "--plan", str(broken))
    assert r.returncode == 2 and "after_blocks_sha256" in r.stderr, r.stderr


def test_api(net) -> None:
    """prune(drop_blocks=...) and prune(depth=True) as the CLI does them; apply_plan replays both."""
    model, calib, zeroed = net
    pruned, plan, report = onnxprune.prune(str(model), ratio=0.5, drop_blocks=1, calibration=str(calib))
    assert plan["blocks_removed"] == [zeroed] and plan["groups"] and report["blocks_removed"] == [zeroed]
    assert report["total"]["macs_after"] < report["total"]["macs_after_blocks"] < report["total"]["macs_before"]
    assert onnxprune.apply_plan(str(model), plan).SerializeToString() == pruned.SerializeToString()
    pruned, plan, report = onnxprune.prune(str(model), target_macs=0.2, depth=True, calibration=str(calib),
                                           round_to=8)
    assert report["depth_choice"]["kept"] == 1 and plan["blocks_removed"] == [zeroed]
    assert onnxprune.apply_plan(str(model), plan).SerializeToString() == pruned.SerializeToString()
    with pytest.raises(OnnxPruneError, match="for a target"):
        onnxprune.prune(str(model), ratio=0.3, depth=True)


def test_the_channel_step_target() -> None:
    """What channels must still remove after the blocks, for the whole to meet the target against the original."""
    before, after = Cost(params=1000, macs=1000), Cost(params=900, macs=800)
    assert remaining(Goal(macs=0.5), before, after) == {"target_macs": pytest.approx(1 - 0.5 / 0.8)}
    assert remaining(Goal(params=0.19), before, after) == {"target_params": pytest.approx(1 - 0.81 / 0.9)}
    assert remaining(Goal(macs=0.2), before, after) is None  # the blocks alone remove 20 %
    assert remaining(Goal(), before, after) == {}  # --ratio: what is left, by the ratio
    speed = SpeedTarget(speedup=2.0)
    assert remaining(Goal(speed=speed), before, after, 1.6, base_ms=4.0) == {"target_speedup": 1.25,
                                                                             "target_latency": None}
    assert remaining(Goal(speed=speed), before, after, 2.1, base_ms=4.0) is None
    latency = SpeedTarget(latency_ms=1.0)  # the original runs 4 ms: a 4x speed-up, 2x of it from the blocks
    assert remaining(Goal(speed=latency), before, after, 2.0, base_ms=4.0)["target_speedup"] == 2.0
    assert remaining(Goal(speed=latency), before, before) == {"target_speedup": None, "target_latency": 1.0}
