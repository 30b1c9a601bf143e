"""What the CLI says: argparse mistakes in one line, typos named, folders, a missing runtime, wording, paths."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import handmade
from conftest import cli
from onnxprune import analyze, make_plan, save_plan
from onnxprune.cli import EXIT_REFUSED, main
from test_validation import linear


@pytest.fixture
def model(tmp: Path) -> Path:
    path = tmp / "chain.onnx"
    onnx.save(handmade.residual_add(), path)
    return path


def one_line(capsys: pytest.CaptureFixture, code: int, argv: list[str], *says: str) -> str:
    """main(argv) exits `code` with one stderr line saying each of `says`; that line."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and all(s in lines[0] for s in says), err
    assert "Traceback" not in err and "usage:" not in err
    return lines[0]


# --- 1. argparse mistakes: one line, exit 2; --help and --version still exit 0 ---

@pytest.mark.parametrize("extra, says", [
    (["--ratio", "0.3", "--target-macs", "0.5"], "argument --target-macs: not allowed with argument --ratio"),
    ([], "one of the arguments --plan --ratio"),
    (["--ratio", "abc"], "argument --ratio: invalid float value: 'abc'"),
    (["--ratio", "0.3", "--criterion", "l7"], "argument --criterion: invalid choice: 'l7'"),
])
def test_an_argparse_mistake_is_one_line_and_exit_2(capsys, model: Path, tmp: Path, extra, says) -> None:
    out = tmp / "x.onnx"
    line = one_line(capsys, EXIT_REFUSED, ["prune", "-q", str(model), "-o", str(out), *extra], says)
    assert line.startswith("onnxprune: error: ") and line.endswith("(see onnxprune prune --help)")
    assert not out.exists()


@pytest.mark.parametrize("argv, says", [
    ([], "the following arguments are required: command"),
    (["prun", "m.onnx"], "argument command: invalid choice: 'prun'"),
    (["analyze"], "the following arguments are required: model"),
])
def test_a_missing_or_unknown_command_is_one_line(capsys, argv, says) -> None:
    one_line(capsys, EXIT_REFUSED, argv, says, "--help)")


