"""The CLI never crashes on a mistake and never does nothing silently: exit code, one line, nothing left."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import handmade
from conftest import ROOT, cli, sha
from onnxprune.cli import main

LENET = ROOT / "models" / "fashion" / "lenet300.onnx"
RESNET = ROOT / "models" / "torchvision" / "resnet50_ts_bnkeep.onnx"


def refused(r: subprocess.CompletedProcess, code: int, message: str) -> None:
    """Exit `code`, one stderr line saying `message`, no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture
def model(tmp: Path) -> Path:
    path = tmp / "chain.onnx"
    onnx.save(handmade.residual_add(), path)
    return path


def test_output_that_is_a_directory_is_refused_before_any_work(model: Path, tmp: Path) -> None:
    before = sha(model)
    (tmp / "out").mkdir()
    refused(cli("prune", str(model), "-o", str(tmp / "out"), "--ratio", "0.5"), 2, "is a directory")
    assert sha(model) == before and list((tmp / "out").iterdir()) == []


@pytest.mark.parametrize("flag", ["--report", "--save-plan"])
def test_a_report_into_a_missing_folder_writes_nothing(model: Path, tmp: Path, flag: str) -> None:
    out = tmp / "pruned.onnx"
    refused(cli("prune", str(model), "-o", str(out), "--ratio", "0.5", flag, str(tmp / "no" / "r.json")), 2,
            "does not exist")
    assert not out.exists()


def test_analyze_json_into_a_missing_folder(model: Path, tmp: Path) -> None:
    refused(cli("analyze", str(model), "--json", str(tmp / "no" / "a.json")), 2, "does not exist")


def test_a_failing_report_write_takes_the_model_back(model: Path, tmp: Path) -> None:
    out, report = tmp / "pruned.onnx", tmp / "report.json"
    report.mkdir()  # exists, but a directory: refused up front
    refused(cli("prune", str(model), "-o", str(out), "--ratio", "0.5", "--report", str(report)), 2, "is a directory")
    assert not out.exists()


def _calib(tmp: Path, kind: str) -> Path:
    x = np.random.default_rng(0).random((8, 1, 28, 28), np.float32)
    path = tmp / f"{kind}.npz"
    if kind == "nan":
        x[3, 0, 5, 5] = np.nan
        np.savez(path, image=x)
    elif kind == "inf":
        x[1, 0, 0, 0] = np.inf
        np.savez(path, image=x)
    elif kind == "empty":
        np.savez(path, image=x[:0])
    elif kind == "npy_named_npz":
        with open(path, "wb") as fh:
            np.save(fh, x)
    else:
        path.write_text("not arrays")
    return path


@pytest.mark.parametrize("mode", [["--criterion", "activation"], ["--criterion", "lasso"], ["--reconstruct"]])
@pytest.mark.parametrize("kind, message", [("nan", "holds NaN or Inf values"), ("inf", "holds NaN or Inf values"),
                                           ("empty", "holds 0 samples"), ("npy_named_npz", "is not an .npz"),
                                           ("text", "is not an .npz")])
def test_bad_calibration_data(tmp: Path, mode: list[str], kind: str, message: str) -> None:
    out = tmp / "pruned.onnx"
    refused(cli("prune", str(LENET), "-o", str(out), "--ratio", "0.5", *mode, "--calib", str(_calib(tmp, kind))),
            2, message)
    assert not out.exists()


def test_validation_data_with_nan_is_refused(tmp: Path) -> None:
    refused(cli("validate", str(LENET), str(LENET), "--data", str(_calib(tmp, "nan"))), 2, "holds NaN or Inf")


def test_missing_external_data_file(tmp: Path) -> None:
    path = tmp / "ext.onnx"
    onnx.save(onnx.load(LENET), path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (tmp / "ext.onnx.data").unlink()
    for args in (["analyze", str(path)], ["prune", str(path), "-o", str(tmp / "o.onnx"), "--ratio", "0.5"]):
        refused(cli(*args), 2, "external data file")
    assert not (tmp / "o.onnx").exists()


def test_initializers_listed_as_inputs_are_weights_not_inputs(tmp: Path) -> None:
    m = onnx.load(ROOT / "models" / "torchvision" / "resnet18_ts_bnkeep.onnx")
    m.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in m.graph.initializer)
    path, out = tmp / "old.onnx", tmp / "pruned.onnx"
    onnx.save(m, path)
    r = cli("analyze", str(path), "--json", str(tmp / "a.json"))
    assert r.returncode == 0 and '"input"' in (tmp / "a.json").read_text().split('"groups"')[0]
    assert "conv1.weight" not in (tmp / "a.json").read_text().split('"groups"')[0]
    r = cli("prune", str(path), "-o", str(out), "--ratio", "0.3", "--validate", "--runs", "2", "--warmup", "0")
    assert r.returncode == 0, r.stderr
    assert [i.name for i in onnx.load(out).graph.input] == ["input"]


