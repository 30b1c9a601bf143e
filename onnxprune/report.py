"""Human and JSON views of an analysis."""
from __future__ import annotations

from collections import Counter

from typing import TYPE_CHECKING

import numpy as np

from .analysis.builder import CONSUMER, PRODUCER
from .analysis.estimates import prunable_macs_share

if TYPE_CHECKING:
    from .analysis.analyze import Analysis
    from .analysis.groups import Group
    from .analysis.residual import ResidualBlock


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
        "quantized_weights": {"all": analysis.quantized[0], "per_channel": analysis.quantized[1],
                              "dynamic_int8": analysis.quantized[2], "matmul_nbits": analysis.quantized[3]},
        "groups": groups,
    }


def _short(names: list[str], width: int = 40) -> str:
    text = ", ".join(names) or "-"
    return text if len(text) <= width else text[: width - 3] + "..."


def analysis_table(analysis: "Analysis", show_frozen: bool = True) -> str:
    """A fixed-width table of groups, then totals."""
    shown = [g for g in analysis.groups if show_frozen or g.prunable]
    width = max([len("group"), *(len(g.id) for g in shown)])  # ids are never cut: two rows never look alike
    rows = [f"{'group':<{width}} {'ch':>5} {'params':>7} {'MACs':>7}  {'producers -> consumers':<60} status"]
    for g in shown:
        flow = f"{_short(g.nodes(PRODUCER), 28)} -> {_short(g.nodes(CONSUMER), 28)}"
        status = "prunable" if g.prunable else f"frozen: {g.reason}"
        rows.append(f"{g.id:<{width}} {g.channels:>5} {g.params_share:>6.1%} {g.macs_share:>6.1%}  {flow:<60} {status}")
    p = analysis.prunable
    rows.append(f"{_count(len(analysis.groups), 'group')}, {len(p)} prunable; {analysis.cost.params:,} parameters, "
                f"{analysis.cost.macs:,} MACs at {_shapes(analysis)}; prunable channels reach "
                f"{prunable_macs_share(analysis):.0%} of MACs")
    if analysis.quantized[0]:
        rows.append(f"quantized: {_count(analysis.quantized[0], 'weight')} ({_quantized_kinds(*analysis.quantized[1:])})"
                    " read dequantized; a prune writes them back as integers with their own scales")
    return "\n".join(rows)


def _quantized_kinds(per_channel: int, dynamic: int, nbits: int) -> str:
    """'12 per channel, 6 of dynamic int8 ops, 14 of MatMulNBits ops' (the parts that are not zero after the first)."""
    parts = [f"{per_channel} per channel"] + ([f"{dynamic} of dynamic int8 ops"] if dynamic else []) + \
        ([f"{nbits} of MatMulNBits ops"] if nbits else [])
    return ", ".join(parts)


def _shapes(analysis: "Analysis") -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in analysis.cost.input_dims.items())


def prune_report(analysis: "Analysis", after, removed: dict[str, list[int]], scores=None,
                 sizes: tuple[int, int] | None = None, compensation=None) -> dict:
    """Before/after totals and, per prunable group, channels before/after and how they were ranked."""
    before = analysis.cost
    groups = []
    for g in analysis.prunable:
        gone = len(removed.get(g.id, []))
        entry = {"id": g.id, "channels_before": g.channels, "channels_after": g.channels - gone, "removed": gone}
        if scores and g.id in scores:
            entry["criterion"] = scores[g.id].criterion
            if scores[g.id].note:
                entry["note"] = scores[g.id].note
        if compensation is not None and g.id in compensation.outcomes:
            entry["compensation"] = compensation.outcomes[g.id].to_json()
        groups.append(entry)
    total = {
        "params_before": before.params, "params_after": after.params,
        "macs_before": before.macs, "macs_after": after.macs,
        "params_removed": round(1 - after.params / max(before.params, 1), 6),
        "macs_removed": round(1 - after.macs / max(before.macs, 1), 6),
        "channels_removed": sum(map(len, removed.values())), "groups_pruned": len(removed),
        "input_shapes": {k: list(v) for k, v in before.input_dims.items()},
    }
    if sizes:
        total["bytes_before"], total["bytes_after"] = sizes
    if compensation is not None:
        total["compensation"] = _compensation_totals(compensation)
        if compensation.requantized is not None:
            total["requantized"] = compensation.requantized
    return {"model_sha256": analysis.sha256, "total": total, "groups": groups}


