"""Run the rules over a prepared graph and resolve the channel dependency groups."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from ..graph.dynamic_int8 import IntegerOp
from ..graph.nbits import NBitsOp
from ..loading import Prepared
from .builder import Builder, Member, Part
from .cost import Cost, count_cost
from .groups import Group, Resolution, resolve
from .rules import rule_for
from ..graph.shapes import check_given_dims, probe_shapes


@dataclass
class Analysis:
    """Every channel dependency group of a model, with what each group touches."""

    groups: list[Group]
    resolution: Resolution
    notes: dict[str, dict[str, Any]]
    members: list[Member]
    cost: Cost
    sha256: str
    source: str
    parts: list[Part] = field(default_factory=list)
    quantized: tuple[int, int, int, int] = (0, 0, 0, 0)  # quantized weights read dequantized: all, per channel,
    # of dynamic int8 ops, of MatMulNBits ops

    def __post_init__(self) -> None:
        self._by_id = {g.id: g for g in self.groups}
        self._part_channels = [self._channels_of(p) for p in self.parts]  # selection asks for them often
        self._widths: dict[str, int] = {}

    def group(self, gid: str) -> Group:
        """The group with this id."""
        return self._by_id[gid]

    @property
    def prunable(self) -> list[Group]:
        """The groups nothing froze, in graph order."""
        return [g for g in self.groups if g.prunable]

    def positions(self, member: Member, group: Group) -> tuple[np.ndarray, np.ndarray]:
        """Positions on the member's axis that belong to the group, and their channel indices."""
        pos = np.nonzero(self.resolution.group(member.elements) == group.index)[0]
        return pos, self.resolution.index(member.elements[pos])

    def channel_positions(self, member: Member, group: Group) -> tuple[np.ndarray, np.ndarray]:
        """Like `positions`, sorted by channel, then by position (a channel's spread in its own order)."""
        pos, idx = self.positions(member, group)
        order = np.lexsort((pos, idx))
        return pos[order], idx[order]

    def removed_classes(self, removed: dict[str, list[int]]) -> np.ndarray:
        """True for every channel class that `removed` (group id -> channel indices) takes away."""
        res = self.resolution
        gone = np.zeros(len(res.group_of_class), bool)
        for gid, idx in removed.items():
            gone |= (res.group_of_class == self.group(gid).index) & np.isin(res.index_of_class, idx)
        return gone

    def part_channels(self, part: Part) -> dict[str, np.ndarray]:
        """Group id -> the distinct channel indices of that group a part reads."""
        return self._part_channels[next(i for i, p in enumerate(self.parts) if p is part)]

    def _channels_of(self, part: Part) -> dict[str, np.ndarray]:
        res = self.resolution
        cls = np.unique(res.cls[part.elements])
        out = {}
        for g in np.unique(res.group_of_class[cls]):
            out[self.groups[int(g)].id] = np.sort(res.index_of_class[cls[res.group_of_class[cls] == g]])
        return out

    def emptied_part(self, removed: dict[str, list[int]]) -> Part | None:
        """The first part (Slice, Split output) that `removed` would leave with no channel, if any."""
        for part, chans in zip(self.parts, self._part_channels):
            if all(np.isin(idx, removed.get(gid, [])).all() for gid, idx in chans.items()):
                return part
        return None

    def unit_width(self, group: Group) -> int:
        """Positions one of the group's channels spans on its weights' axes (an attention head's head_dim, a
        quantization block; 1 for a plain channel): kernel multiples count these positions, not the units."""
        if group.id not in self._widths:
            widths = [len(self.positions(m, group)[0]) // group.channels for m in group.members
                      if m.kind == "weight" and group.channels]
            self._widths[group.id] = max(1, min(widths, default=1))
        return self._widths[group.id]

    def fraction(self, member: Member, group: Group) -> float:
        """Share of the member's axis that the group's channels occupy."""
        return np.count_nonzero(self.resolution.group(member.elements) == group.index) / len(member.elements)


