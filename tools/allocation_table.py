"""Accuracy at 1.5x, 2x and 3x fewer MACs for uniform, global-score and sensitivity allocation, each with
plain removal, merging and reconstruction, on the Fashion-MNIST models trained here.

    python tools/allocation_table.py [--out docs/allocation.md] [--models vgg_bnkeep,lenet300]

uniform: the same ratio in every group, searched until the MAC target is met; global: one l1 threshold
over all groups (`--global --target-macs`); curves alone: each group's curve measured alone on the 256
calibration images (top-1 agreement with the original), the target met with the least predicted loss;
sensitivity: what `--allocate sensitivity` writes (the curves' allocation, uniform and global measured
on the calibration images at the same target, the least measured loss kept: the cell names which);
iterative: `--allocate iterative` (the removal grown one measured step of one group at a time, each
step measured with all earlier ones removed). Accuracy on the 500 shipped test images.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.analysis.cost import count_model_cost
from onnxprune.analysis.estimates import removal_estimator
from onnxprune.api import run_pipeline, sensitivity_allocation
from onnxprune.search.allocation import least_measured
from onnxprune.calibration import Calibration
from onnxprune.loading import prepare
from onnxprune.rewrite.merging import MergeOptions
from onnxprune.selection import Selection
from onnxprune.selection.allocate import allocate, cost_measure, curves_from_sensitivity
from onnxprune.search.sensitivity import measure_sensitivity
from onnxprune.validation.validate import Inputs

FASHION = Path("models/fashion")
TARGETS = {"1.1x": 1 / 11, "1.25x": 0.2, "1.5x": 1 / 3, "2x": 0.5, "3x": 2 / 3}
COMPENSATIONS = ("none", "merge", "reconstruct")


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    return float((logits.argmax(1) == y).mean())


def uniform_ratio(path: Path, target: float) -> float:
    """The smallest per-group ratio whose estimated MAC reduction meets the target (bisection)."""
    from onnxprune.analysis.analyze import build_analysis
    from onnxprune.scoring import score_groups
    from onnxprune.selection import select

    prep = prepare(str(path))
    analysis = build_analysis(prep)
    scores, est = score_groups(prep, analysis, "l1"), removal_estimator(analysis)
    lo, hi = 0.0, 0.99
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if est(select(analysis, scores, Selection(ratio=mid)))[0] < target else (lo, mid)
    return hi


def model_table(name: str, path: Path, calib: str, x: np.ndarray, y: np.ndarray, what: str, args) -> list[str]:
    """The rows of one model: every target x allocation x compensation, accuracy on (x, y)."""
    cal, inputs = Calibration(calib), Inputs(data=calib, batch=64)
    base = accuracy(onnx.load(path), x, y)
    lines = [f"\n## {name} ({count_model_cost(str(path)).macs:,} MACs, {base:.1%} on {what})\n",
             "| MACs | allocation | " + " | ".join(COMPENSATIONS) + " |", "|---|---|" + "---|" * 3]
    curves = {}
    for comp in COMPENSATIONS:  # one measurement of every group's curve per compensation, reused for all targets
        report, measurer = measure_sensitivity(str(path), (0.1, 0.3, 0.5, 0.7, 0.9), "l1", inputs,
                                               merge=MergeOptions(compensate=comp), calibration=cal)
        curves[comp] = (curves_from_sensitivity(report), measurer)
    for label in args.targets.split(","):
        target = TARGETS[label]
        rows = {"uniform": [], "global": [], "curves alone": [], "sensitivity": [], "iterative": []}
        for comp in COMPENSATIONS:
            merge = MergeOptions(compensate=comp)
            c, measurer = curves[comp]
            sel = Selection(target_macs=target)
            measure, _ = cost_measure(sel, measurer.scores, removal_estimator(measurer.analysis))
            counts = allocate(measurer.analysis, c, sel, measure, target)
            kept, _, compared = least_measured(measurer, sel, measure, target, "sensitivity", counts,
                                               {"total": 0.0}, print)
            sels = {"uniform": Selection(ratio=uniform_ratio(path, target)),
                    "global": Selection(target_macs=target, global_rank=True),
                    "curves alone": Selection(target_macs=target, counts=counts),
                    "sensitivity": Selection(target_macs=target, counts=kept)}
            if args.no_iterative:
                rows["iterative"].append("not run")
            elif comp != "reconstruct" or args.iterative_reconstruct:  # a re-fit per measured step is slow
                sels["iterative"], _, _ = sensitivity_allocation(str(path), Selection(target_macs=target), "l1",
                                                                 inputs, merge, cal, method="iterative")
            else:
                rows["iterative"].append("not run")
            for alloc, sel in sels.items():
                r = run_pipeline(prepare(str(path)), None, None, "l1", sel, merge=merge,
                                 calibration=cal if comp == "reconstruct" else None)
                cut = 1 - r.after.macs / r.analysis.cost.macs
                note = f", {compared['kept']}" if alloc == "sensitivity" else ""
                rows[alloc].append(f"{accuracy(r.model, x, y):.1%} ({cut:.0%}{note})")
                print(name, label, comp, alloc, rows[alloc][-1], flush=True)
        lines += [f"| {label} | {alloc} | " + " | ".join(cells) + " |" for alloc, cells in rows.items()]
    return lines


def ppocr_cls(tmp: Path) -> tuple[Path, str, np.ndarray, np.ndarray]:
    """PP-OCR's text direction classifier, 256 synthetic calibration lines (seed 0) and 500 held out (seed 1,
    every other one turned 180 degrees: label 1)."""
    from reconstruction_table import text_images

    path = Path("models/third_party/rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    name = onnx.load(path).graph.input[0].name
    np.savez(tmp / "cls_calib.npz", **{name: text_images("cls", 256, 0)})
    x = text_images("cls", 500, 1)
    return path, str(tmp / "cls_calib.npz"), x, np.arange(len(x)) % 2


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/allocation.md")
    ap.add_argument("--models", default="vgg_bnkeep,lenet300", help="Fashion models, and ppocr_cls")
    ap.add_argument("--targets", default="1.5x,2x,3x", help="MAC reductions, of 1.1x,1.25x,1.5x,2x,3x")
    ap.add_argument("--no-iterative", action="store_true", help="leave --allocate iterative out (slow on deep nets)")
    ap.add_argument("--iterative-reconstruct", action="store_true",
                    help="also run --allocate iterative with reconstruction (a re-fit per measured step: slow)")
    args = ap.parse_args()
    x, y = np.load(FASHION / "test500.npz")["image"], np.load(FASHION / "test500_labels.npy")
    lines, start = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "ppocr_cls":
                path, calib, xc, yc = ppocr_cls(Path(tmp))
                lines += model_table(name, path, calib, xc, yc, "500 synthetic text lines (half turned 180 "
                                     "degrees), calibrated on 256 others", args)
            else:
                lines += model_table(name, FASHION / f"{name}.onnx", str(FASHION / "calib256.npz"), x, y,
                                     "the 500 test images", args)
    text = ("# Allocation: uniform, global score and measured sensitivity\n\n"
            f"Made by `python tools/allocation_table.py --models {args.models} --targets {args.targets}"
            f"{' --no-iterative' if args.no_iterative else ''}"
            f"{' --iterative-reconstruct' if args.iterative_reconstruct else ''}` "
            f"({time.time() - start:.0f} s on 2 cores). Criterion l1 throughout; each cell is the accuracy on "
            "the evaluation set, with the MAC reduction reached in brackets (and, for sensitivity, which "
            "allocation the measured comparison kept). Columns: plain removal, neuron merging (exact merges "
            "and folds), reconstruction (least-squares re-fit on the calibration set). One standard error on "
            "500 samples is about 1.2 points at 90 %.\n" + "\n".join(lines) + "\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
