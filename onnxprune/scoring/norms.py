"""Magnitude criteria: filter L1 / L2 norms (Li et al., ICLR 2017)."""
from __future__ import annotations

import numpy as np


def l1(rows: np.ndarray) -> np.ndarray:
    """Sum of absolute values of each channel's weights."""
    return np.abs(rows).sum(axis=1)


def l2(rows: np.ndarray) -> np.ndarray:
    """Euclidean norm of each channel's weights."""
    return np.sqrt(np.einsum("ij,ij->i", rows, rows))