def test_help_and_version_still_exit_0(capsys) -> None:
    for argv in (["--help"], ["prune", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "onnxprune" in capsys.readouterr().out


def test_the_console_exit_code_of_a_mistake_is_2(model: Path, tmp: Path) -> None:
    r = cli("prune", str(model), "-o", str(tmp / "x.onnx"), "--ratio", "0.3", "--target-macs", "0.5")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not allowed with" in r.stderr, r.stderr
    assert cli("--version").returncode == 0


# --- 2. an unknown option is named first, with the nearest real one ---

@pytest.mark.parametrize("extra, says", [
    (["--ration", "0.3"], "unrecognized option --ration (did you mean --ratio?)"),
    (["--ration=0.3"], "unrecognized option --ration (did you mean --ratio?)"),
    (["--ratio", "0.3", "--critrion", "l2"], "unrecognized option --critrion (did you mean --criterion?)"),
    (["--ratio", "0.3", "--no-verfy"], "unrecognized option --no-verfy (did you mean --no-verify?)"),
    (["--ratio", "0.3", "--zzzzzz"], "unrecognized option --zzzzzz"),
])
def test_an_unknown_option_is_named_with_a_suggestion(capsys, model: Path, tmp: Path, extra, says) -> None:
    line = one_line(capsys, EXIT_REFUSED, ["prune", "-q", str(model), "-o", str(tmp / "x.onnx"), *extra], says)
    assert "required" not in line and ("did you mean" in says) == ("did you mean" in line)


def test_unknown_options_of_the_main_parser_and_stray_arguments(capsys, model: Path, tmp: Path) -> None:
    one_line(capsys, EXIT_REFUSED, ["--verison"], "unrecognized option --verison (did you mean --version?)")
    one_line(capsys, EXIT_REFUSED, ["analyze", str(model), "--jsn", "a.json"],
             "unrecognized option --jsn (did you mean --json?)", "see onnxprune analyze --help")
    one_line(capsys, EXIT_REFUSED, ["prune", str(model), "extra.onnx", "-o", str(tmp / "x.onnx"), "--ratio", "0.3"],
             "unrecognized arguments: extra.onnx")


def test_negative_numbers_and_abbreviations_are_not_unknown_options(capsys, model: Path, tmp: Path) -> None:
    one_line(capsys, EXIT_REFUSED, ["prune", "-q", str(model), "-o", str(tmp / "x.onnx"), "--ratio", "-0.3"],
             "ratio")  # refused by the range check, not as an unknown option
    assert main(["prune", "-q", str(model), "-o", str(tmp / "x.onnx"), "--rat", "0.5", "--round-to", "1",
                 "--no-verify"]) == 0
    assert (tmp / "x.onnx").is_file()


# --- 3. -o into a missing folder: created when the model is written, and only then ---

def test_prune_creates_the_missing_folders_of_its_output(capsys, model: Path, tmp: Path) -> None:
    out = tmp / "a" / "b" / "pruned.onnx"
    assert main(["prune", "-q", str(model), "-o", str(out), "--ratio", "0.5", "--round-to", "1"]) == 0
    assert out.is_file() and f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("extra, code, says", [
    (["--ratio", "1.5"], 2, "ratio"),
    (["--ratio", "0.5", "--round-to", "1", "--min-cosine", "1.0"], 1, "below the bar"),
])
def test_a_failing_run_leaves_no_folder_behind(capsys, model: Path, tmp: Path, extra, code, says) -> None:
    out = tmp / "a" / "b" / "pruned.onnx"
    one_line(capsys, code, ["prune", "-q", str(model), "-o", str(out), *extra], says)
    assert sorted(p.name for p in tmp.iterdir()) == ["chain.onnx"]


# --- 4. no onnxruntime: the check run says what it needs and how to skip it ---

def test_without_onnxruntime_the_check_names_the_extra_and_no_verify(capsys, monkeypatch, model: Path,
                                                                     tmp: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    out = tmp / "x.onnx"
    argv = ["prune", "-q", str(model), "-o", str(out), "--ratio", "0.5", "--round-to", "1"]
    line = one_line(capsys, EXIT_REFUSED, argv,
                    "the check run needs onnxruntime, which is not installed", "pip install 'onnxprune[cpu]'",
                    "--no-verify")
    assert "--shape" not in line and not out.exists()
    assert main([*argv, "--no-verify"]) == 0
    assert out.is_file()


# --- 5. wording: the merge line, the accuracy change, plurals ---

def test_the_merge_line_says_the_bn_mode_apart_from_the_exact_counts(capsys, model: Path, tmp: Path) -> None:
    assert main(["prune", "-q", str(model), "-o", str(tmp / "m.onnx"), "--ratio", "0.5", "--round-to", "1",
                 "--compensate", "merge", "--merge-threshold", "0", "--merge-approximate", "--no-verify"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("compensation"))
    assert line.startswith("compensation: merge (BN factor: exact mode): ") and " exact, " not in line
    assert "of them exactly" in line and "approximately" in line and "only pruned" in line


def test_one_channel_in_one_group_is_singular(capsys, model: Path, tmp: Path) -> None:
    plan = make_plan(analyze(model), {"conv1": [0]})
    save_plan(plan, tmp / "plan.json")
    assert main(["prune", "-q", str(model), "-o", str(tmp / "p.onnx"), "--plan", str(tmp / "plan.json"),
                 "--no-verify"]) == 0
    assert "removed 1 channel in 1 group\n" in capsys.readouterr().out


@pytest.mark.parametrize("labels_of, says", [("same", "accuracy 100.00% -> 0.00% (-100.00 points, 40 labelled"),
                                             ("neg", "accuracy 0.00% -> 100.00% (+100.00 points, 40 labelled")])
def test_the_accuracy_change_has_one_sign_convention(capsys, tmp: Path, labels_of: str, says: str) -> None:
    paths = {name: tmp / f"{name}.onnx" for name in ("same", "neg")}
    for name, factor in (("same", 1), ("neg", -1)):
        onnx.save(linear(factor), paths[name])
    x = np.random.default_rng(1).standard_normal((40, 6)).astype(np.float32)
    w = onnx.numpy_helper.to_array(linear().graph.initializer[0])
    b = onnx.numpy_helper.to_array(linear().graph.initializer[1])
    y = (x @ w + b) * (1 if labels_of == "same" else -1)
    np.savez(tmp / "x.npz", x=x)
    np.save(tmp / "y.npy", y.argmax(1))
    assert main(["validate", "-q", str(paths["same"]), str(paths["neg"]), "--data", str(tmp / "x.npz"), "--labels",
                 str(tmp / "y.npy"), "--provider", "cpu"]) == 0
    out = capsys.readouterr().out
    assert says in out and "drop" not in out, out


# --- 6. bench: a long path keeps its file name and loses the middle of its folders ---

def test_short_path_keeps_the_name_and_cuts_the_folders_in_the_middle() -> None:
    from onnxprune.validation.bench import short_path

    assert short_path("models/a.onnx", 40) == "models/a.onnx"
    a = "/very/long/experiments/run-2024-01-01/first/checkpoints/pruned.onnx"
    b = "/very/long/experiments/run-2024-01-01/second/checkpoints/pruned.onnx"
    sa, sb = short_path(a, 40), short_path(b, 40)
    assert len(sa) <= 40 and len(sb) <= 40 and sa != sb
    assert sa.endswith("/pruned.onnx") and sa.startswith("/very") and "..." in sa
    long_name = "x" * 50 + ".onnx"
    assert short_path(f"dir/{long_name}", 40) == f".../{long_name}"  # the name is never cut
    assert short_path(long_name, 40) == long_name


def test_bench_lines_tell_two_long_paths_apart(capsys, tmp: Path) -> None:
    paths = []
    for run in ("first-attempt", "second-attempt"):
        folder = tmp / run / "experiments-2024-05-01" / "checkpoints-after-pruning" / "onnx"
        folder.mkdir(parents=True)
        onnx.save(linear(), folder / "pruned.onnx")
        paths.append(str(folder / "pruned.onnx"))
    assert main(["bench", "-q", *paths, "--runs", "2", "--warmup", "0", "--provider", "cpu"]) == 0
    rows = [s for s in capsys.readouterr().out.splitlines() if "median" in s and "speed-up" not in s]
    assert len(rows) == 2 and all("/pruned.onnx" in r for r in rows)
    assert rows[0].split(" min ")[0] != rows[1].split(" min ")[0]
