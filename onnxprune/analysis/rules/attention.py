"""The ONNX Attention op (opset 23): heads of Q, K and V are channel units, K/V heads shared by Q groups."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import Builder
from . import RewriteContext, Rule, register
from .common import passthrough


@register("Attention")
class AttentionRule(Rule):
    """Y = softmax(Q K^T * scale + mask) V per head; Q head i reads K/V head i // (q_heads / kv_heads).

    3-D inputs [B, S, heads * head_size] carry channels on axis 2 (q_num_heads, kv_num_heads say
    how they split); 4-D inputs [B, heads, S, head_size] carry heads on axis 1.
    """

    def analyze(self, node: gs.Node, b: Builder) -> None:
        q, k, v = (b.input(node, i) for i in range(3))
        lays = [b.layout(t) for t in (q, k, v)]
        if not any(lays):
            return
        name = f"Attention '{b.name(node)}'"
        problem = self._problem(node, b, lays)
        if problem:
            b.freeze_inputs(node, f"{name}: {problem}")
            return
        rank = b.rank(q)
        q_heads, kv_heads = self._heads(node, b, lays, rank)
        group = q_heads // kv_heads
        units = [lay.elements.reshape(n, -1) for lay, n in zip(lays, (q_heads, kv_heads, kv_heads))]
        for i, (lay, unit) in enumerate(zip(lays, units)):
            b.couple_blocks(lay.elements, unit.shape[1])
            b.member(node, b.input(node, i))
        kv_of_q = np.arange(q_heads) // group
        b.couple(units[0][:, 0], units[1][kv_of_q, 0])
        b.couple(units[1][:, 0], units[2][:, 0])
        out = units[2][kv_of_q].reshape(-1) if rank == 3 else units[0][:, 0]
        b.note(node, q=lays[0].elements, kv=lays[1].elements, q_size=units[0].shape[1],
               kv_size=units[1].shape[1], rank=rank)
        passthrough(node, b, 2 if rank == 3 else 1, out, outputs=1)

    @staticmethod
    def _problem(node: gs.Node, b: Builder, lays) -> str | None:
        """Why the heads cannot be followed, or None."""
        ranks = {b.rank(b.input(node, i)) for i in range(3)}
        if not all(lays):
            return "Q, K and V do not all carry sliceable heads"
        if len(ranks) != 1 or ranks.pop() not in (3, 4):
            return "Q, K and V of unknown or different ranks"
        rank = b.rank(node.inputs[0])
        if any(lay.axis != (2 if rank == 3 else 1) for lay in lays):
            return "heads are not on the head axis"
        if any(b.input(node, i) is not None for i in (4, 5, 6)):
            return "past key/value inputs carry heads nobody slices"
        if any(o.outputs or o in b.graph.outputs for o in node.outputs[1:]):
            return "present key/value or score outputs are used"
        mask = b.shape(b.input(node, 3))
        if mask is not None and len(mask) == 4 and mask[1] != 1:
            return "the mask differs per head"
        if rank == 3 and not {"q_num_heads", "kv_num_heads"} <= set(node.attrs):
            return "3-D inputs without q_num_heads / kv_num_heads"
        return None

    @staticmethod
    def _heads(node: gs.Node, b: Builder, lays, rank: int) -> tuple[int, int]:
        if rank == 3:
            return int(node.attrs["q_num_heads"]), int(node.attrs["kv_num_heads"])
        return len(lays[0].elements), len(lays[1].elements)

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        note = rw.note(node)
        for attr, elements, size in (("q_num_heads", note["q"], note["q_size"]), ("kv_num_heads", note["kv"], note["kv_size"])):
            if attr in node.attrs:
                node.attrs[attr] = int(rw.kept(elements).sum()) // size
