"""Honest speed: every prune says how fast its result runs, never hides a slow-down, rounds by default to
the provider's kernel multiple, keeps its figures when a gate fails, and names a missed speed target."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT
from onnxprune.cli import main
from onnxprune.cli import prune as prune_cli
from onnxprune.search.speed import noise_note
from onnxprune.validation.speed_check import noisy, speed_line, speed_warnings

LENET = ROOT / "models" / "fashion" / "lenet300.onnx"
VGG = ROOT / "models" / "fashion" / "vgg_bnfold.onnx"
TEST = ROOT / "models" / "fashion" / "test500.npz"
LABELS = ROOT / "models" / "fashion" / "test500_labels.npy"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_prune_prints_its_measured_speed_and_records_it(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "prune", str(LENET), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3",
                       "--time-budget", "0.5", "--report", str(tmp_path / "r.json"), "-q")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("speed-up "))
    assert " at batch 1 on CPUExecutionProvider (A/A control " in line
    speed = json.loads((tmp_path / "r.json").read_text())["speed"]
    assert speed["provider"] == "CPUExecutionProvider" and speed["batch"] == 1 and speed["runs"] >= 15
    assert speed["range"][0] <= speed["speedup"] <= speed["range"][1] and speed["control"][0] <= speed["control"][1]
    assert f"{speed['speedup']:.2f}x" in line


def test_no_time_skips_the_timing(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "prune", str(LENET), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--no-time",
                       "--report", str(tmp_path / "r.json"), "-q")
    assert code == 0 and "speed-up" not in out
    assert "speed" not in json.loads((tmp_path / "r.json").read_text())


def test_a_slower_result_is_written_with_a_warning_that_says_what_to_try(capsys, tmp_path: Path,
                                                                          monkeypatch) -> None:
    slow = {"speedup": 0.81, "range": [0.8, 0.83], "control": [0.99, 1.01], "batch": 1,
            "provider": "CPUExecutionProvider", "threads": 2, "runs": 50, "original_ms": 1.0, "pruned_ms": 1.23,
            "seconds": 1.0}
    monkeypatch.setattr(prune_cli, "quick_speedup", lambda *a, **k: dict(slow))
    code, out, err = run(capsys, "prune", str(LENET), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "-q")
    assert code == 0 and (tmp_path / "p.onnx").is_file()
    assert "speed-up 0.81x" in out
    assert "runs SLOWER than the original (0.81x" in err and "--round-to 16" in err and "--target-speedup" in err


def test_speed_warnings_for_a_noisy_control_and_a_slow_down() -> None:
    record = {"speedup": 1.2, "range": [1.1, 1.3], "control": [0.99, 1.02], "batch": 1, "provider": "cpu",
              "original_ms": 1.0, "pruned_ms": 0.8, "runs": 10, "seconds": 1.0}
    assert speed_warnings(record, 8) == [] and not noisy(record)
    record["control"] = [0.80, 1.01]
    assert noisy(record) and "noisy" in speed_warnings(record, 8)[0]
    record.update(speedup=0.9, control=[1.0, 1.0])
    assert speed_warnings(record, 16) == [speed_warnings(record, 16)[0]] and "--round-to 32" in speed_warnings(record, 16)[0]
    assert "runs SLOWER than the original (0.90x at batch 1 on cpu)" in speed_warnings(record, 8)[0]
    record["control"] = [0.85, 1.02]  # inside the noise: no faster, said as such
    assert "runs no faster than the original (0.90x at batch 1 on cpu, inside the timing's own noise 0.85-1.02x)" \
        in speed_warnings(record, 8)[1]
    assert speed_line(record).startswith("speed-up 0.90x at batch 1 on cpu (A/A control 0.85-1.02x")


def test_rounding_defaults_to_the_providers_kernel_multiple(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "prune", str(VGG), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--no-time",
                       "--report", str(tmp_path / "r.json"), "-q")
    assert code == 0
    assert "rounding: kept channel counts are multiples of 8 (the default on CPUExecutionProvider" in out
    groups = json.loads((tmp_path / "r.json").read_text())["groups"]
    kept = [g["channels_after"] for g in groups if g["removed"]]
    assert kept and all(k % 8 == 0 for k in kept), kept
    code, out, _ = run(capsys, "prune", str(VGG), "-o", str(tmp_path / "q.onnx"), "--ratio", "0.3", "--no-time",
                       "--round-to", "1", "--report", str(tmp_path / "r1.json"), "-q")
    groups = json.loads((tmp_path / "r1.json").read_text())["groups"]
    assert code == 0 and "--round-to 1: none" in out
    assert any(g["channels_after"] % 8 for g in groups)


def test_help_shows_the_default_rounding(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: the provider's kernel multiple, cpu 8" in text and "--no-time" in text


def test_a_failing_gate_prints_the_figures_and_writes_the_report_but_not_the_model(capsys, tmp_path: Path) -> None:
    out_model = tmp_path / "p.onnx"
    code, out, err = run(capsys, "prune", str(VGG), "-o", str(out_model), "--ratio", "0.6", "--round-to", "1",
                         "--data", str(TEST), "--labels", str(LABELS), "--max-drop", "0.5",
                         "--report", str(tmp_path / "r.json"), "-q")
    assert code == 1 and not out_model.exists()
    assert "accuracy 93.00% -> " in out and "validation on cpu" in out
    assert err.strip().splitlines()[-1].startswith("onnxprune: below the bar: accuracy drop")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["gate"]["passed"] is False and report["written"] is False
    assert report["gate"]["failures"][0].startswith("accuracy drop") and "accuracy" in report["validation"]


def test_a_passing_gate_says_so(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "prune", str(VGG), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.1", "--no-time",
                       "--data", str(TEST), "--min-cosine", "0.5", "--report", str(tmp_path / "r.json"), "-q")
    assert code == 0 and "gate: passed (--min-cosine 0.5)" in out
    assert json.loads((tmp_path / "r.json").read_text())["gate"]["passed"] is True


def test_validation_names_the_provider_it_runs_on(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--no-time",
                       "--validate")
    assert code == 0 and "validating on CPUExecutionProvider" in err and "validating on auto" not in err


def test_jobs_without_an_allocation_is_not_silently_ignored(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--no-time",
                       "--jobs", "2", "-q")
    assert code == 0 and "--jobs is read only by --allocate sensitivity|iterative" in err


def test_an_unreachable_speed_target_has_its_own_exit_code(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp_path / "p.onnx"), "--target-speedup", "500",
                       "--runs", "5", "--warmup", "1", "-q")
    assert code == 5 and not (tmp_path / "p.onnx").exists()
    assert err.startswith("onnxprune: --target-speedup 500.00x is not reached") and len(err.splitlines()) == 1


def test_a_latency_target_is_named_as_given(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "prune", str(LENET), "-o", str(tmp_path / "p.onnx"), "--target-latency", "0.00001",
                       "--runs", "5", "--warmup", "1", "-q")
    assert code == 5
    assert err.startswith("onnxprune: --target-latency 1e-05 ms (the original runs ") and "speed-up) is not reached" in err
    assert "--target-speedup" not in err


def test_a_miss_under_a_noisy_control_says_so() -> None:
    assert noise_note(1.01) == ""
    assert "the timing was noisy (the original against itself ran 0.57x)" in noise_note(0.57)


def test_the_allocation_line_names_the_allocation_kept() -> None:
    a = {"allocation": "sensitivity", "inputs": {"source": "calib.npz", "samples": 64}, "predicted_loss": 0.0,
         "measured_loss": 0.0, "loss": "top-1 disagreement", "compared": {"kept": "uniform",
                                                                           "losses": {"sensitivity": 0.02,
                                                                                      "uniform": 0.0}},
         "groups": {"g": {"ratio": 0.3, "predicted_loss": None}}}
    line = prune_cli._allocation_line(a).splitlines()[0]
    assert line.startswith("allocation: uniform, kept over the sensitivity allocation because it measured lower")
    assert "predicted" not in line and "sensitivity 0.0200, uniform 0.0000" in line


def test_latency_lines_say_which_way_each_count_went() -> None:
    """Each timed count is 'saves' or 'costs' so many ms, never a bare signed number."""
    import handmade
    from onnxprune.analysis.analyze import build_analysis
    from onnxprune.loading import prepare
    from onnxprune.scoring.score import score_groups
    from onnxprune.search.stopwatch import SpeedTarget, measure_latency_model
    from onnxprune.selection import Selection

    prep = prepare(handmade.conv_bn_relu_chain())
    analysis = build_analysis(prep, None)
    scores = score_groups(prep, analysis, "l1")

    class Watch:  # the original runs 1 ms; a candidate 0.8 ms or 1.25 ms in turn
        speed, original, provider, batch = SpeedTarget(shares=(0.25, 0.5)), b"", "cpu", 1
        base_ms: list[float] = []
        turn = 0

        def speedup(self, candidate) -> float:
            self.base_ms.append(1.0)
            self.turn += 1
            return 1.0 if candidate == b"" else (1.25 if self.turn % 2 else 0.8)

    lines: list[str] = []
    measure_latency_model(Watch(), analysis, scores, Selection(ratio=0.5), lambda removed: b"x", lines.append)
    timed = [x for x in lines if x.startswith("latency ") and "control" not in x]
    assert timed and all(" ms" in x and ":+" not in x and ":-" not in x for x in timed)
    assert any("removed saves 0.200 ms" in x for x in timed) and any("removed costs 0.250 ms" in x for x in timed)
