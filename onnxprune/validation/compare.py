"""Agreement between two models' outputs, accumulated batch by batch."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def is_classifier(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Classifier-shaped: floating [batch, classes] with at least two classes."""
    return np.issubdtype(dtype, np.floating) and len(shape) == 2 and shape[1] >= 2


@dataclass
class OutputAgreement:
    """Running sums for one output: max |a - b|, relative L2 error, cosine, top-1 agreement."""

    max_abs: float = 0.0
    diff_sq: float = 0.0
    ref_sq: float = 0.0
    got_sq: float = 0.0
    dot: float = 0.0
    rows: int = 0
    top1_same: int = 0
    classifier: bool = True
    finite: bool = True

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Fold in one batch of the original's (ref) and the pruned model's (got) output."""
        if ref.shape != got.shape:
            raise ValueError(f"output shapes differ: {ref.shape} vs {got.shape}")
        a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        self.finite &= bool(np.isfinite(b).all() or not np.isfinite(a).all())
        d = a - b
        if d.size:
            self.max_abs = max(self.max_abs, float(np.nanmax(np.abs(d))))
        self.diff_sq += float(d @ d)
        self.ref_sq += float(a @ a)
        self.got_sq += float(b @ b)
        self.dot += float(a @ b)
        self.classifier &= is_classifier(ref.shape, ref.dtype)
        if self.classifier:
            self.rows += ref.shape[0]
            self.top1_same += int((ref.argmax(1) == got.argmax(1)).sum())

    @property
    def rel_l2(self) -> float:
        """||a - b|| / ||a|| over everything seen (0 when both are zero)."""
        if self.ref_sq == 0:
            return 0.0 if self.diff_sq == 0 else math.inf
        return math.sqrt(self.diff_sq / self.ref_sq)

    @property
    def cosine(self) -> float:
        """Cosine similarity of the flattened outputs (1 when both are zero)."""
        if self.ref_sq == 0 or self.got_sq == 0:
            return 1.0 if self.ref_sq == self.got_sq else 0.0
        return self.dot / math.sqrt(self.ref_sq * self.got_sq)

    def to_json(self) -> dict:
        out = {"max_abs": self.max_abs, "rel_l2": self.rel_l2, "cosine": self.cosine, "finite": self.finite}
        if self.classifier and self.rows:
            out["top1_agreement"] = self.top1_same / self.rows
        return out


@dataclass
class Accuracy:
    """Correct top-1 predictions of both models against labels."""

    original: int = 0
    pruned: int = 0
    count: int = 0

    def add(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> None:
        self.original += int((ref.argmax(1) == labels).sum())
        self.pruned += int((got.argmax(1) == labels).sum())
        self.count += len(labels)

    def to_json(self) -> dict:
        a, b = self.original / max(self.count, 1), self.pruned / max(self.count, 1)
        return {"original": a, "pruned": b, "drop_points": (a - b) * 100, "samples": self.count}
