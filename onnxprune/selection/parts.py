"""Keep some channels in every part a node reads on its own (a Slice, one Split output).

A group's guards see only its total; a ratio or a global threshold can still take every channel
of one Split output or Slice, which leaves a zero-width tensor no runtime accepts. Each part keeps
at least min(--min-channels, its size) channels: its best-scoring removed channels come back, and
to keep the group's count (and its rounding) the group gives up its lowest-scoring kept channels
that no part needs instead.
"""
from __future__ import annotations

import numpy as np

from ..analysis.analyze import Analysis
from ..scoring import GroupScores


def protect_parts(analysis: Analysis, removed: dict[str, list[int]], scores: dict[str, GroupScores],
                  min_channels: int) -> dict[str, list[int]]:
    """`removed` changed so no part falls below its share of kept channels."""
    if not analysis.parts or not removed:
        return removed
    gone = {gid: set(idx) for gid, idx in removed.items()}
    parts = [(ch, min(min_channels, sum(len(i) for i in ch.values())))
             for ch in map(analysis.part_channels, analysis.parts)]
    locked: dict[str, set[int]] = {}
    for chans, need in parts:
        while _kept(chans, gone) < need:
            gid, i = max(((g, int(i)) for g, idx in chans.items() for i in idx if int(i) in gone.get(g, ())),
                         key=lambda c: (_score(scores, *c), -c[1]))
            gone[gid].discard(i)
            locked.setdefault(gid, set()).add(i)
            swap = _spare(gid, gone, locked, parts, analysis.group(gid).channels, scores)
            if swap is not None:
                gone[gid].add(swap)
    return {gid: sorted(idx) for gid, idx in gone.items() if idx}


def _kept(chans: dict[str, np.ndarray], gone: dict[str, set[int]]) -> int:
    return sum(int(np.count_nonzero(~np.isin(idx, list(gone.get(g, ()))))) for g, idx in chans.items())


def _score(scores: dict[str, GroupScores], gid: str, i: int) -> float:
    s = scores[gid].scores
    return float(s[i] / max(float(np.mean(s)), 1e-30))


def _spare(gid: str, gone: dict[str, set[int]], locked: dict[str, set[int]], parts, channels: int,
           scores: dict[str, GroupScores]) -> int | None:
    """The lowest-scoring kept channel of the group whose removal leaves every part its share."""
    for j in np.lexsort((np.arange(channels), scores[gid].scores)):
        j = int(j)
        if j in gone[gid] or j in locked.get(gid, ()):
            continue
        gone[gid].add(j)
        ok = all(_kept(ch, gone) >= need for ch, need in parts if j in ch.get(gid, ()))
        gone[gid].discard(j)
        if ok:
            return j
    return None
