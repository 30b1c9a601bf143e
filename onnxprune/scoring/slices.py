"""Per-channel views of a group's parameters: the rows of each member that belong to each channel."""
from __future__ import annotations

import numpy as np

from ..analysis.analyze import Analysis
from ..analysis.builder import Member
from ..analysis.groups import Group


def channel_matrix(analysis: Analysis, values: np.ndarray, member: Member, group: Group) -> np.ndarray:
    """[channels, features]: each channel's slice of a parameter along the member's axis, flattened.

    A channel spread over several positions (a grouped-conv unit, a flattened feature block)
    contributes all of them, in position order.
    """
    pos, idx = analysis.channel_positions(member, group)
    rows = np.moveaxis(np.take(values, pos, axis=member.axis), member.axis, 0).reshape(len(pos), -1)
    counts = np.bincount(idx, minlength=group.channels)
    if counts.min() == counts.max():
        return rows.reshape(group.channels, -1).astype(np.float64, copy=False)
    out = np.zeros((group.channels, rows.shape[1]), np.float64)  # uneven spread: average the positions
    np.add.at(out, idx, rows)
    return out / np.maximum(counts, 1)[:, None]


def zeroed(values: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """A copy of `values` with these positions along `axis` set to zero (the same function as removing them)."""
    out = np.array(values)
    where = [slice(None)] * out.ndim
    where[axis] = positions
    out[tuple(where)] = 0
    return out
