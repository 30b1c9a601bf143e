"""Prune vs neuron merging on the Fashion-MNIST models, no fine-tuning: test accuracy per ratio.

    python tools/merge_table.py [--models models/fashion] [--out docs/neuron_merging.md]

Models come from tools/train_fashion.py; the test set from the Debian package dataset-fashion-mnist.
Every variant goes through `onnxprune.prune` (criterion l1, the same ratio on every prunable group).
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxprune
from fashion_data import load_idx

RATIOS = (0.5, 0.6, 0.7, 0.8)
PAPER = {"baseline": 89.80, "prune": (88.40, 85.17, 71.26, 66.76), "merge": (88.69, 86.92, 82.75, 80.02)}
VARIANTS = {
    "prune": {"compensate": "none"},
    "merge": {"compensate": "merge"},
    "merge, approximate": {"compensate": "merge", "merge_approximate": True},
    "merge, approximate, t=0.45": {"compensate": "merge", "merge_approximate": True, "merge_threshold": 0.45},
    "merge, approximate, sequential": {"compensate": "merge", "merge_approximate": True,
                                       "merge_order": "sequential"},
    "merge, approximate, sequential, t=0.45": {"compensate": "merge", "merge_approximate": True,
                                               "merge_order": "sequential", "merge_threshold": 0.45},
    "merge, approximate, paper BN factor": {"compensate": "merge", "merge_approximate": True, "merge_mode": "paper"},
    "fold only": {"compensate": "fold"},
}
LINEAR = ("prune", "merge", "merge, approximate", "merge, approximate, t=0.45", "merge, approximate, sequential",
          "merge, approximate, sequential, t=0.45")
# The approximate merge's defaults are checked against these alternatives in the closing section.
CHALLENGERS = ("prune", "merge", "merge, approximate, t=0.45", "merge, approximate, sequential")


def test_set() -> tuple[np.ndarray, np.ndarray]:
    return load_idx("test")


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    sess = ort.InferenceSession(str(data) if isinstance(data, Path) else data, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = np.concatenate([sess.run(None, {name: x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])
    return float((preds == y).mean()) * 100


def table(path: Path, names: tuple[str, ...], x, y, scores: dict) -> list[str]:
    base = accuracy(path, x, y)
    head = "| variant | " + " | ".join(f"{r:.0%}" for r in RATIOS) + " |"
    rows = [f"`{path.name}`: baseline {base:.2f}%", "", head,
            "|---|" + "---:|" * len(RATIOS)]
    for label in names:
        options = VARIANTS[label]
        cells = []
        for r in RATIOS:
            model, _, report = onnxprune.prune(path, ratio=r, criterion="l1", **options)
            c = report["total"].get("compensation", {})
            acc = accuracy(model, x, y)
            extra = f" ({c['merged']}m/{c['folded']}f, {c['exact']} exact)" if options["compensate"] != "none" else ""
            cells.append(f"{acc:.2f}{extra}")
            scores.setdefault(label, []).append(acc)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def wins(ours: list[float], theirs: list[float]) -> str:
    """'higher in W of N cells, lower in L' for the default against another variant (same cells in order)."""
    up = sum(a > b for a, b in zip(ours, theirs))
    down = sum(a < b for a, b in zip(ours, theirs))
    mean = float(np.mean(np.subtract(ours, theirs)))
    return f"higher in {up} of {len(ours)} cells, lower in {down}; mean difference {mean:+.2f} points"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="models/fashion")
    ap.add_argument("--out", default="docs/neuron_merging.md")
    args = ap.parse_args()
    x, y = test_set()
    models = Path(args.models)
    lines = ["# Neuron merging: prune vs merge without fine-tuning", "",
             "Command: `python tools/merge_table.py` (models from `tools/train_fashion.py`; Fashion-MNIST test set,",
             f"10,000 images; onnxruntime {ort.__version__} CPU; {platform.machine()}). Test accuracy in %;",
             "`(Nm/Nf, E exact)`: channels merged / folded as constants, summed over groups, and how many of",
             "them the report calls exact. The same ratio is removed",
             "from every prunable group, ranked by l1; nothing is fine-tuned.", ""]
    lines += ["Variants: `merge` is the default (`--compensate merge`, threshold t = 0.3, original order), which",
              "makes no merge whose path cannot carry it exactly (an offset through Relu, a zero-padded border,",
              "a non-homogeneous activation); `approximate` is `--merge-approximate`, which makes them as the",
              "authors' method does; `sequential` is `--merge-order sequential`; `t=0.45` is `--merge-threshold 0.45`.",
              ""]
    scores: dict[str, list[float]] = {}
    lines += ["## LeNet-300-100 (the paper's Table 1 setting)", ""]
    lines += table(models / "lenet300.onnx", LINEAR, x, y, scores)
    lines += ["| paper: prune | " + " | ".join(f"{v:.2f}" for v in PAPER["prune"]) + " |",
              "| paper: merge | " + " | ".join(f"{v:.2f}" for v in PAPER["merge"]) + " |", "",
              f"The paper's baseline is {PAPER['baseline']:.2f}%. Compare prune and merge on the same model: how",
              "much merging gains varies with the training run.", ""]
    lines += ["## VGG-style conv net, BatchNormalization kept", ""]
    lines += table(models / "vgg_bnkeep.onnx", tuple(VARIANTS), x, y, scores)
    lines += ["", "## The same net, BatchNormalization folded into the convs (PyTorch's default export)", ""]
    lines += table(models / "vgg_bnfold.onnx", LINEAR, x, y, scores)
    lines += ["", "## The defaults against the alternatives", "",
              "Cells (model x ratio, all three models) where `merge, approximate` (t = 0.3, original order) scored",
              "higher / lower:", ""]
    lines += [f"- vs {name}: {wins(scores['merge, approximate'], scores[name])}" for name in CHALLENGERS]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
