"""The dead-channel oracle: channels made exactly dead can be removed without changing any output."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune import apply_plan, make_plan
from onnxprune.analysis.analyze import build_analysis
from onnxprune.analysis.cost import resolve_input_dims
from onnxprune.loading import export, prepare, whole_weights
from onnxprune.validation.smoke import random_feeds

KEEP_VALUE = {"mean", "var"}  # BN statistics: gamma = beta = 0 already kills the channel
ONE_VALUE = {"divisor"}  # dividing by zero would make NaN, dividing by one keeps zero


def subsets(channels: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """Channel subsets to remove: first, last, a random ~40%, and all but one."""
    k = max(1, int(channels * 0.4))
    return {
        "first": [0],
        "last": [channels - 1],
        "random": sorted(rng.choice(channels, size=min(k, channels - 1), replace=False).tolist()),
        "all_but_one": sorted(set(range(channels)) - {int(rng.integers(channels))}),
    }


def dead_copy(model: onnx.ModelProto, removed: dict[str, list[int]], shapes=None) -> onnx.ModelProto:
    """A copy of the model whose `removed` channels are zero in every parameter slice that carries them."""
    prep = prepare(model)
    analysis = build_analysis(prep, shapes)
    nodes = {prep.names[id(n)]: n for n in prep.graph.nodes}
    for m in analysis.members:
        if m.input_index is None or m.kind in KEEP_VALUE:
            continue
        tensor = nodes[m.node].inputs[m.input_index]
        values = np.array(tensor.values)
        for gid, idx in removed.items():
            pos, index = analysis.positions(m, analysis.group(gid))
            sel = pos[np.isin(index, idx)]
            where = [slice(None)] * values.ndim
            where[m.axis] = sel
            values[tuple(where)] = 1 if m.kind in ONE_VALUE else 0
        tensor.values = values
    return export(prep, requantize=whole_weights(prep))  # QDQ weights go back as integers: zero stays zero


def keep_parts(analysis, removed: dict[str, list[int]]) -> dict[str, list[int]]:
    """`removed` less the first channel of every part (Slice, Split output) it would empty."""
    removed = {g: list(idx) for g, idx in removed.items()}
    while (part := analysis.emptied_part(removed)) is not None:
        gid, idx = next(iter(analysis.part_channels(part).items()))
        removed[gid].remove(int(idx[0]))
    return {g: idx for g, idx in removed.items() if idx}


def feeds(model: onnx.ModelProto, shapes=None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at the model's concrete input shapes (the ones the CLI's check run uses)."""
    return random_feeds(model, resolve_input_dims(prepare(model).graph, shapes), seed)


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def check_dead_channels(model: onnx.ModelProto, removed: dict[str, list[int]], rtol: float = 1e-5,
                        shapes=None, atol: float = 1e-6) -> onnx.ModelProto:
    """Prune dead channels and assert every output is unchanged; return the pruned model.

    A subset that would take every channel of a Slice or Split output keeps that part's first one
    (onnxprune refuses such a plan: it would leave a zero-width tensor).
    """
    removed = keep_parts(build_analysis(prepare(model), shapes), removed)
    dead = dead_copy(model, removed, shapes)
    analysis = build_analysis(prepare(dead), shapes)
    pruned = apply_plan(dead, make_plan(analysis, removed), shapes)
    x = random_feeds(dead, analysis.cost.input_dims)
    want_all = run(dead, x)
    noise = _sensitivity(dead, x, want_all)
    for name, want, got in zip([o.name for o in dead.graph.output], want_all, run(pruned, x)):
        assert want.shape == got.shape, f"output {name}: shape {got.shape} != {want.shape}"
        # relative to the output's scale, with a floor for float32 noise: saturated outputs, and
        # models so ill-conditioned (many dead channels) that rounding alone moves the output
        scale = float(np.abs(want).max())
        err = float(np.abs(want - got).max())
        bound = rtol * scale + atol + 10 * noise[name]
        assert err <= bound, (f"output {name}: max error {err:.2e} > bound {bound:.2e} (scale {scale:.2e}) "
                              f"after removing {removed}")
    return pruned


def check_dead_exact(model: onnx.ModelProto, subset: str, count) -> onnx.ModelProto:
    """Quantized models: prune a `subset` of every group's channels made dead and require bit-identical outputs,
    `count(model)` (the quantization nodes) the same in the original, the dead copy and the result; return it."""
    from onnxprune import analyze
    analysis = analyze(model)
    assert analysis.prunable and analysis.quantized[0] > 0
    rng = np.random.default_rng(3)
    removed = keep_parts(analysis, {g.id: subsets(g.channels, rng)[subset] for g in analysis.prunable})
    dead = dead_copy(model, removed)
    pruned = apply_plan(dead, make_plan(analyze(dead), removed))
    x = random_feeds(dead, analysis.cost.input_dims)
    for want, got in zip(run(dead, x), run(pruned, x)):
        assert np.array_equal(want, got)
    assert count(dead) == count(model) == count(pruned)  # no layer went away
    return pruned


