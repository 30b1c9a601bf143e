"""Score every prunable group with one criterion; aggregate over the group's members."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..analysis.analyze import Analysis
from ..analysis.builder import CONSUMER, PRODUCER
from ..analysis.groups import Group
from ..errors import OnnxPruneError
from ..calibration.data import Calibration
from ..loading import Prepared
from .activation import consumer_input_means, weighted_input_scores
from .fpgm import fpgm
from .norms import l1, l2
from .slices import channel_matrix

KERNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"l1": l1, "l2": l2, "fpgm": fpgm}
CRITERIA = ("l1", "l2", "fpgm", "bn", "random", "activation", "wanda", "flap", "lasso")
DATA_CRITERIA = ("activation", "wanda", "flap", "lasso")  # need calibration inputs
COUNTED_BY = {"lasso": "l1"}  # chooses channels itself; how many per group comes from this ranking
AGGREGATE = {"mean": np.mean, "sum": np.sum, "max": np.max}
BN_FALLBACK = "l1"


@dataclass
class GroupScores:
    """Per-channel importance of one group (higher = keep), and what produced it."""

    scores: np.ndarray
    criterion: str
    note: str | None = None


def _normalised(s: np.ndarray) -> np.ndarray:
    """Scale to mean 1 so members (and, for global ranking, groups) of different scale compare."""
    m = float(np.mean(s))
    return s / m if m > 0 else s


def _weight_scores(tensors, analysis: Analysis, g: Group, kernel, consumers: bool, agg, norm: bool):
    """Criterion over the producers' output filters (and consumers' input slices if asked)."""
    roles = (PRODUCER, CONSUMER) if consumers else (PRODUCER,)
    per_member = []
    for m in g.members:
        if m.kind == "weight" and m.role in roles:
            s = kernel(channel_matrix(analysis, tensors[m.tensor].values, m, g))
            per_member.append(_normalised(s) if norm else s)
    if not per_member:
        raise OnnxPruneError(f"group '{g.id}' has no weights to score")
    return agg(np.stack(per_member), axis=0)


def _bn_scores(tensors, analysis: Analysis, g: Group, agg) -> np.ndarray | None:
    """|gamma| of the group's BatchNormalization nodes (Network Slimming), None if there are none."""
    gammas = [np.abs(channel_matrix(analysis, tensors[m.tensor].values, m, g)).mean(axis=1)
              for m in g.members if m.op_type == "BatchNormalization" and m.kind == "scale"]
    return agg(np.stack(gammas), axis=0) if gammas else None


def score_groups(prep: Prepared, analysis: Analysis, criterion: str = "l1", include_consumers: bool = False,
                 aggregate: str = "mean", normalize: bool = True, seed: int = 0,
                 calibration: Calibration | None = None, provider: str = "auto") -> dict[str, GroupScores]:
    """Scores for every prunable group (data-driven criteria read `calibration` in onnxruntime)."""
    if criterion not in CRITERIA:
        raise OnnxPruneError(f"unknown criterion '{criterion}' (choose from {', '.join(CRITERIA)})")
    if aggregate not in AGGREGATE:
        raise OnnxPruneError(f"unknown aggregation '{aggregate}' (choose from {', '.join(AGGREGATE)})")
    agg = AGGREGATE[aggregate]
    if criterion in COUNTED_BY:  # the scores only set counts (global ranking, targets); see rewrite/reconstruction
        scores = score_groups(prep, analysis, COUNTED_BY[criterion], include_consumers, aggregate, normalize, seed)
        return {gid: GroupScores(s.scores, criterion, s.note) for gid, s in scores.items()}
    if criterion in DATA_CRITERIA:
        if calibration is None:
            raise OnnxPruneError(f"--criterion {criterion} needs calibration inputs (--calib FILE.npz or DIR)")
        means = (consumer_input_means(prep, analysis, calibration, provider) if criterion == "activation" else
                 weighted_input_scores(prep, analysis, calibration, criterion, provider))
        return {gid: GroupScores(agg(np.stack([_normalised(s) if normalize else s for s in per]), axis=0), criterion)
                for gid, per in means.items()}
    tensors = prep.graph.tensors()
    out = {}
    for g in analysis.prunable:
        if criterion == "random":
            rng = np.random.default_rng([seed, g.index])
            out[g.id] = GroupScores(rng.random(g.channels), "random")
            continue
        if criterion == "bn":
            s = _bn_scores(tensors, analysis, g, agg)
            if s is not None:
                out[g.id] = GroupScores(s, "bn")
                continue
            note = f"no BatchNormalization scale (folded into the conv by the exporter?): ranked by {BN_FALLBACK}"
            s = _weight_scores(tensors, analysis, g, KERNELS[BN_FALLBACK], include_consumers, agg, normalize)
            out[g.id] = GroupScores(s, BN_FALLBACK, note)
            continue
        s = _weight_scores(tensors, analysis, g, KERNELS[criterion], include_consumers, agg, normalize)
        out[g.id] = GroupScores(s, criterion)
    return out
