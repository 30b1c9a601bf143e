"""The dead-channel oracle: channels made exactly dead can be removed without changing any output."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune import apply_plan, make_plan
from onnxprune.analysis.analyze import build_analysis
from onnxprune.analysis.cost import resolve_input_dims
from onnxprune.loading import export, prepare
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
    return export(prep)


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
    """Prune dead channels and assert every output is unchanged; return the pruned model."""
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


def _sensitivity(model: onnx.ModelProto, x: dict[str, np.ndarray], want: list[np.ndarray]) -> dict[str, float]:
    """How far each output moves when float inputs change by one part in a million."""
    nudged = {k: v * np.asarray(1 + 1e-6, v.dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in x.items()}
    return {o.name: float(np.abs(a - b).max()) for o, a, b in zip(model.graph.output, want, run(model, nudged))}
