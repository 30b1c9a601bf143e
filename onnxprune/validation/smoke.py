"""A smoke run: the rewritten model must load and run in onnxruntime with the original's output shapes."""
from __future__ import annotations

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..runtime.feeds import random_inputs
from ..runtime.providers import open_session, runtime

NO_RUNTIME = ("the check run needs onnxruntime, which is not installed: pip install 'onnxprune[cpu]', or "
              "--no-verify to write without the check")


def random_feeds(model: onnx.ModelProto, dims: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at concrete shapes, typed as the model declares them."""
    inits = {t.name for t in model.graph.initializer}
    return random_inputs({vi.name: onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
                          for vi in model.graph.input if vi.name not in inits}, dims, seed)


def smoke_check(original: str, pruned: str, header: onnx.ModelProto,
                dims: dict[str, tuple[int, ...]]) -> None:
    """Run both models on one random input; refuse a pruned model that fails or changes output shapes.

    `header` is any proto with the pruned model's inputs and outputs (the in-memory model, so a
    written file is not parsed twice).
    """
    try:  # a missing runtime is not a model that fails to run: say what is missing and how to go without
        runtime()
    except OnnxPruneError:
        raise OnnxPruneError(NO_RUNTIME) from None
    feeds = random_feeds(header, dims)
    try:
        want = open_session(original, "cpu").session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
        raise OnnxPruneError(f"the original model does not run in onnxruntime at {dims} "
                             f"(fix shapes with --shape): {str(exc).splitlines()[0]}") from None
    try:
        got = open_session(pruned, "cpu").session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        raise OnnxPruneError(f"the pruned model does not run in onnxruntime: {str(exc).splitlines()[0]}") from None
    for out, a, b in zip(header.graph.output, want, got):
        if a.shape != b.shape:
            raise OnnxPruneError(f"the pruned model changes output '{out.name}' from {a.shape} to {b.shape}")
        if np.issubdtype(b.dtype, np.floating) and not np.isfinite(b).all() and np.isfinite(a).all():
            raise OnnxPruneError(f"the pruned model's output '{out.name}' is not finite")
