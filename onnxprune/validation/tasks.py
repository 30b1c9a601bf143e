"""Task-aware agreement of one output: top-k for classifiers, neighbours for embeddings, mask IoU for dense
maps, CTC text for sequences.

`auto` picks per output from the first batch of the original's output and the output's name:
[N, D] whose rows have unit L2 norm, or named like an embedding (embed, hidden, feature, pool, vector,
encod) -> embedding; other [N, C] (or [N, C, 1, 1]) -> classify; [N, C, H, W] with H, W > 1 -> dense;
[N, T, C] whose last axis is a probability distribution (softmax, or log-softmax) -> sequence; anything
else: plain figures only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import OnnxPruneError

TASKS = ("auto", "classify", "embedding", "dense", "sequence")
# with no gate set, a task figure below its bar gets a warning (as a cosine below WARN_COSINE does)
WARN_BELOW = {"top1_agreement": 0.9, "neighbour_agreement": 0.9, "iou": 0.5, "sequence_agreement": 0.5}
LABELS = {"top1_agreement": "top-1 agreement", "neighbour_agreement": "neighbour agreement", "iou": "mask IoU",
          "sequence_agreement": "sequence agreement"}
RESULTS = {"top1_agreement": "predicted classes", "neighbour_agreement": "nearest neighbours", "iou": "masks",
           "sequence_agreement": "decoded sequences"}
SHAPES = {"classify": "[N, C] (or [N, C, 1, 1])", "embedding": "[N, D]", "dense": "[N, C, H, W] with H, W > 1",
          "sequence": "[N, T, C]"}
EMBEDDING_NAMES = ("embed", "hidden", "feature", "pool", "vector", "encod")
NEIGHBOURS = 10


@dataclass(frozen=True)
class TaskOptions:
    """What `--task`, `--iou-threshold` and `--blocks` ask for."""

    task: str = "auto"
    iou_threshold: float = 0.5  # a dense map's mask: probability > this (after a sigmoid for logits)
    blocks: dict[str, tuple[int, ...]] = field(default_factory=dict)  # output -> sizes along axis 1
    blank: int = 0  # the CTC blank class
    neighbours: int = NEIGHBOURS  # embedding: how many nearest neighbours of each sample are compared

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise OnnxPruneError(f"--task {self.task!r}: expected one of {', '.join(TASKS)}")
        if self.neighbours < 1:
            raise OnnxPruneError(f"--neighbours {self.neighbours}: expected at least 1")
        if not 0 < self.iou_threshold < 1:
            raise OnnxPruneError(f"--iou-threshold {self.iou_threshold}: expected a probability between 0 and 1")
        for name, sizes in self.blocks.items():
            if not sizes or min(sizes) < 1:
                raise OnnxPruneError(f"--blocks {name}: block sizes must be positive")


def parse_blocks(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """`output0:4,10` -> {"output0": (4, 10)}: the channel axis (axis 1) cut into blocks of these sizes."""
    blocks = {}
    for item in items or []:
        name, _, sizes = item.rpartition(":")
        try:
            blocks[name] = tuple(int(s) for s in sizes.split(","))
        except ValueError:
            raise OnnxPruneError(f"--blocks {item!r}: expected OUTPUT:SIZE,SIZE..., e.g. output0:4,80") from None
        if not name:
            raise OnnxPruneError(f"--blocks {item!r}: missing the output name")
    return blocks


def fits(task: str, shape: tuple[int, ...]) -> bool:
    """Whether an output of this shape can be read as `task`."""
    if task == "classify":
        return len(shape) >= 2 and shape[1] >= 2 and all(d == 1 for d in shape[2:])
    if task == "embedding":
        return len(shape) == 2 and shape[1] >= 2
    if task == "dense":
        return len(shape) == 4 and shape[2] > 1 and shape[3] > 1
    if task == "sequence":
        return len(shape) == 3 and shape[2] >= 2
    return False


def is_distribution(ref: np.ndarray, axis: int = -1) -> bool:
    """Probabilities (>= 0, summing to 1) or log-probabilities along `axis`."""
    x = ref.astype(np.float64)
    if not x.size or not np.isfinite(x).all():
        return False
    if x.min() >= 0:
        return bool(np.abs(x.sum(axis) - 1).max() < 1e-3)
    if x.max() <= 1e-6:
        return bool(np.abs(np.log(np.exp(x).sum(axis))).max() < 1e-3)
    return False


def unit_rows(ref: np.ndarray) -> bool:
    """Every row of a 2-D output has L2 norm 1 (an L2-normalised embedding)."""
    x = ref.astype(np.float64)
    return bool(x.size and np.isfinite(x).all() and np.abs(np.linalg.norm(x, axis=1) - 1).max() < 1e-3)


def pick(ref: np.ndarray, asked: str, name: str = "") -> tuple[str, str]:
    """(task, why) for this output: the one asked for if it fits, else auto's choice ("none": plain only)."""
    shape = tuple(ref.shape)
    if not np.issubdtype(ref.dtype, np.floating):
        return "none", f"a {ref.dtype} output"
    if asked != "auto" and fits(asked, shape):
        return asked, f"--task {asked}"
    why = "auto" if asked == "auto" else f"auto (--task {asked} reads {SHAPES[asked]})"
    dims = "x".join(map(str, shape))
    if fits("embedding", shape):
        if unit_rows(ref):
            return "embedding", f"{why}: the rows of {dims} have unit L2 norm, an embedding"
        hint = next((w for w in EMBEDDING_NAMES if w in name.lower()), None)
        if hint:
            return "embedding", f"{why}: {dims} is named '{name}', an embedding"
    if fits("classify", shape):
        return "classify", f"{why}: {dims} is [N, classes]"
    if fits("dense", shape):
        return "dense", f"{why}: {dims} is a [N, C, H, W] map"
    if fits("sequence", shape):
        if is_distribution(ref):
            return "sequence", f"{why}: {dims} is [N, T, classes] with a distribution over the last axis"
        return "none", (f"{why}: {dims} is 3-D but its last axis is not a probability distribution; "
                        "--task sequence reads it as [N, T, classes] anyway")
    return "none", f"{why}: no task reads a {dims} output"