def _compensation_totals(comp) -> dict:
    """Merging: channels merged / folded / only pruned. Reconstruction: calibration, errors, memory."""
    outcomes = list(comp.outcomes.values())
    if comp.summary:  # set by reconstruction (with or without the re-fit)
        fits = [f for o in outcomes for f in o.fits]
        out = {"mode": comp.options.compensate, **comp.summary, "consumers_read": len(fits),
               "consumers_not_reconstructed": sum(len(o.skipped) for o in outcomes)}
        for key in ("error_before", "error_after"):
            values = [getattr(f, key) for f in fits if getattr(f, key) is not None]
            if values:
                out[f"median_{key}"] = round(float(np.median(values)), 6)
        return out
    records = [(c["into"] is None, c["exact"]) for o in outcomes for c in o.channels.values()]
    because = Counter(c["because"].split(" (cosine")[0] for o in outcomes for c in o.channels.values()
                      if not c["exact"])
    return {"mode": comp.options.compensate, "merge_mode": comp.options.merge_mode,
            "merged": sum(o.merged for o in outcomes), "folded": sum(o.folded for o in outcomes),
            "pruned_only": sum(o.pruned for o in outcomes),
            "exact": sum(e for _, e in records), "approximate": sum(not e for _, e in records),
            "merged_exact": sum(e for f, e in records if not f), "folded_exact": sum(e for f, e in records if f),
            "approximate_because": dict(because.most_common())}


def summary(report: dict) -> str:
    """The before/after lines the CLI prints."""
    t = report["total"]
    lines = [f"removed {_count(t['channels_removed'], 'channel')} in {_count(t['groups_pruned'], 'group')}",
             f"parameters {t['params_before']:,} -> {t['params_after']:,} ({t['params_removed']:.1%} fewer)",
             f"MACs       {t['macs_before']:,} -> {t['macs_after']:,} ({t['macs_removed']:.1%} fewer)"]
    if "bytes_before" in t:
        lines.append(f"file size  {t['bytes_before']:,} -> {t['bytes_after']:,} bytes")
    if "requantized" in t:
        q = t["requantized"]
        kinds = _quantized_kinds(q["per_channel"], q.get("dynamic", 0), q.get("nbits", 0))
        lines.append(f"quantized: {_count(q['weights'], 'weight')} written back as integers with their own "
                     f"scales ({kinds}); {_count(q['clipped'], 'value')} clipped to the integer range")
    c = t.get("compensation")
    if c and "calibration_samples" in c:
        after = f" -> {c['median_error_after']:.4f}" if "median_error_after" in c else ""
        memory = (c["target_bytes_max"] + c["statistics_bytes_max"] + c["batch_bytes_max"]) / 2**20
        what = "reconstruction" if c["mode"] == "reconstruct" else "LASSO selection without re-fit"
        points = c["points_per_sample"]
        points = f"{points} points" if isinstance(points, int) else points
        lines.append(f"{what}: {c['consumers_read']} consumers read on {c['calibration_samples']} "
                     f"calibration samples x {points}; median relative output error "
                     f"{c.get('median_error_before', 0):.4f}{after}; {memory:.1f} MiB of calibration data held at most")
        if "masked_sequences" in c:
            lines.append(f"  {c['masked_sequences']}")
        if c["consumers_not_reconstructed"]:
            lines.append(f"  {c['consumers_not_reconstructed']} consumers not reconstructed (see the report)")
    elif c and c["mode"] == "mean":
        lines.append(f"compensation (mean): the calibration means of {_count(c['folded'], 'removed channel')} "
                     f"folded into their consumers' biases ({c['folded_exact']} exact: constant channels), "
                     f"{c['pruned_only']} only pruned")
    elif c and c["mode"] != "none":
        lines.append(f"compensation: {c['mode']} (BN factor: {c['merge_mode']} mode): "
                     f"{_tally(c['merged'], c['merged_exact'], 'merged')}; "
                     f"{_tally(c['folded'], c['folded_exact'], 'folded as constants')}; {c['pruned_only']} only pruned")
        lines += [f"  approximate: {n} because {why}" for why, n in c["approximate_because"].items()]
    notes = sorted({g["note"] for g in report["groups"] if g.get("note")})
    return "\n".join(lines + [f"note: {n} ({_count(sum(g.get('note') == n for g in report['groups']), 'group')})"
                              for n in notes])