@pytest.mark.parametrize("args, message", [
    (["--ratio", "0"], "a ratio or target of 0 removes nothing"),
    (["--target-macs", "0"], "a ratio or target of 0 removes nothing"),
    (["--ratio", "0.5", "--round-to", "64"], "stay whole under --round-to 64"),
])
def test_a_run_that_removes_nothing_says_so_and_writes_nothing(model: Path, tmp: Path, args, message) -> None:
    out = tmp / "pruned.onnx"
    refused(cli("prune", str(model), "-o", str(out), *args), 4, message)
    assert not out.exists()
    r = cli("prune", str(model), "-o", str(out), *args, "--allow-noop")
    assert r.returncode == 0 and out.exists(), r.stderr


def test_nothing_prunable_is_a_noop(tmp: Path) -> None:
    b = handmade.Builder(0)
    b.head("x", 3, 4)  # one conv whose channels are the graph output: its only group is frozen
    path = tmp / "frozen.onnx"
    onnx.save(b.model("frozen", handmade.X2D_SMALL), path)
    refused(cli("prune", str(path), "-o", str(tmp / "o.onnx"), "--ratio", "0.5"), 4, "none of the")


def test_patterns_that_match_nothing_and_unread_calibration_warn(model: Path, tmp: Path) -> None:
    calib = tmp / "c.npz"
    np.savez(calib, x=np.zeros((2, 3, 16, 16), np.float32))
    r = cli("prune", str(model), "-o", str(tmp / "o.onnx"), "--ratio", "0.5", "--round-to", "1", "--exclude", "nosuchnode*",
            "--calib", str(calib))
    assert r.returncode == 0, r.stderr
    assert "--exclude pattern 'nosuchnode*' matches no producer node" in r.stderr
    assert "--calib is read only by" in r.stderr


def test_progress_goes_to_stderr_off_a_terminal_and_quiet_silences_it(model: Path, tmp: Path) -> None:
    loud = cli("prune", str(model), "-o", str(tmp / "a.onnx"), "--ratio", "0.5", "--round-to", "1", quiet=False)
    assert loud.returncode == 0 and "s] loading" in loud.stderr and "[onnxprune" not in loud.stdout
    quiet = cli("prune", str(model), "-o", str(tmp / "b.onnx"), "--ratio", "0.5", "--round-to", "1")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_version_and_exit_codes_in_help() -> None:
    import onnxprune

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"onnxprune {onnxprune.__version__}"
    assert "130 interrupted" in cli("--help").stdout