@dataclass
class Classify:
    """Top-1 agreement, and top-5: the original's class among the pruned model's 5 best."""

    rows: int = 0
    top1: int = 0
    top5: int = 0
    classes: int = 0

    def add(self, ref: np.ndarray, got: np.ndarray, options: TaskOptions) -> None:
        """Fold in one batch."""
        a, b = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
        self.classes = a.shape[1]
        want = a.argmax(1)
        self.rows += len(a)
        self.top1 += int((want == b.argmax(1)).sum())
        if self.classes > 5:
            best5 = np.argpartition(-b, 4, axis=1)[:, :5]
            self.top5 += int((best5 == want[:, None]).any(1).sum())

    def to_json(self) -> dict:
        out = {"top1_agreement": self.top1 / max(self.rows, 1)}
        if self.classes > 5:
            out["top5_agreement"] = self.top5 / max(self.rows, 1)
        return out


@dataclass
class Dense:
    """Mask IoU at a threshold, over all channels and samples; argmax agreement per pixel with C > 1."""

    inter: int = 0
    union: int = 0
    positives: int = 0
    pixels: int = 0
    argmax_same: int = 0
    channels: int = 0
    threshold: float = 0.5
    cut: float | None = None  # the threshold on the raw values, set from the first batch
    scale: str = ""

    def add(self, ref: np.ndarray, got: np.ndarray, options: TaskOptions) -> None:
        """Fold in one batch (the first one says whether the values are probabilities or logits)."""
        if self.cut is None:
            t = self.threshold = options.iou_threshold
            probabilities = ref.size and 0 <= float(ref.min()) and float(ref.max()) <= 1
            self.cut = t if probabilities else math.log(t / (1 - t))
            self.scale = "probabilities" if probabilities else "logits (a sigmoid applied)"
        a, b = ref > self.cut, got > self.cut
        self.inter += int((a & b).sum())
        self.union += int((a | b).sum())
        self.positives += int(a.sum())
        self.pixels += a.size
        self.channels = ref.shape[1]
        if self.channels > 1:
            self.argmax_same += int((ref.argmax(1) == got.argmax(1)).sum())

    def to_json(self) -> dict:
        out = {"iou": self.inter / self.union if self.union else 1.0, "iou_threshold": self.threshold,
               "values": self.scale, "mask_share_original": self.positives / max(self.pixels, 1)}
        if self.channels > 1:
            out["pixel_argmax_agreement"] = self.argmax_same / max(self.pixels // self.channels, 1)
        return out


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbour_agreement(a: np.ndarray, b: np.ndarray, k: int, chunk: int = 1024) -> float:
    """Share of each sample's k nearest neighbours by cosine among the others (rows of unit `a`) that are
    among its k nearest in `b` too."""
    n, hits = len(a), 0
    for lo in range(0, n, chunk):
        rows = np.arange(lo, min(lo + chunk, n))
        near = []
        for x in (a, b):
            sim = x[rows] @ x.T
            sim[np.arange(len(rows)), rows] = -np.inf  # a sample is not its own neighbour
            near.append(np.argpartition(-sim, k - 1, axis=1)[:, :k])
        mine = np.zeros((len(rows), n), bool)
        mine[np.arange(len(rows))[:, None], near[0]] = True
        hits += int(mine[np.arange(len(rows))[:, None], near[1]].sum())
    return hits / (n * k)


@dataclass
class Embedding:
    """Cosine of each sample's two embeddings, and neighbour agreement: the share of each sample's k nearest
    neighbours (by cosine, among the other samples) that stay its nearest."""

    ref: list = field(default_factory=list)
    got: list = field(default_factory=list)
    k: int = NEIGHBOURS

    def add(self, ref: np.ndarray, got: np.ndarray, options: TaskOptions) -> None:
        """Fold in one batch (neighbours are over all samples, so the rows are kept)."""
        self.k = options.neighbours
        self.ref.append(ref.reshape(len(ref), -1).astype(np.float32))
        self.got.append(got.reshape(len(got), -1).astype(np.float32))

    def to_json(self) -> dict:
        a, b = unit(np.concatenate(self.ref)), unit(np.concatenate(self.got))
        cos = (a * b).sum(1)
        out = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "samples": len(a)}
        k = min(self.k, len(a) - 1)
        if k >= 1:
            out.update(neighbour_agreement=neighbour_agreement(a, b, k), neighbours=k)
        return out


