"""Issue "Honest speed": sensitivity on noise says so; plots keep labels apart, the measured speed-ups in view,
the chosen step marked and the kept allocation named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

import handmade
from onnxprune.cli import main
from onnxprune.search import plots

PNG = b"\x89PNG\r\n\x1a\n"
PREFIX = "/model/encoder/layers.0/attention/self/"  # 38 characters: a cut at 32 leaves only this


def test_sensitivity_on_random_inputs_warns_and_records_it(capsys, tmp_path: Path) -> None:
    onnx.save(handmade.residual_add(), tmp_path / "res.onnx")
    out = tmp_path / "s.json"
    assert main(["sensitivity", "-q", str(tmp_path / "res.onnx"), "-o", str(out), "--ratios", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "onnxprune: warning:" in err and "random-noise inputs" in err and "--data" in err, err
    warnings = json.loads(out.read_text())["warnings"]
    assert len(warnings) == 1 and "random-noise inputs" in warnings[0] and "--data" in warnings[0]
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    argv = ["sensitivity", "-q", str(tmp_path / "res.onnx"), "-o", str(out), "--ratios", "0.5",
            "--data", str(tmp_path / "x.npz")]
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err and json.loads(out.read_text())["warnings"] == []


def test_short_labels_are_unique_and_keep_both_ends() -> None:
    ids = [PREFIX + "query/MatMul", PREFIX + "key/MatMul", "conv1"]
    labels = plots.short_labels(ids, 32)
    assert len(set(labels)) == 3 and all(len(s) <= 32 for s in labels)
    assert labels[2] == "conv1" and labels[0].startswith("/model") and labels[0].endswith("query/MatMul")
    assert "…" in labels[0]
    same_ends = [f"/a/{'x' * 30}{i}{'y' * 30}/b" for i in range(3)]  # differ only in the middle
    labels = plots.short_labels(same_ends, 20)
    assert len(set(labels)) == 3 and all(len(s) <= 20 for s in labels), labels
    assert [s[-2:] for s in labels] == ["#1", "#2", "#3"]


def _sensitivity_report() -> dict:
    groups = [{"id": PREFIX + name, "points": [{"ratio": r, "cosine": 1 - r / 10} for r in (0.1, 0.5)]}
              for name in ("query/MatMul", "key/MatMul", "value/MatMul")]
    return {"model": "m.onnx", "metric": "cosine", "criterion": "l1", "groups": groups}


def test_sensitivity_plot_legend_tells_the_groups_apart(tmp_path: Path) -> None:
    fig = plots.plot_sensitivity(_sensitivity_report(), tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG
    shown = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(shown) == 3 and len(set(shown)) == 3, shown


SPEED = {"target_speedup": 2.0, "provider": "CPUExecutionProvider", "batch": 1, "method": "latency model",
         "steps": [{"asked_share": 0.3, "predicted_speedup": 1.4, "speedup": 1.3, "target_macs": 0.25},
                   {"asked_share": 0.5, "impossible": "too much"},
                   {"asked_share": 0.6, "predicted_speedup": 20.0, "speedup": 2.4, "target_macs": 0.6},
                   {"asked_share": 0.45, "predicted_speedup": 1.9, "speedup": 2.1, "target_macs": 0.5,
                    "chosen": True}]}
SPEED["chosen"] = SPEED["steps"][3]


def test_speed_limits_come_from_the_measured_points_and_the_target() -> None:
    lo, hi = plots.speed_limits([1.3, 2.1, 2.4], 2.0)
    assert 1.0 < lo < 1.3 and 2.4 < hi < 3.0
    lo, hi = plots.speed_limits([1.5], 1.5)  # one point on the target: still a range
    assert lo < 1.5 < hi


def test_speed_plot_clips_wild_predictions_and_marks_the_chosen_step(tmp_path: Path) -> None:
    fig = plots.plot_allocation(None, SPEED, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 1.0 < lo < 1.3 and 2.4 < hi < 3.0  # 20x does not flatten the measured 1.3-2.4x
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("clipped" in s for s in legend) and any(s.startswith("chosen") for s in legend), legend
    star = next(line for line in ax.get_lines() if line.get_label().startswith("chosen"))
    assert star.get_marker() == "*" and list(star.get_xdata()) == [0.5] and list(star.get_ydata()) == [2.1]
    clipped = next(line for line in ax.get_lines() if "clipped" in line.get_label())
    assert list(clipped.get_ydata()) == [hi] and clipped.get_marker() != "x"


ALLOCATION = {"allocation": "sensitivity", "compared": {"losses": {"sensitivity": 0.034, "uniform": 0.012,
                                                                    "global": 0.05}, "kept": "uniform"},
              "groups": {PREFIX + "query/MatMul": {"ratio": 0.3},  # the same last 20 characters:
                         PREFIX.replace("layers.0", "layers.1") + "query/MatMul": {"ratio": 0.3}},
              "predicted_loss": 0.012, "measured_loss": 0.012}


def test_allocation_title_names_the_kept_allocation() -> None:
    title = plots.allocation_title(ALLOCATION)
    assert "uniform" in title and "kept over sensitivity" in title and "measured lower" in title, title
    assert "predicted" not in title and "allocation by sensitivity" not in title
    kept = {**ALLOCATION, "compared": {**ALLOCATION["compared"], "kept": "sensitivity"}, "predicted_loss": 0.03,
            "measured_loss": 0.034}
    title = plots.allocation_title(kept)
    assert title.startswith("allocation by sensitivity") and "predicted loss 0.030" in title, title


def test_allocation_plot_titles_and_ticks_honestly(tmp_path: Path) -> None:
    fig = plots.plot_allocation(ALLOCATION, SPEED, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    assert ax.get_title() == plots.allocation_title(ALLOCATION)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(ticks)) == 2 and all(len(s) <= 20 for s in ticks), ticks