def test_ctrl_c_exits_130_with_nothing_written(tmp: Path) -> None:
    out = tmp / "pruned.onnx"
    before = sha(RESNET)
    proc = subprocess.Popen([sys.executable, "-m", "onnxprune", "prune", str(RESNET), "-o", str(out), "--ratio", "0.3",
                             "--validate", "--runs", "1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("timing both models" in x for x in lines):
        time.sleep(0.2)  # interrupt while it times the models, before anything moves into place
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not out.exists() and not [p for p in tmp.iterdir() if p.name.startswith(".onnxprune-")]
    assert sha(RESNET) == before


def test_validation_runs_on_the_calibration_inputs_and_warns_about_noise(tmp: Path) -> None:
    calib = tmp / "calib.npz"
    np.savez(calib, image=np.random.default_rng(0).random((16, 1, 28, 28), np.float32))
    out = tmp / "pruned.onnx"
    r = cli("prune", str(LENET), "-o", str(out), "--ratio", "0.5", "--criterion", "activation", "--calib", str(calib),
            "--validate", "--runs", "2", "--warmup", "0", "--report", str(tmp / "r.json"))
    assert r.returncode == 0 and f"16 samples from {calib}" in r.stdout, r.stderr
    r = cli("prune", str(LENET), "-o", str(out), "--ratio", "0.7", "--validate", "--runs", "2", "--warmup", "0",
            "--report", str(tmp / "r.json"))
    assert r.returncode == 0 and "warning: these figures come from random-noise inputs" in r.stdout
    report = __import__("json").loads((tmp / "r.json").read_text())
    assert any("random-noise" in w for w in report["validation"]["warnings"])


def test_group_ids_are_never_cut(tmp: Path) -> None:
    b = handmade.Builder(0)
    h = b.relu(b.conv("x", 3, 8))
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    m = b.model("long_names", handmade.X2D_SMALL)
    for i, node in enumerate(m.graph.node):  # two long names that differ only at the end
        node.name = "/backbone/stage_with_a_very_long_name/block_with_a_long_name/conv_" + str(i)
    path = tmp / "long.onnx"
    onnx.save(m, path)
    r = cli("analyze", str(path))
    assert r.returncode == 0 and "/backbone/stage_with_a_very_long_name/block_with_a_long_name/conv_0 " in r.stdout
    r = cli("prune", str(path), "-o", str(tmp / "o.onnx"), "--ratio", "0.5", "--round-to", "1")
    assert "block_with_a_long_name/conv_0 " in r.stdout and "block_with_a_long_name/conv_2 " in r.stdout


def test_validate_counts_macs_at_the_datas_own_shape(tmp: Path) -> None:
    import json

    from onnxprune.analysis.cost import count_model_cost

    b = handmade.Builder(1)
    b.head(b.relu(b.conv("x", 3, 8)), 8)
    m = b.model("dynamic_hw", [1, 3, 16, 16])
    for d, name in zip(m.graph.input[0].type.tensor_type.shape.dim[2:], ("h", "w")):
        d.Clear()
        d.dim_param = name
    for o in m.graph.output:  # let the output spatial dims follow the input
        for d in o.type.tensor_type.shape.dim[2:]:
            d.Clear()
    path = tmp / "dyn.onnx"
    onnx.save(m, path)
    data = tmp / "data.npz"
    np.savez(data, x=np.random.default_rng(0).random((4, 3, 32, 40), np.float32))
    r = cli("validate", str(path), str(path), "--data", str(data), "--json", str(tmp / "v.json"))
    assert r.returncode == 0, r.stderr
    macs = json.loads((tmp / "v.json").read_text())["cost"]["macs_before"]
    assert macs == count_model_cost(str(path), {"x": (1, 3, 32, 40)}).macs != count_model_cost(str(path)).macs


PER_GROUP = re.compile(r"^\[onnxprune +[\d.]+s\] group (\d+)/(\d+) .* \[\1/\2 groups, ([\d.]+) s, ~([\d.]+) s left\]$",
                       re.M)


def test_per_group_progress_estimates_the_time_left_and_quiet_silences_it(capsys, tmp: Path) -> None:
    calib = tmp / "calib.npz"
    np.savez(calib, image=np.random.default_rng(0).random((16, 1, 28, 28), np.float32))
    args = ["--ratio", "0.5", "--reconstruct", "--calib", str(calib)]
    assert main(["prune", "--no-time", str(LENET), "-o", str(tmp / "a.onnx"), *args]) == 0
    err = capsys.readouterr().err  # pytest's capture: stderr is not a terminal here
    lines = PER_GROUP.findall(err)
    assert [(k, n) for k, n, *_ in lines] == [("1", "2"), ("2", "2")], err
    (_, _, spent, left), (_, _, _, last) = lines
    assert float(left) == pytest.approx(float(spent), abs=0.15) and float(last) == 0  # 1 of 2 done: as long again
    assert main(["prune", "-q", "--no-time", str(LENET), "-o", str(tmp / "b.onnx"), *args]) == 0
    assert capsys.readouterr().err == ""


def _sensitivity(capsys, tmp: Path, *args: str) -> dict:
    """`sensitivity` of the residual block on fixed data; the JSON it wrote."""
    out = tmp / "s.json"
    assert main(["sensitivity", "-q", str(tmp / "res.onnx"), "-o", str(out), "--ratios", "0.5", *args]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())


def test_sensitivity_takes_what_its_help_lists(capsys, tmp: Path) -> None:
    onnx.save(handmade.residual_add(), tmp / "res.onnx")
    np.savez(tmp / "x.npz", x=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    data = ["--data", str(tmp / "x.npz"), "--criterion", "random"]
    assert _sensitivity(capsys, tmp, *data, "--threads", "1")["threads"] == 1
    curves = {seed: [p["cosine"] for g in _sensitivity(capsys, tmp, *data, "--seed", seed)["groups"]
                     for p in g["points"]] for seed in ("1", "2", "1")}
    assert curves["1"] != curves["2"]  # the same inputs: the seed reaches the random ranking
    assert main(["sensitivity", str(tmp / "res.onnx"), "-o", str(tmp / "t.json"), "--ratios", "0.5"]) == 0
    err = capsys.readouterr().err
    assert [(k, n) for k, n, *_ in PER_GROUP.findall(err)] == [("1", "3"), ("2", "3"), ("3", "3")], err
    with pytest.raises(SystemExit):
        main(["sensitivity", "--help"])
    shown = capsys.readouterr().out
    assert "--criterion lasso" not in shown and "of --criterion random" in shown and "--threads N" in shown


# --- outputs that would destroy inputs or devices (found by running every mistake through the CLI) ---

@pytest.mark.parametrize("argv", [
    ["prune", "{m}", "-o", "{t}/o.onnx", "--ratio", "0.3", "--report", "{m}"],
    ["prune", "{m}", "-o", "{t}/o.onnx", "--ratio", "0.3", "--save-plan", "{m}"],
    ["analyze", "{m}", "--json", "{m}"],
    ["validate", "{m}", "{m}", "--json", "{m}"],
    ["prune", "{m}", "-o", "{t}/o.onnx", "--ratio", "0.3", "--report", "{t}/o.onnx"],
])
def test_an_output_never_overwrites_an_input_or_another_output(tmp_path, argv) -> None:
    """--report/--save-plan/--json naming the model (or -o): refused before any work, the model intact."""
    model = tmp_path / "m.onnx"
    model.write_bytes(LENET.read_bytes())
    before = sha(model)
    r = cli(*[a.format(m=model, t=tmp_path) for a in argv])
    assert r.returncode == 2 and ("never overwritten" in r.stderr or "same file" in r.stderr), r.stderr
    assert r.stderr.count("\n") == 1 and sha(model) == before
    assert not (tmp_path / "o.onnx").exists()


def test_a_pipe_output_is_written_into_not_replaced(tmp_path) -> None:
    """analyze --json into a FIFO: the reader gets the JSON, and the FIFO is still a FIFO."""
    import os
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("text", fifo.read_text()))
    reader.start()
    r = cli("analyze", str(LENET), "--json", str(fifo))
    reader.join(timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(got["text"])["groups"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_unwritable_folder_is_refused_up_front(tmp_path) -> None:
    """-o under /proc (where even root cannot create files): exit 2 and one line, not an internal error."""
    r = cli("prune", str(LENET), "-o", "/proc/onnxprune-test.onnx", "--ratio", "0.3")
    assert r.returncode == 2 and "cannot write in folder /proc" in r.stderr and r.stderr.count("\n") == 1


def test_ctrl_c_while_starting_is_clean(tmp_path) -> None:
    """SIGINT while the CLI is still importing onnx and numpy: exit 130 and one line, never a traceback."""
    for delay in (0.3, 0.8):
        p = subprocess.Popen([sys.executable, "-m", "onnxprune", "prune", str(LENET), "-o", str(tmp_path / "o.onnx"),
                              "--ratio", "0.3"], stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        assert "Traceback" not in err, err
        assert p.returncode in (130, -signal.SIGINT, 0), (p.returncode, err)  # 0: it finished first
        if p.returncode == 130:
            assert "interrupted" in err and not (tmp_path / "o.onnx").exists()


def test_a_calib_that_is_no_archive_says_so(tmp_path) -> None:
    """A text file given as --calib: 'neither an .npz nor an .npy', not numpy's advice to unpickle it."""
    bad = tmp_path / "calib.npz"
    bad.write_text("not numbers\n")
    r = cli("prune", str(LENET), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.3", "--criterion", "activation",
            "--calib", str(bad))
    assert r.returncode == 2 and "neither an .npz" in r.stderr and "pickle" not in r.stderr


def test_report_and_plan_are_as_readable_as_the_model(model: Path, tmp: Path) -> None:
    """The report and plan get the permissions the umask gives any new file, like the model (not
    mkstemp's 0600, which left them unreadable to the group that reads the model)."""
    out, report, plan = tmp / "o.onnx", tmp / "r.json", tmp / "p.json"
    r = cli("prune", str(model), "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--report", str(report), "--save-plan", str(plan))
    assert r.returncode == 0, r.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in (out, report, plan)}
    assert modes["r.json"] == modes["p.json"] == modes["o.onnx"], modes
