"""Coverage table: for each test model, groups found, prunable, prunable MAC share, what froze the rest.

    python tools/coverage.py > docs/coverage.md

Reads models/torchvision/*.onnx, models/yolo/*.onnx, models/keras/*.onnx, models/transformers/*.onnx,
models/transformers_trained/*.onnx and models/third_party/rapidocr/*.onnx (tools/fetch_models.py).
Transformers are counted at their default sizes (a dynamic sequence dim: 128).
"""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune import analyze  # noqa: E402
from onnxprune.analysis.estimates import prunable_macs_share  # noqa: E402

OCR_SHAPES = {"cls": (1, 3, 48, 192), "det": (1, 3, 128, 128), "rec": (1, 3, 48, 320)}


def _kind(reason: str) -> str:
    """A freeze reason without node names, so equal causes are counted together."""
    reason = re.sub(r"'[^']*'", "", reason)
    reason = re.sub(r"\(.*?\)", "", reason)
    return re.sub(r"\s+", " ", reason).strip(" :;")


def row(path: Path, shapes=None) -> str:
    a = analyze(path, shapes)
    causes = collections.Counter(_kind(r) for g in a.groups if not g.prunable for r in g.reasons)
    frozen = "; ".join(f"{c} ({n})" for c, n in causes.most_common(3)) or "-"
    return (f"| {path.name} | {len(a.groups)} | {len(a.prunable)} | {prunable_macs_share(a):.0%} | {frozen} |")


def main() -> None:
    print("| model | groups | prunable | prunable MACs | frozen by (groups) |")
    print("|---|---:|---:|---:|---|")
    for folder in ("torchvision", "yolo", "keras", "transformers", "transformers_trained"):
        for path in sorted((ROOT / "models" / folder).glob("*.onnx")):
            print(row(path))
    for path in sorted((ROOT / "models" / "third_party" / "rapidocr").glob("*.onnx")):
        kind = next(k for k in OCR_SHAPES if f"_{k}_" in path.name)
        print(row(path, {"x": OCR_SHAPES[kind]}))


if __name__ == "__main__":
    main()
