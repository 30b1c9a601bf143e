"""FPGM: filter pruning via geometric median (He et al., CVPR 2019).

A filter's score is the sum of its Euclidean distances to the other filters of the layer; the
filters nearest the geometric median (smallest sum) are the most replaceable and go first.
"""
from __future__ import annotations

import numpy as np

CHUNK_BYTES = 64 * 2**20  # cap on one block of the distance matrix


def fpgm(rows: np.ndarray) -> np.ndarray:
    """Sum of distances from each row to all rows, computed in blocks of bounded memory.

    Distances come from |a|^2 + |b|^2 - 2 a.b in float64 with one BLAS product per block: scipy's
    cdist gives the same numbers (tested) but its Euclidean loop is 10-20x slower on wide layers.
    """
    rows = np.asarray(rows, np.float64)
    n = len(rows)
    sq = np.einsum("ij,ij->i", rows, rows)
    step = max(1, CHUNK_BYTES // (8 * max(n, 1)))
    out = np.empty(n, np.float64)
    for start in range(0, n, step):
        block = rows[start:start + step]
        d2 = sq[start:start + step, None] + sq[None, :] - 2.0 * (block @ rows.T)
        out[start:start + step] = np.sqrt(np.maximum(d2, 0.0)).sum(axis=1)
    return out