def ctc_decode(best: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC of [N, T] class ids: repeats merged, then blanks dropped."""
    keep = np.ones(best.shape, bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(int(c) for c in row[k]) for row, k in zip(best, keep)]


@dataclass
class Sequence:
    """Share of samples whose greedy CTC decodings are identical, and per-position argmax agreement."""

    samples: int = 0
    same: int = 0
    positions: int = 0
    position_same: int = 0
    empty_original: int = 0

    def add(self, ref: np.ndarray, got: np.ndarray, options: TaskOptions) -> None:
        """Fold in one batch."""
        a, b = ref.argmax(-1), got.argmax(-1)
        self.positions += a.size
        self.position_same += int((a == b).sum())
        texts = zip(ctc_decode(a, options.blank), ctc_decode(b, options.blank))
        for want, have in texts:
            self.samples += 1
            self.same += want == have
            self.empty_original += not want

    def to_json(self) -> dict:
        return {"sequence_agreement": self.same / max(self.samples, 1),
                "position_agreement": self.position_same / max(self.positions, 1),
                "empty_original": self.empty_original, "sequences": self.samples}


METRICS = {"classify": Classify, "embedding": Embedding, "dense": Dense, "sequence": Sequence}


def task_warnings(name: str, out: dict) -> list[str]:
    """Warnings for one output's task figures: below their bars, or vacuous (nothing to compare)."""
    said = []
    for key, bar in WARN_BELOW.items():
        if key in out and not out[key] >= bar:
            said.append(f"output '{name}' {LABELS[key]} {out[key]:.2%} is below {bar:.0%}: the pruned "
                        f"model's {RESULTS[key]} differ a lot from the original's")
    if out.get("task") == "dense" and out["mask_share_original"] == 0:
        said.append(f"output '{name}': the original's mask is empty on every sample at this threshold, so its "
                    "IoU says nothing (give --data with real inputs, or another --iou-threshold)")
    if out.get("task") == "embedding" and "neighbour_agreement" not in out:
        said.append(f"output '{name}': one sample has no neighbours, so only the cosine compares the embeddings "
                    "(give --data with more samples)")
    if out.get("task") == "sequence" and out["empty_original"] == out["sequences"]:
        said.append(f"output '{name}': the original decodes every sample to an empty sequence, so the "
                    "sequence agreement says nothing (give --data with real inputs)")
    return said
