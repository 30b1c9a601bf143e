"""Sensitivity allocation: measured per-group curves -> per-group ratios that meet a target with the least loss."""
from __future__ import annotations

import json

import numpy as np

import handmade
from conftest import ROOT, cli
from onnxprune import analyze
from onnxprune.analysis.estimates import removal_estimator
from onnxprune.scoring import score_groups
from onnxprune.loading import prepare
from onnxprune.selection import Selection
from onnxprune.selection.allocate import Curve, allocate, cost_measure, curves_from_sensitivity, predicted_loss

FASHION = ROOT / "models" / "fashion"


def _two_groups():
    model = handmade.conv_bn_relu_chain(0)
    prep, analysis = prepare(model), analyze(model)
    return analysis, score_groups(prep, analysis, "l1")


def test_the_flat_group_pays_first() -> None:
    """With one group free to lose and one costly, the target is met from the free one as far as it goes."""
    analysis, scores = _two_groups()
    a, b = (g for g in analysis.prunable)
    curves = {a.id: Curve(np.array([0, a.channels]), np.array([0.0, 0.001])),
              b.id: Curve(np.array([0, b.channels]), np.array([0.0, 1.0]))}
    est = removal_estimator(analysis)
    sel = Selection(target_macs=0.2)
    counts = allocate(analysis, curves, sel, *cost_measure(sel, scores, est))
    assert counts.get(a.id, 0) > counts.get(b.id, 0)
    swapped = {a.id: curves[b.id], b.id: curves[a.id]}
    counts2 = allocate(analysis, swapped, sel, *cost_measure(sel, scores, est))
    assert counts2.get(b.id, 0) > counts2.get(a.id, 0)
    removed = {g: list(range(n)) for g, n in counts.items()}
    assert est(removed)[0] >= 0.2 and predicted_loss(curves, counts) < predicted_loss(swapped, counts)


def test_curves_never_fall_as_more_goes() -> None:
    """A curve is made monotone: a noisy point that measured better than a smaller removal does not count."""
    report = {"metric": "cosine", "groups": [{"id": "g", "points": [
        {"removed": 2, "cosine": 0.99}, {"removed": 4, "cosine": 0.995}, {"removed": 6, "cosine": 0.9}]}]}
    c = curves_from_sensitivity(report)["g"]
    assert np.allclose(c.losses, [0.0, 0.01, 0.01, 0.1]) and np.isclose(c.at(3), 0.01)


def test_cli_sensitivity_allocation_meets_the_target(tmp_path) -> None:
    """prune --allocate sensitivity on the trained Fashion VGG: target reached, ratios and losses reported,
    the same allocation with --jobs 2 as in one process."""
    runs = []
    for jobs in ("1", "2"):
        report = tmp_path / f"r{jobs}.json"
        r = cli("prune", str(FASHION / "vgg_bnkeep.onnx"), "-o", str(tmp_path / f"o{jobs}.onnx"), "--target-macs",
                "0.4", "--allocate", "sensitivity", "--calib", str(FASHION / "calib256.npz"), "--calib-samples", "64",
                "--sensitivity-ratios", "0.25,0.5,0.75", "--jobs", jobs, "--report", str(report))
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(report.read_text()))
    a = runs[0]["allocation"]
    assert a["allocation"] == "sensitivity" and a["predicted_loss"] >= 0 and "measured_loss" in a
    assert runs[0]["total"]["macs_removed"] >= 0.4 - 0.02
    assert {g: v["removed"] for g, v in a["groups"].items()} == \
           {g: v["removed"] for g, v in runs[1]["allocation"]["groups"].items()}
    assert len({v["ratio"] for v in a["groups"].values()}) > 1 or a["compared"]["kept"] != "sensitivity"
    # a classifier's loss is its top-1 disagreement with the original; the allocation was measured against one
    # ratio for all and a global threshold at the same target, and the least measured loss was kept
    losses = a["compared"]["losses"]
    assert a["metric"] == "top1_agreement" and set(losses) == {"sensitivity", "uniform", "global"}
    assert losses[a["compared"]["kept"]] == min(losses.values())
    assert abs(a["measured_loss"] - min(losses.values())) < 1e-6


def test_allocation_needs_a_target(tmp_path) -> None:
    r = cli("prune", str(FASHION / "vgg_bnkeep.onnx"), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.3",
            "--allocate", "sensitivity")
    assert r.returncode == 2 and "needs --target-macs, --target-params, --target-speedup" in r.stderr


