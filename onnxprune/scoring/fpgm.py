"""FPGM: filter pruning via geometric median (He et al., CVPR 2019).

A filter's score is the sum of its Euclidean distances to the other filters of the layer; the
filters nearest the geometric median (smallest sum) are the most replaceable and go first.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

CHUNK_BYTES = 64 * 2**20  # cap on one block of the distance matrix


def fpgm(rows: np.ndarray) -> np.ndarray:
    """Sum of distances from each row to all rows, computed in blocks of bounded memory."""
    n = len(rows)
    step = max(1, CHUNK_BYTES // (8 * max(n, 1)))
    out = np.empty(n, np.float64)
    for start in range(0, n, step):
        out[start:start + step] = cdist(rows[start:start + step], rows).sum(axis=1)
    return out