def _count(n: int, noun: str) -> str:
    """'1 channel', '3 channels'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _tally(n: int, exact: int, done: str) -> str:
    """'3 channels merged, 2 of them exactly, 1 approximately' ('0 channels merged' alone)."""
    text = f"{_count(n, 'channel')} {done}"
    return f"{text}, {exact} of them exactly, {n - exact} approximately" if n else text


def group_lines(report: dict) -> str:
    """Channels per group, before -> after, and the share kept."""
    shown = [g for g in report["groups"] if g["removed"]]
    width = max([0, *(len(g["id"]) for g in shown)])
    return "\n".join(f"  {g['id']:<{width}} {g['channels_before']:>5} -> {g['channels_after']:<5} "
                     f"({g['channels_after'] / g['channels_before']:.0%} kept)" for g in shown)


def block_macs(analysis: "Analysis", block: "ResidualBlock") -> int:
    """MACs of a residual block's branch: what removing it saves (at the analysis's input shapes)."""
    return int(sum(analysis.cost.node_macs.get(n, 0) for n in block.nodes))


def blocks_json(analysis: "Analysis", blocks: list["ResidualBlock"]) -> list[dict]:
    """Every residual block: id, kind, params, branch MACs and share, removable or why not, nodes, inner blocks."""
    total = max(analysis.cost.macs, 1)
    return [{"id": b.id, "kind": b.kind, "params": b.params, "macs": block_macs(analysis, b),
             "macs_share": round(block_macs(analysis, b) / total, 6), "removable": b.removable, "reason": b.reason,
             "add": b.add, "x": b.x, "branch_output": b.branch_output, "nodes": list(b.nodes), "inner": list(b.inner)}
            for b in blocks]


def blocks_table(rows: list[dict]) -> str:
    """A fixed-width table of residual blocks (rows of blocks_json), then totals."""
    if not rows:
        return "no residual blocks (no x + f(x) sum whose branch holds a weighted op)"
    width = max(len("block"), *(len(r["id"]) for r in rows))
    lines = [f"{'block':<{width}} {'kind':<9} {'params':>11} {'branch MACs':>15} {'share':>6}  status"]
    for r in rows:
        status = "removable" if r["removable"] else f"frozen: {r['reason']}"
        inner = f" (holds {_count(len(r['inner']), 'block')})" if r["inner"] else ""
        lines.append(f"{r['id']:<{width}} {r['kind']:<9} {r['params']:>11,} {r['macs']:>15,} {r['macs_share']:>6.1%}  "
                     f"{status}{inner}")
    removable = [r for r in rows if r["removable"]]
    lines.append(f"{_count(len(rows), 'residual block')}, {len(removable)} removable; their branches hold "
                 f"{sum(r['macs_share'] for r in removable):.0%} of MACs")
    return "\n".join(lines)


def with_blocks(report: dict, original: "Analysis", blocks: list[str], after_blocks) -> dict:
    """A prune report of channels removed from a model without its residual blocks, counted from the original:
    totals before are the original's, and the cost after the blocks alone is kept (params/macs_after_blocks)."""
    t, before = report["total"], original.cost
    t.update(params_before=before.params, macs_before=before.macs, params_after_blocks=after_blocks.params,
             macs_after_blocks=after_blocks.macs,
             params_removed=round(1 - t["params_after"] / max(before.params, 1), 6),
             macs_removed=round(1 - t["macs_after"] / max(before.macs, 1), 6))
    report.update(model_sha256=original.sha256, blocks_removed=list(blocks))
    return report


def depth_lines(report: dict) -> str:
    """What prune prints for a depth prune: blocks removed (and channels), totals, each measured block's importance,
    and with --depth every candidate measured."""
    gone, t = report.get("blocks_removed", []), report["total"]
    lines = [f"removed {_count(len(gone), 'residual block')}: " + ", ".join(gone) if gone else
             "removed no residual block"]
    if gone and "macs_after_blocks" in t:
        lines[0] += f" ({1 - t['macs_after_blocks'] / max(t['macs_before'], 1):.1%} of MACs)"
    lines += summary(report).splitlines()[0 if t["channels_removed"] else 1:]  # channels, parameters, MACs, size
    lines += choice_lines(report.get("depth_choice"))
    measured = report.get("block_importance")
    if not measured:
        return "\n".join(lines)
    rows = measured["blocks"]
    agreement = any("top1_agreement" in r for r in rows)
    width = max(len("block"), *(len(r["id"]) for r in rows))
    lines.append(f"block importance on {measured['inputs']}: 1 - the worst output's cosine with the block alone "
                 "removed; proxy: 1 - cosine(x, x + f(x)) per sample")
    lines.append(f"  {'block':<{width}} {'kind':<9} {'params':>11} {'branch MACs':>15} {'importance':>10} "
                 f"{'proxy':>8}" + (f" {'top-1':>7}" if agreement else ""))
    for r in rows:
        top1 = f" {r['top1_agreement']:>7.2%}" if "top1_agreement" in r else (" " * 8 if agreement else "")
        lines.append(f"  {r['id']:<{width}} {r['kind']:<9} {r['params']:>11,} {r.get('macs', 0):>15,} "
                     f"{r['importance']:>10.4g} {r['proxy']:>8.4g}{top1}" + ("  removed" if r["id"] in gone else ""))
    return "\n".join(lines)


def choice_lines(choice: dict | None) -> list[str]:
    """--depth: one line per candidate (blocks removed, then channels to the target), its loss, the one kept."""
    if not choice:
        return []
    lines = [f"depth and width for {choice['target']}: each candidate's loss on {choice['inputs']} "
             f"({choice['loss']})"]
    for c in choice["candidates"]:
        head = f"  {_count(c['blocks'], 'block'):<9}"
        if "error" in c:
            lines.append(f"{head} + channels: error: {c['error']}")
            continue
        what = "no channel" if c.get("blocks_alone") else f"channels to {c['width_target']}"
        lines.append(f"{head} ({c['blocks_macs_removed']:6.1%} of MACs) + {what}: {c['macs_removed']:.1%} fewer MACs, "
                     f"loss {c['loss']:.4f}" + ("  kept" if c["blocks"] == choice["kept"] else ""))
    return lines
