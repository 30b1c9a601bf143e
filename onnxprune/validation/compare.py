"""Agreement between two models' outputs, accumulated batch by batch: plain figures, task figures, blocks."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .tasks import METRICS, Classify, Dense, Embedding, Sequence, TaskOptions, pick


def is_classifier(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Classifier-shaped: floating [batch, classes] with at least two classes."""
    return np.issubdtype(dtype, np.floating) and len(shape) == 2 and shape[1] >= 2


@dataclass
class Figures:
    """Running sums for max |a - b|, the relative L2 error and the cosine of two tensors."""

    max_abs: float = 0.0
    diff_sq: float = 0.0
    ref_sq: float = 0.0
    got_sq: float = 0.0
    dot: float = 0.0
    finite: bool = True

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Fold in one batch of the original's (ref) and the pruned model's (got) values."""
        a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        self.finite &= bool(np.isfinite(b).all() or not np.isfinite(a).all())
        d = a - b
        if d.size:
            self.max_abs = max(self.max_abs, float(np.nanmax(np.abs(d))))
        self.diff_sq += float(d @ d)
        self.ref_sq += float(a @ a)
        self.got_sq += float(b @ b)
        self.dot += float(a @ b)

    @property
    def rel_l2(self) -> float:
        """||a - b|| / ||a|| over everything seen (0 when both are zero)."""
        if self.ref_sq == 0:
            return 0.0 if self.diff_sq == 0 else math.inf
        return math.sqrt(self.diff_sq / self.ref_sq)

    @property
    def cosine(self) -> float:
        """Cosine similarity of the flattened values (1 when both are zero)."""
        if self.ref_sq == 0 or self.got_sq == 0:
            return 1.0 if self.ref_sq == self.got_sq else 0.0
        return self.dot / math.sqrt(self.ref_sq * self.got_sq)

    def to_json(self) -> dict:
        return {"max_abs": self.max_abs, "rel_l2": self.rel_l2, "cosine": self.cosine, "finite": self.finite}


@dataclass
class OutputAgreement:
    """One output: plain figures, the task's figures (picked on the first batch) and per channel block."""

    options: TaskOptions = field(default_factory=TaskOptions)
    blocks: tuple[int, ...] = ()  # sizes along axis 1 (--blocks)
    name: str = ""  # the output's name (auto reads embeddings from it too)
    figures: Figures = field(default_factory=Figures)
    task: str | None = None
    why: str = ""
    shape: tuple[int, ...] = ()  # of the first batch
    metric: Classify | Embedding | Dense | Sequence | None = None
    block_figures: list[Figures] = field(default_factory=list)

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Fold in one batch of the original's (ref) and the pruned model's (got) output."""
        if ref.shape != got.shape:
            raise ValueError(f"output shapes differ: {ref.shape} vs {got.shape}")
        if self.task is None:
            self._start(ref)
        self.figures.add(ref, got)
        if self.metric is not None:
            self.metric.add(ref, got, self.options)
        if self.blocks:
            ends = np.cumsum(self.blocks)
            for f, lo, hi in zip(self.block_figures, ends - self.blocks, ends):
                f.add(ref[:, lo:hi], got[:, lo:hi])

    def _start(self, ref: np.ndarray) -> None:
        """Pick the task from the first batch; check the blocks against the channel axis."""
        self.task, self.why = pick(ref, self.options.task, self.name)
        self.shape = tuple(ref.shape)
        self.metric = METRICS[self.task]() if self.task in METRICS else None
        if self.blocks:
            if ref.ndim < 2 or sum(self.blocks) != ref.shape[1]:
                raise ValueError(f"--blocks {','.join(map(str, self.blocks))} add up to {sum(self.blocks)}, "
                                 f"but axis 1 of the output {list(ref.shape)} has "
                                 f"{ref.shape[1] if ref.ndim > 1 else 'no'} channels")
            self.block_figures = [Figures() for _ in self.blocks]

    def to_json(self) -> dict:
        out = {**self.figures.to_json(), "task": self.task or "none", "task_why": self.why}
        if self.metric is not None:
            out.update(self.metric.to_json())
        if self.blocks:
            ends = np.cumsum(self.blocks)
            out["blocks"] = {f"{hi - n}:{hi}": {k: v for k, v in f.to_json().items() if k != "finite"}
                             for f, n, hi in zip(self.block_figures, self.blocks, ends.tolist())}
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
