"""A plan made with calibration data records the settings and a digest of the data; a replay says what differs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from onnxprune.calibration.data import data_digest
from onnxprune.cli import main

LENET = ROOT / "models" / "fashion" / "lenet300.onnx"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process, quiet: exit code, stdout, stderr (warnings only)."""
    untimed = ["--no-time"] if argv[0] == "prune" else []  # prune's timing is tested in test_honest_speed.py
    code = main([argv[0], "-q", *argv[1:], *untimed])
    out, err = capsys.readouterr()
    return code, out, err


def images(seed: int, n: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), np.float32)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A reconstruction plan made on calib.npz (16 of its samples): (plan, calib, plan JSON)."""
    tmp = tmp_path_factory.mktemp("made")
    calib, plan = tmp / "calib.npz", tmp / "plan.json"
    np.savez(calib, image=images(0))
    code = main(["prune", "-q", "--no-time", str(LENET), "-o", str(tmp / "made.onnx"), "--ratio", "0.5", "--reconstruct",
                 "--calib", str(calib), "--calib-samples", "16", "--save-plan", str(plan),
                 "--report", str(tmp / "r.json")])
    assert code == 0
    return plan, calib, json.loads(plan.read_text())


def test_the_plan_records_settings_and_a_digest_of_the_data(made) -> None:
    plan_path, calib, plan = made
    record = plan["calibration"]
    assert record["settings"]["samples"] == 16 and record["settings"]["points"] == 10
    assert record["settings"]["batch"] == 32 and record["settings"]["seed"] == 0
    assert record["data"] == data_digest(calib) and record["data"]["arrays"] == {
        "image": {"shape": [24, 1, 28, 28], "dtype": "float32"}}
    assert list(plan)[-1] == "groups"  # the record comes before the channels
    assert json.loads((plan_path.parent / "r.json").read_text())["calibration"] == record


def test_the_digest_follows_the_data_not_the_file(tmp: Path) -> None:
    x = images(0)
    np.savez(tmp / "a.npz", image=x)
    np.savez_compressed(tmp / "same.npz", image=x)  # other bytes on disk, the same arrays
    changed = x.copy()
    changed[5, 0, 3, 3] += 1e-3
    np.savez(tmp / "changed.npz", image=changed)
    np.savez(tmp / "reshaped.npz", image=x.reshape(12, 2, 28, 28))  # the same bytes, another shape
    np.savez(tmp / "renamed.npz", input=x)
    digest = data_digest(tmp / "a.npz")["sha256"]
    assert data_digest(tmp / "same.npz")["sha256"] == digest
    others = {data_digest(tmp / f"{k}.npz")["sha256"] for k in ("changed", "reshaped", "renamed")}
    assert len(others) == 3 and digest not in others
    folder = tmp / "dir"
    folder.mkdir()
    np.save(folder / "image.npy", x)
    assert data_digest(folder)["arrays"] == {"image.npy": {"shape": [24, 1, 28, 28], "dtype": "float32"}}


def test_replay_on_the_same_data_is_silent(capsys, made, tmp: Path) -> None:
    plan, calib, _ = made
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp / "again.onnx"), "--plan", str(plan),
                       "--calib", str(calib), "--calib-samples", "16")
    assert code == 0 and err == "", err


def test_replay_on_other_data_or_settings_warns(capsys, made, tmp: Path) -> None:
    plan, _, _ = made
    other = tmp / "other.npz"
    np.savez(other, image=images(1, 32))
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp / "o.onnx"), "--plan", str(plan), "--calib",
                       str(other), "--calib-points", "5")
    lines = err.strip().splitlines()
    assert code == 0 and (tmp / "o.onnx").exists() and len(lines) == 2, err
    assert f"--calib {other} is not the data the plan was made with" in lines[0]
    assert "arrays image 32x1x28x28 float32 vs image 24x1x28x28 float32" in lines[0]
    assert lines[1].endswith("calibration settings differ from the plan's: samples all here, 16 in the plan, "
                             "points 5 here, 10 in the plan")


def test_old_plans_without_the_record_still_replay(capsys, made, tmp: Path) -> None:
    plan, calib, data = made
    old = tmp / "old.json"
    old.write_text(json.dumps({k: v for k, v in data.items() if k != "calibration"}))
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp / "old.onnx"), "--plan", str(old), "--calib",
                       str(calib))
    assert code == 0 and err == "" and (tmp / "old.onnx").exists(), err
    bad = tmp / "bad.json"
    bad.write_text(json.dumps({**data, "calibration": "made on monday"}))
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp / "bad.onnx"), "--plan", str(bad), "--calib",
                       str(calib))
    assert code == 0 and "record is not an object of settings and data: not compared" in err
