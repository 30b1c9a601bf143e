"""Parameter and MAC counter over the shape-inferred graph (shared by analyze, prune and validate)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..loading import prepare
from ..graph.shapes import Shape, infer_shapes, probe_dims

NORMS = {"BatchNormalization", "InstanceNormalization", "GroupNormalization", "LayerNormalization"}


@dataclass
class Cost:
    """Totals and per-node MACs / per-initializer parameter counts for one input shape."""

    params: int
    macs: int
    node_macs: dict[str, int] = field(default_factory=dict)
    param_sizes: dict[str, int] = field(default_factory=dict)
    input_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)


def resolve_input_dims(graph: gs.Graph, given: dict[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes: static dims kept, then the given ones; 1 for a dynamic batch, 224 elsewhere."""
    return probe_dims(graph, 0, given or {})


def _macs(node: gs.Node, shapes: dict[str, Shape]) -> int:
    """Multiply-accumulates of one node, 0 where shapes are unknown or the op is free."""
    def vol(t: gs.Tensor) -> int | None:
        s = shapes.get(t.name)
        return math.prod(s) if s is not None and all(isinstance(d, int) for d in s) else None

    op, out = node.op, vol(node.outputs[0]) if node.outputs else None
    w = node.inputs[1].values.shape if len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant) else None
    if op == "Conv" and w is not None and out is not None:
        return out * math.prod(w[1:])
    if op == "ConvTranspose" and w is not None and vol(node.inputs[0]) is not None:
        return vol(node.inputs[0]) * math.prod(w[1:])
    if op in ("Gemm", "MatMul") and out is not None:
        a = shapes.get(node.inputs[0].name)
        if a and isinstance(a[-1], int):
            k = a[0] if op == "Gemm" and node.attrs.get("transA", 0) else a[-1]
            return out * int(k)
    if op == "Attention":
        return _attention_macs(node, shapes)
    if op in NORMS and out is not None:
        return out
    if op in ("MaxPool", "AveragePool", "LpPool") and out is not None:
        return out * math.prod(node.attrs.get("kernel_shape", [1]))
    if op.startswith("Global") and vol(node.inputs[0]) is not None:
        return vol(node.inputs[0])
    return 0


def _attention_macs(node: gs.Node, shapes: dict[str, Shape]) -> int:
    """Q K^T and P V of the ONNX Attention op: per batch, heads x q_len x kv_len x (qk + v head sizes)."""
    q, k, v = (shapes.get(t.name) for t in node.inputs[:3])
    if not all(s is not None and all(isinstance(d, int) for d in s) for s in (q, k, v)):
        return 0
    if len(q) == 4:  # [B, H, S, D]
        return q[0] * q[1] * q[2] * k[2] * (q[3] + v[3])
    heads = int(node.attrs.get("q_num_heads", 1))
    kv_heads = int(node.attrs.get("kv_num_heads", heads))
    return q[0] * q[1] * k[1] * heads * (q[2] // heads + v[2] // kv_heads)


def count_cost(graph: gs.Graph, opset_imports, input_dims: dict[str, tuple[int, ...]] | None = None,
               names: dict[int, str] | None = None) -> Cost:
    """Count parameters (floating-point constants) and MACs at concrete input shapes."""
    dims = resolve_input_dims(graph, input_dims)
    shapes = infer_shapes(graph, opset_imports, dims)
    node_macs = {}
    for i, node in enumerate(graph.nodes):
        name = (names or {}).get(id(node)) or node.name or f"{node.op}#{i}"
        node_macs[name] = _macs(node, shapes)
    param_sizes = {t.name: int(t.values.size) for t in graph.tensors().values()
                   if isinstance(t, gs.Constant) and np.issubdtype(t.values.dtype, np.floating)}
    return Cost(sum(param_sizes.values()), sum(node_macs.values()), node_macs, param_sizes, dims)


def count_model_cost(model, input_dims: dict[str, tuple[int, ...]] | None = None) -> Cost:
    """count_cost of a model file or proto (loaded and prepared as for pruning)."""
    prep = prepare(model)
    return count_cost(prep.graph, list(prep.template.opset_import), input_dims, prep.names)
