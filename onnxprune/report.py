"""Human and JSON views of an analysis."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .analysis.builder import CONSUMER, PRODUCER
from .analysis.cost import prunable_macs_share

if TYPE_CHECKING:
    from .analysis.analyze import Analysis
    from .analysis.groups import Group


def _member_json(analysis: "Analysis", group: "Group", m) -> dict:
    pos, idx = analysis.positions(m, group)
    entry = {"node": m.node, "op_type": m.op_type, "role": m.role,
             "tensor": m.tensor, "axis": int(m.axis), "offset": int(pos[0]), "length": int(len(pos)),
             "size": int(len(m.elements))}
    if m.kind:
        entry["parameter"] = m.kind
        entry["input_index"] = m.input_index
    if not (np.all(np.diff(pos) == 1) and np.all(np.diff(idx) >= 0)):
        entry["positions"] = pos.tolist()
    return entry


def analysis_json(analysis: "Analysis") -> dict:
    """Every group with id, channels, prunable, reason, shares and members."""
    groups = []
    for g in analysis.groups:
        groups.append({
            "id": g.id, "channels": g.channels, "prunable": g.prunable, "reason": g.reason,
            "params_share": round(g.params_share, 6), "macs_share": round(g.macs_share, 6),
            "producers": g.nodes(PRODUCER), "consumers": g.nodes(CONSUMER),
            "members": [_member_json(analysis, g, m) for m in g.members],
        })
    prunable = analysis.prunable
    return {
        "model": analysis.source, "model_sha256": analysis.sha256,
        "params": analysis.cost.params, "macs": analysis.cost.macs,
        "input_shapes": {k: list(v) for k, v in analysis.cost.input_dims.items()},
        "groups_total": len(analysis.groups), "groups_prunable": len(prunable),
        "prunable_macs_share": round(prunable_macs_share(analysis), 6),
        "groups": groups,
    }


def _short(names: list[str], width: int = 40) -> str:
    text = ", ".join(names) or "-"
    return text if len(text) <= width else text[: width - 3] + "..."


def analysis_table(analysis: "Analysis", show_frozen: bool = True) -> str:
    """A fixed-width table of groups, then totals."""
    rows = [f"{'group':<28} {'ch':>5} {'params':>7} {'MACs':>7}  {'producers -> consumers':<60} status"]
    for g in analysis.groups:
        if not show_frozen and not g.prunable:
            continue
        flow = f"{_short(g.nodes(PRODUCER), 28)} -> {_short(g.nodes(CONSUMER), 28)}"
        status = "prunable" if g.prunable else f"frozen: {g.reason}"
        rows.append(f"{g.id[:28]:<28} {g.channels:>5} {g.params_share:>6.1%} {g.macs_share:>6.1%}  {flow:<60} {status}")
    p = analysis.prunable
    rows.append(f"{len(analysis.groups)} groups, {len(p)} prunable; {analysis.cost.params:,} parameters, "
                f"{analysis.cost.macs:,} MACs at {_shapes(analysis)}; prunable channels reach "
                f"{prunable_macs_share(analysis):.0%} of MACs")
    return "\n".join(rows)


def _shapes(analysis: "Analysis") -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in analysis.cost.input_dims.items())
