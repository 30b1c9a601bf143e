"""Resolve couplings into channel classes and groups (two connected-components passes)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .builder import Builder, Member


@dataclass
class Group:
    """Channels that must be removed together, index by index, and everything they touch."""

    id: str
    index: int
    channels: int
    reasons: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    params_share: float = 0.0
    macs_share: float = 0.0

    @property
    def prunable(self) -> bool:
        """Nothing froze the group."""
        return not self.reasons

    @property
    def reason(self) -> str | None:
        """Why the group is frozen (None when it is prunable)."""
        return "; ".join(self.reasons) if self.reasons else None

    def nodes(self, role: str) -> list[str]:
        """Distinct node names with that role, in graph order."""
        return list(dict.fromkeys(m.node for m in self.members if m.role == role))


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label per vertex of an undirected graph given as edge arrays."""
    if n == 0:
        return np.zeros(0, np.int64)
    m = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(m, directed=False)[1].astype(np.int64)


def _first_seen_order(labels: np.ndarray) -> np.ndarray:
    """Relabel so labels are numbered by their first (lowest-index) occurrence."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[labels]


@dataclass
class Resolution:
    """Element -> class -> group maps, with each class's index inside its group."""

    cls: np.ndarray  # element -> class
    group_of_class: np.ndarray
    index_of_class: np.ndarray
    n_groups: int

    def group(self, elements: np.ndarray) -> np.ndarray:
        """The group index of each element."""
        return self.group_of_class[self.cls[elements]]

    def index(self, elements: np.ndarray) -> np.ndarray:
        """The channel index, within its group, of each element."""
        return self.index_of_class[self.cls[elements]]


def resolve(b: Builder) -> tuple[Resolution, list[Group]]:
    """Union all couplings, then join the classes each atom spans into groups."""
    a = np.concatenate([e[0] for e in b.edges]) if b.edges else np.zeros(0, np.int64)
    c = np.concatenate([e[1] for e in b.edges]) if b.edges else np.zeros(0, np.int64)
    cls = _first_seen_order(_components(b.size, a, c))
    n_cls = int(cls.max()) + 1 if b.size else 0
    heads = np.concatenate([np.full(t.size, t.start) for t in b.atoms]) if b.atoms else np.zeros(0, np.int64)
    grp = _first_seen_order(_components(n_cls, cls[heads], cls[np.arange(b.size)]))
    n_groups = int(grp.max()) + 1 if n_cls else 0
    counts = np.bincount(grp, minlength=n_groups).astype(np.int64)
    order = np.argsort(grp, kind="stable")  # classes are numbered in graph order; keep it per group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.empty(n_cls, np.int64)
    index[order] = np.arange(n_cls) - starts[grp[order]]
    res = Resolution(cls, grp, index, n_groups)
    return res, _groups(b, res, counts)


def _groups(b: Builder, res: Resolution, counts: np.ndarray) -> list[Group]:
    """Group objects with deterministic ids, reasons and members."""
    anchors: dict[int, str] = {}
    for atom in b.atoms:
        g = int(res.group(np.array([atom.start]))[0])
        anchors.setdefault(g, atom.node)
    groups, used = [], set()
    for g in range(res.n_groups):
        gid = anchors[g]
        k = 2
        while gid in used:
            gid, k = f"{anchors[g]}~{k}", k + 1
        used.add(gid)
        groups.append(Group(gid, g, int(counts[g])))
    for atom in b.atoms:
        if atom.frozen:
            _add_reason(groups[int(res.group(np.array([atom.start]))[0])], atom.frozen)
    for elements, reason in b.freezes:
        for g in np.unique(res.group(elements)):
            _add_reason(groups[int(g)], reason)
    for m in b.members:
        for g in np.unique(res.group(m.elements)):
            groups[int(g)].members.append(m)
    for grp in groups:
        if grp.channels < 2 and not grp.reasons:
            grp.reasons.append("a single channel")
    return groups


def _add_reason(group: Group, reason: str) -> None:
    if reason not in group.reasons:
        group.reasons.append(reason)