def test_ray_measures_the_same_curves() -> None:
    """The sensitivity points measured by a local Ray (2 CPUs, started here) equal the in-process ones."""
    import ray

    from onnxprune.search.sensitivity import sensitivity
    from onnxprune.validation.validate import Inputs

    inputs = Inputs(data=str(FASHION / "calib256.npz"), batch=64)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        on_ray = sensitivity(str(FASHION / "vgg_bnkeep.onnx"), (0.25, 0.5), "l1", inputs, ray="auto")
    finally:
        ray.shutdown()
    here = sensitivity(str(FASHION / "vgg_bnkeep.onnx"), (0.25, 0.5), "l1", inputs)
    assert on_ray["groups"] == here["groups"]


def test_plot_of_an_allocation(tmp_path) -> None:
    """--plot writes the allocation as a PNG; without an allocation or a speed target it is refused."""
    png = tmp_path / "a.png"
    r = cli("prune", str(FASHION / "lenet300.onnx"), "-o", str(tmp_path / "o.onnx"), "--target-macs", "0.5",
            "--allocate", "sensitivity", "--calib", str(FASHION / "calib256.npz"), "--sensitivity-ratios", "0.5",
            "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "ignored" not in r.stderr
    r = cli("prune", str(FASHION / "lenet300.onnx"), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3",
            "--plot", str(tmp_path / "b.png"))
    assert r.returncode == 2 and "--plot draws an allocation" in r.stderr and not (tmp_path / "p.onnx").exists()


def test_iterative_allocation_sees_what_curves_cannot() -> None:
    """A loss that only appears when two groups are cut together (curves measured one group at a time
    cannot see it): the iterative loop, measuring each step with the others removed, cuts one group only."""
    from onnxprune.selection.allocate import allocate_iteratively

    analysis, scores = _two_groups()
    a, b = (g.id for g in analysis.prunable)
    est = removal_estimator(analysis)

    def loss_of(counts):  # each alone is free, together they hurt, a alone beyond half hurts a little
        both = counts.get(a, 0) > 0 and counts.get(b, 0) > 0
        return (1.0 if both else 0.0) + 0.01 * max(0, counts.get(a, 0) - 3)

    sel = Selection(target_macs=0.1)
    counts, history = allocate_iteratively(analysis, scores, sel, *cost_measure(sel, scores, est),
                                           lambda trials: [loss_of(c) for c in trials])
    assert len([n for n in counts.values() if n]) == 1 and history and history[-1]["loss"] < 1.0
    assert est({g: list(range(n)) for g, n in counts.items()})[0] >= 0.1


def test_cli_iterative_allocation(tmp_path) -> None:
    """--allocate iterative on LeNet-300-100: the target met, the steps recorded, predicted = measured; each
    step's trials measured by 2 processes give the same steps and counts as one process."""
    reports = []
    for jobs in ("1", "2"):
        report = tmp_path / f"r{jobs}.json"
        r = cli("prune", str(FASHION / "lenet300.onnx"), "-o", str(tmp_path / f"o{jobs}.onnx"), "--target-macs",
                "0.5", "--allocate", "iterative", "--calib", str(FASHION / "calib256.npz"), "--jobs", jobs,
                "--report", str(report))
        assert r.returncode == 0, r.stderr
        reports.append(json.loads(report.read_text()))
    rep = reports[0]
    a = rep["allocation"]
    assert a["allocation"] == "iterative" and a["steps"] and abs(a["predicted_loss"] - a["measured_loss"]) < 1e-6
    assert 0.48 <= rep["total"]["macs_removed"] <= 0.56
    assert reports[1]["allocation"]["steps"] == a["steps"] and reports[1]["allocation"]["groups"] == a["groups"]


def test_curves_that_lie_lose_to_the_measured_comparison(monkeypatch) -> None:
    """Curves claiming one group is free (and the rest costly) put the whole cut on it; measured on the same
    inputs, one ratio for all or the global threshold does better, and that is what is kept and reported."""
    import onnxprune.search.allocation as alloc
    from onnxprune.api import sensitivity_allocation
    from onnxprune.rewrite.merging import MergeOptions
    from onnxprune.validation.validate import Inputs

    honest = alloc.curves_from_sensitivity

    def lying(report):
        curves = honest(report)
        first = next(iter(curves))
        return {g: Curve(c.counts, c.losses * (0.0 if g == first else 100.0)) for g, c in curves.items()}

    monkeypatch.setattr(alloc, "curves_from_sensitivity", lying)
    sel, record, loss = sensitivity_allocation(str(FASHION / "vgg_bnkeep.onnx"), Selection(target_macs=0.3), "l1",
                                               Inputs(data=str(FASHION / "calib256.npz"), batch=64),
                                               MergeOptions(compensate="none"), ratios=(0.5, 0.9))
    compared = record["compared"]
    assert compared["kept"] in ("uniform", "global")
    assert compared["losses"][compared["kept"]] < compared["losses"]["sensitivity"]
    # no curve predicts the kept baseline's groups: null, not NaN (the report stays strict JSON)
    assert all(g["predicted_loss"] is None for g in record["groups"].values())
    json.dumps(record, allow_nan=False)
