"""Accuracy of a trained transformer with 25 / 50 % of its heads, or of its FFN units, removed, per criterion.

    python tools/transformer_table.py [--model models/transformers_trained/vit_fashion.onnx]
        [--calib ...fashion_calib256.npz] [--data ...fashion_test500.npz] [--labels ...labels.npy]
        [--out docs/transformers.md]

Every row removes the same number of units from every layer (so the MACs match across criteria):
magnitude (l2 of the unit's weights), wanda and flap scores choose which; flap folds the removed
units' calibration means into the output projection's bias (FLAP); the last column re-fits the
output projections by least squares on the calibration set. Accuracy is on the shipped test images.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.analysis.analyze import build_analysis
from onnxprune.analysis.cost import count_model_cost
from onnxprune.api import apply_plan
from onnxprune.calibration.data import Calibration
from onnxprune.loading import prepare
from onnxprune.plan import make_plan
from onnxprune.scoring import score_groups

TRAINED = Path("models/transformers_trained")
# (column title, criterion that chooses, compensation)
METHODS = [("random", "random", "none"), ("magnitude (l2)", "l2", "none"), ("wanda", "wanda", "none"), ("flap + bias", "flap", "mean"),
           ("flap + reconstruction", "flap", "reconstruct")]
SHARES = (0.25, 0.5)


def accuracy(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in onnxruntime (CPU)."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    return float((logits.argmax(axis=1) == labels).mean())


def unit_groups(analysis, kind: str) -> list:
    """The head groups (the smallest prunable groups), the FFN groups (the largest), or both."""
    sizes = sorted({g.channels for g in analysis.prunable})
    want = {"heads": sizes[:1], "FFN units": sizes[-1:]}.get(kind, [sizes[0], sizes[-1]])
    return [g for g in analysis.prunable if g.channels in want]


def plan_for(model: onnx.ModelProto, criterion: str, kind: str, share: float, cal: Calibration) -> dict:
    """Remove the lowest-scored `share` of every head (or FFN) group by this criterion."""
    prep = prepare(model)
    analysis = build_analysis(prep)
    groups = unit_groups(analysis, kind)
    scores = score_groups(prep, analysis, criterion, calibration=cal)
    removed = {g.id: sorted(np.argsort(scores[g.id].scores, kind="stable")[:round(g.channels * share)].tolist())
               for g in groups}
    return make_plan(analysis, removed, criterion=criterion)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(TRAINED / "vit_fashion.onnx"))
    ap.add_argument("--calib", default=str(TRAINED / "fashion_calib256.npz"))
    ap.add_argument("--data", default=str(TRAINED / "fashion_test500.npz"))
    ap.add_argument("--labels", default=str(TRAINED / "fashion_test500_labels.npy"))
    ap.add_argument("--out", default="docs/transformers.md")
    args = ap.parse_args()
    model = onnx.load(args.model)
    x = next(iter(np.load(args.data).values()))
    labels = np.load(args.labels)
    cal = Calibration(args.calib)
    base = accuracy(model, x, labels)
    macs0 = count_model_cost(model).macs
    rows, start = [], time.time()
    for kind in ("heads", "FFN units", "heads and FFN units"):
        for share in SHARES:
            cells, macs = [], None
            for _, criterion, compensate in METHODS:
                plan = plan_for(model, criterion, kind, share, cal)
                pruned = apply_plan(model, plan, calibration=cal if compensate != "none" else None,
                                    compensate=compensate)
                macs = count_model_cost(pruned).macs
                cells.append(f"{accuracy(pruned, x, labels):.1%}")
                print(f"{kind} {share:.0%} {criterion}/{compensate}: {cells[-1]}", flush=True)
            rows.append(f"| {share:.0%} of {kind} | {1 - macs / macs0:.1%} | " + " | ".join(cells) + " |")
    header = "| removed | MACs removed | " + " | ".join(m[0] for m in METHODS) + " |"
    text = (f"# Transformers: heads and FFN units removed without fine-tuning\n\n"
            f"Model `{args.model}` ({macs0:,} MACs), accuracy {base:.1%} on {len(x)} test images "
            f"(`{args.data}`); calibration: {cal.path if hasattr(cal, 'path') else args.calib}.\n"
            f"Made by `python tools/transformer_table.py` ({time.time() - start:.0f} s on this machine).\n\n"
            "Each row removes the same number of units from every layer, so the MACs are the same across a row. "
            f"With {len(x)} images one standard error is about {np.sqrt(base * (1 - base) / len(x)):.1%}. "
            "random: seeded; magnitude: l2 norm of the unit's weights; wanda: input norm x |weight| of the consumers "
            "(Sun et al. 2023); flap + bias: input fluctuation x weight^2, the removed units' means folded into "
            "the output projection's bias (An et al. 2024); flap + reconstruction: the same units, the output "
            "projections re-fitted by least squares on the calibration set.\n\n"
            f"{header}\n|---|---|{'---|' * len(METHODS)}\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