def _sensitivity(model: onnx.ModelProto, x: dict[str, np.ndarray], want: list[np.ndarray]) -> dict[str, float]:
    """How far each output moves when float inputs change by one part in a million."""
    nudged = {k: v * np.asarray(1 + 1e-6, v.dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in x.items()}
    return {o.name: float(np.abs(a - b).max()) for o, a, b in zip(model.graph.output, want, run(model, nudged))}


# -- the merge oracle -----------------------------------------------------------------------------
# Neuron merging claims, per removed channel, whether its compensation is exact. Where it does, the
# pruned model must compute what the original did. The report's per-channel record
# ("channels": {"<n>": {"into": m | None, "exact": bool, "because": str}}) is read when present;
# a report without it claims exactness for every channel it counts as merged or folded, unless it
# notes that folded constants are exact only away from zero-padded borders.

EQUAL_KINDS_SCALED = {"shift", "mean", "addend"}  # additive per-channel values: n's = c x m's keeps a_n = c a_m


def merge_claim(outcome: dict, n: int, into: int | None = None) -> tuple[bool, str]:
    """(claimed exact, why not) for removed channel n in a group outcome's to_json().

    Without the per-channel record, a fold counts as a claim of exactness, and so does a merge into
    `into` (the kept channel n was made a multiple of; None: a merge into any channel). A merge into
    another channel matched filters that are not parallel, which no report calls exact.
    """
    channels = outcome.get("channels")
    if channels is not None:
        record = channels.get(str(n))
        if record is None:
            return False, "channel missing from the report"
        return bool(record.get("exact")), str(record.get("because", ""))
    if outcome.get("note"):
        return False, outcome["note"]
    if outcome.get("folded", 0) > 0:
        return True, ""
    if outcome.get("merged", 0) > 0:
        target = outcome.get("merged_into", {}).get(str(n))
        if into is None or target == into:
            return True, ""
        return False, f"merged into {target}, not into the parallel channel {into}"
    return False, "; ".join(outcome.get("pruned_because", {})) or "pruned only"


def merge_variant(model: onnx.ModelProto, gid: str, n: int, m: int, scale: float, kind: str = "multiple",
                  equalize: bool = False, constant: float = 0.7, shapes=None) -> onnx.ModelProto | None:
    """A copy in which channel n of group `gid` is made mergeable.

    kind "multiple": in every producer of the group, n's filter and bias are `scale` times m's (all
    producers with the same scale); with `equalize`, per-channel parameters on the way (BN, PRelu
    slopes, per-channel constants) are also set so that a_n = scale * a_m holds after them.
    kind "constant": n's filter is zero and its bias `constant` in every producer.
    None when the group has no producer with a weight, or n and m occupy different position counts.
    """
    prep = prepare(model)
    analysis = build_analysis(prep, shapes)
    g = analysis.group(gid)
    nodes = {prep.names[id(x)]: x for x in prep.graph.nodes}
    producers = [mb for mb in g.members if mb.role == "producer" and mb.input_index is not None]
    if not any(mb.kind == "weight" for mb in producers):
        return None
    members = list(producers)
    if equalize and kind == "multiple":
        members += [mb for mb in g.members if mb.role == "pass-through" and mb.input_index is not None]
    edits = []
    for mb in members:
        tensor = nodes[mb.node].inputs[mb.input_index]
        pos, index = analysis.positions(mb, g)
        pn, pm = pos[index == n], pos[index == m]
        if len(pn) != len(pm):
            return None
        edits.append((mb, tensor, pn, pm))
    for mb, tensor, pn, pm in edits:
        values = np.array(tensor.values)
        at_n = [slice(None)] * values.ndim
        at_m = list(at_n)
        at_n[mb.axis], at_m[mb.axis] = pn, pm
        at_n, at_m = tuple(at_n), tuple(at_m)
        if kind == "constant":
            values[at_n] = 0 if mb.kind == "weight" else constant
        elif mb.role == "producer" or mb.kind in EQUAL_KINDS_SCALED:
            values[at_n] = scale * values[at_m]
        else:  # multiplicative per-channel values (gamma, var, factors, slopes) are copied
            values[at_n] = values[at_m]
        tensor.values = values.astype(np.asarray(tensor.values).dtype)
    return export(prep)


def check_merge_exact(model: onnx.ModelProto, gid: str, n: int | list[int], rtol: float = 1e-5, shapes=None,
                      atol: float = 1e-6, into: int | None = None, **options) -> dict:
    """Remove channel n of group `gid` alone (or the channels of a list n) with compensate="merge";
    where the report claims every removed channel's compensation exact, assert every output matches
    the model's (tolerance as check_dead_channels).

    `into`: the kept channel n was made a multiple of (see merge_claim), None for a constant channel.
    Returns {"outcome": the group's to_json(), "claimed": bool, "because": str, "error": float | None}.
    """
    from onnxprune.api import run_pipeline
    from onnxprune.rewrite.merging import MergeOptions

    prep = prepare(model)
    analysis = build_analysis(prep, shapes)
    removed = [n] if isinstance(n, (int, np.integer)) else list(n)
    plan = make_plan(analysis, {gid: removed})
    r = run_pipeline(prepare(model), shapes, plan=plan,
                     merge=MergeOptions.from_keywords(**{"compensate": "merge", **options}))
    outcome = r.compensation.outcomes[gid].to_json()
    claims = [merge_claim(outcome, c, into) for c in removed]
    claimed = all(c for c, _ in claims)
    because = "; ".join(b for _, b in claims if b)
    result = {"outcome": outcome, "claimed": claimed, "because": because, "error": None}
    if not claimed:
        return result
    x = random_feeds(model, analysis.cost.input_dims)
    want_all = run(model, x)
    noise = _sensitivity(model, x, want_all)
    worst = 0.0
    for name, want, got in zip([o.name for o in model.graph.output], want_all, run(r.model, x)):
        assert want.shape == got.shape, f"output {name}: shape {got.shape} != {want.shape}"
        scale = float(np.abs(want).max())
        err = float(np.abs(want - got).max())
        bound = rtol * scale + atol + 10 * noise[name]
        worst = max(worst, err / max(scale, 1e-30))
        assert err <= bound, (f"output {name}: max error {err:.2e} > bound {bound:.2e} (scale {scale:.2e}) after "
                              f"merging channel {n} of group {gid}, which the report claims exact: {outcome}")
    result["error"] = worst
    return result