def _assign_shares(analysis: Analysis) -> None:
    """Share of parameters and MACs each group's channels touch (shares overlap between groups)."""
    cost = analysis.cost
    for g in analysis.groups:
        param_frac: dict[str, float] = {}
        node_frac: dict[str, float] = {}
        for m in g.members:
            frac = analysis.fraction(m, g)
            if m.kind is not None:
                param_frac[m.tensor] = max(param_frac.get(m.tensor, 0.0), frac)
            node_frac[m.node] = max(node_frac.get(m.node, 0.0), frac)
        g.params_share = sum(cost.param_sizes.get(t, 0) * f for t, f in param_frac.items()) / max(cost.params, 1)
        g.macs_share = sum(cost.node_macs.get(n, 0) * f for n, f in node_frac.items()) / max(cost.macs, 1)


def _subgraph_tensors(node: gs.Node) -> set[str]:
    """Names used inside a node's subgraphs (they may reach outer tensors implicitly)."""
    names: set[str] = set()
    for value in node.attrs.values():
        for sub in value if isinstance(value, list) else [value]:
            if isinstance(sub, gs.Graph):
                for inner in sub.nodes:
                    names.update(t.name for t in inner.inputs)
                    names |= _subgraph_tensors(inner)
    return names


def _unknown(node: gs.Node, b: Builder) -> None:
    """No rule: freeze every channel the node reads, explicitly or from inside a subgraph."""
    where = f"{node.domain}." if node.domain not in (None, "", "ai.onnx") else ""
    reason = f"no channel rule for {where}{node.op} (node '{b.name(node)}')"
    b.freeze_inputs(node, reason)
    for name in _subgraph_tensors(node):
        lay = b.layouts.get(name)
        if lay is not None:
            b.freeze(lay.elements, reason)


def _quantization_blocks(prep: Prepared, b: Builder) -> None:
    """Weights quantized in blocks along their input channels (MatMulNBits) lose input channels only in whole
    blocks: each block of the input's channels becomes one unit (a last, shorter block too)."""
    nodes = {n.name: n for n in prep.graph.nodes}
    for record in prep.quantized:
        block = getattr(record, "consumer_block", 1)
        node = nodes.get(getattr(record, "node", ""))
        lay = b.layout(node.inputs[0]) if node is not None and block > 1 else None
        if lay is None:
            continue
        whole = len(lay.elements) // block * block
        b.couple_blocks(lay.elements[:whole], block)
        b.couple_blocks(lay.elements[whole:], len(lay.elements) - whole)


def build_analysis(prep: Prepared, input_dims: dict[str, tuple[int, ...]] | None = None) -> Analysis:
    """Apply each node's rule in graph order, then resolve groups and their cost shares."""
    graph = prep.graph
    check_given_dims([(t.name, t.shape) for t in graph.inputs], input_dims or {})
    shapes = probe_shapes(graph, list(prep.template.opset_import), input_dims)
    b = Builder(graph, shapes, prep.names)
    for node in graph.nodes:
        rule = rule_for(node)
        if rule is None:
            _unknown(node, b)
            continue
        before = b.size
        try:
            rule.analyze(node, b)
        except (KeyError, IndexError, ValueError, TypeError, StopIteration) as exc:
            reason = f"{node.op} '{b.name(node)}' could not be analysed ({exc})"
            b.freeze_inputs(node, reason)
            b.freeze(np.arange(before, b.size), reason)
            for out in node.outputs:
                b.layouts.pop(out.name, None)
    for out in graph.outputs:
        lay = b.layouts.get(out.name)
        if lay is not None:
            b.freeze(lay.elements, f"reaches graph output '{out.name}'")
    _quantization_blocks(prep, b)
    res, groups = resolve(b)
    cost = count_cost(graph, list(prep.template.opset_import), input_dims, prep.names)
    analysis = Analysis(groups, res, b.notes, b.members, cost, prep.sha256, prep.source, b.parts,
                        (len(prep.quantized), sum(w.per_channel for w in prep.quantized),
                         sum(isinstance(w, IntegerOp) for w in prep.quantized),
                         sum(isinstance(w, NBitsOp) for w in prep.quantized)))
    _assign_shares(analysis)
    return analysis
