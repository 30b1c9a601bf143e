"""Pruning plans: which channels of which group go, checked against the model they are for."""
from __future__ import annotations

import json
import os
from typing import Any

from .analysis.analyze import Analysis
from .calibration.data import POINTS, Calibration, data_digest
from .errors import OnnxPruneError

FORMAT = "onnxprune-plan/1"
Plan = dict[str, Any]


def make_plan(analysis: Analysis, removed: dict[str, list[int]], **extra: Any) -> Plan:
    """A plan for this model; `extra` keys (criterion, ratio...) are kept for the record."""
    groups = {gid: sorted(int(i) for i in idx) for gid, idx in removed.items() if len(idx)}
    return {"format": FORMAT, "model_sha256": analysis.sha256, **extra, "groups": groups}


def load_plan(path: str | os.PathLike) -> Plan:
    """Read a plan file; a file that is not a JSON object is a one-line error."""
    try:
        with open(path, encoding="utf-8") as fh:
            plan = json.load(fh)
    except FileNotFoundError:
        raise OnnxPruneError(f"{path}: no such plan file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OnnxPruneError(f"{path}: not a JSON plan ({exc})") from None
    if not isinstance(plan, dict):
        raise OnnxPruneError(f"{path}: a plan is a JSON object")
    return plan


def save_plan(plan: Plan, path: str | os.PathLike) -> None:
    """Write a plan as JSON."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(plan, fh, indent=1)
        fh.write("\n")


def check_plan(plan: Plan, analysis: Analysis) -> dict[str, list[int]]:
    """Validate a plan against the analysis of its model; return group id -> sorted removed indices."""
    if plan.get("format") != FORMAT:
        raise OnnxPruneError(f"plan format is {plan.get('format')!r}, expected {FORMAT!r}")
    if plan.get("model_sha256") != analysis.sha256:
        raise OnnxPruneError(f"plan is for another model (sha256 {str(plan.get('model_sha256'))[:12]}..., "
                             f"this model is {analysis.sha256[:12]}...)")
    groups = plan.get("groups")
    if not isinstance(groups, dict):
        raise OnnxPruneError("plan 'groups' must map group ids to lists of channel indices")
    ids = {g.id: g for g in analysis.groups}
    removed = {}
    for gid, idx in groups.items():
        if gid not in ids:
            raise OnnxPruneError(f"plan names group '{gid}', which this model does not have")
        g = ids[gid]
        if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise OnnxPruneError(f"group '{gid}': removed channels must be a list of integers")
        if not idx:
            continue
        if not g.prunable:
            raise OnnxPruneError(f"group '{gid}' is frozen ({g.reason})")
        bad = [i for i in idx if not 0 <= i < g.channels]
        if bad:
            raise OnnxPruneError(f"group '{gid}': channel index {bad[0]} out of range 0..{g.channels - 1}")
        if len(set(idx)) != len(idx):
            raise OnnxPruneError(f"group '{gid}': a channel index is listed twice")
        if len(idx) >= g.channels:
            raise OnnxPruneError(f"group '{gid}': the plan removes all {g.channels} channels")
        removed[gid] = sorted(idx)
    part = analysis.emptied_part(removed)
    if part is not None:
        raise OnnxPruneError(f"the plan removes every channel that {part.op_type} '{part.node}' reads "
                             f"({_describe(analysis.part_channels(part))}): it would leave a zero-width tensor")
    return removed


def _describe(channels: dict) -> str:
    """'group g channels 2..4' for the channel sets of a part."""
    def span(idx) -> str:
        return f"{idx[0]}..{idx[-1]}" if len(idx) > 1 and idx[-1] - idx[0] == len(idx) - 1 else \
            ",".join(str(int(i)) for i in idx)
    return "; ".join(f"group '{gid}' channel{'s' if len(idx) > 1 else ''} {span(idx)}" for gid, idx in channels.items())


def calibration_record(cal: Calibration) -> dict:
    """What a plan records of the calibration it was made with: the source, the settings, a digest of the data."""
    from .rewrite.reconstruction import HOLD_OUT, RIDGE  # the re-fit's fixed settings, recorded with the rest

    settings = {"samples": cal.samples, "points": cal.points or POINTS, "batch": cal.batch, "seed": cal.seed,
                "mask": cal.mask, "hold_out_every": HOLD_OUT, "ridge_grid": list(RIDGE)}
    return {"source": str(cal.path), "settings": settings, "data": data_digest(cal.path)}


def with_calibration(plan: Plan, record: dict) -> Plan:
    """The plan with its calibration record (before 'groups', so the file reads in order)."""
    head = {k: v for k, v in plan.items() if k not in ("groups", "calibration")}
    return {**head, "calibration": record, "groups": plan["groups"]}


def calibration_differences(recorded: Any, current: dict) -> list[str]:
    """How the calibration of a replay differs from the one the plan records ([] when the same or not recorded)."""
    if recorded is None:
        return []
    if not isinstance(recorded, dict) or not isinstance(recorded.get("settings", {}), dict) \
            or not isinstance(recorded.get("data", {}), dict):
        return ["the plan's 'calibration' record is not an object of settings and data: not compared"]
    said = []
    data = recorded.get("data", {})
    if data.get("sha256") != current["data"]["sha256"]:
        said.append(f"--calib {current['source']} is not the data the plan was made with ({recorded.get('source')}): "
                    f"sha256 {current['data']['sha256'][:12]}... vs {str(data.get('sha256'))[:12]}... in the plan; "
                    f"arrays {_arrays(current['data'])} vs {_arrays(data)}")
    old = recorded.get("settings", {})
    changed = [k for k in current["settings"] if k in old and old[k] != current["settings"][k]]
    if changed:
        said.append("calibration settings differ from the plan's: " + ", ".join(
            f"{k} {_setting(current['settings'][k])} here, {_setting(old[k])} in the plan" for k in changed))
    return said


def _setting(value: Any) -> str:
    """A setting as the messages show it (samples None: all of them)."""
    return "all" if value is None else str(value)


def _arrays(data: dict) -> str:
    """'image 500x1x28x28 float32' for a digest's arrays."""
    arrays = data.get("arrays")
    if not isinstance(arrays, dict):
        return "unknown"
    return ", ".join(f"{k or '(npy)'} {'x'.join(map(str, v.get('shape', [])))} {v.get('dtype', '?')}"
                     for k, v in arrays.items() if isinstance(v, dict)) or "none"


def make_depth_plan(sha256: str, blocks_removed: list[str], **extra: Any) -> Plan:
    """A depth plan: the residual blocks removed whole (ids as analyze --blocks lists them), no channel."""
    return {"format": FORMAT, "model_sha256": sha256, **extra, "blocks_removed": list(blocks_removed), "groups": {}}


def is_depth_plan(plan: Plan) -> bool:
    """The plan removes residual blocks (it has 'blocks_removed')."""
    return "blocks_removed" in plan


def check_depth_plan(plan: Plan, sha256: str) -> list[str]:
    """The block ids a depth plan removes, checked against the hash of its model (the ids are checked on removal)."""
    if plan.get("format") != FORMAT:
        raise OnnxPruneError(f"plan format is {plan.get('format')!r}, expected {FORMAT!r}")
    if plan.get("model_sha256") != sha256:
        raise OnnxPruneError(f"plan is for another model (sha256 {str(plan.get('model_sha256'))[:12]}..., "
                             f"this model is {sha256[:12]}...)")
    ids = plan.get("blocks_removed")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise OnnxPruneError("plan 'blocks_removed' must be a list of residual block ids")
    if len(set(ids)) != len(ids):
        raise OnnxPruneError("plan 'blocks_removed' lists a block twice")
    if plan.get("groups") and not isinstance(plan.get("after_blocks_sha256"), str):
        raise OnnxPruneError("the plan removes blocks and channels but not on which model the channels are counted "
                             "('after_blocks_sha256': the model without its blocks)")
    return ids


def join_plans(sha256: str, blocks_removed: list[str], channels: Plan) -> Plan:
    """One plan for blocks then channels: the channel plan's groups are of the model without the blocks, whose hash
    it records as 'after_blocks_sha256'."""
    head = {k: v for k, v in channels.items() if k not in ("format", "model_sha256", "groups")}
    return {"format": FORMAT, "model_sha256": sha256, "blocks_removed": list(blocks_removed),
            "after_blocks_sha256": channels["model_sha256"], **head, "groups": channels["groups"]}


def channel_part(plan: Plan) -> Plan:
    """The channel plan of a joint plan, for the model without its blocks."""
    rest = {k: v for k, v in plan.items() if k not in ("blocks_removed", "after_blocks_sha256", "model_sha256")}
    return {"model_sha256": plan["after_blocks_sha256"], **rest}
