"""Parameter and MAC counter over the shape-inferred graph (shared by analyze, prune and validate)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..loading import prepare
from ..graph.shapes import Shape, infer_shapes, probe_dims

NORMS = {"BatchNormalization", "InstanceNormalization", "GroupNormalization", "LayerNormalization"}
MS = "com.microsoft"  # onnxruntime's fused ops: their norms count like LayerNormalization, element-wise ones 0
MS_NORMS = {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "EmbedLayerNormalization"}


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
    if node.domain == MS:
        return out if op in MS_NORMS and out is not None else _contrib_attention_macs(node, shapes)
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


def _static(shape: Shape | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _contrib_attention_macs(node: gs.Node, shapes: dict[str, Shape]) -> int:
    """onnxruntime's attention ops, past state left out: the packed projection (Attention), then Q K^T and
    P V: batch x q_len x kv_len x (Q hidden + V hidden); 0 for other ops, unknown shapes, packed MHA inputs."""
    q, k, v = (shapes.get(node.inputs[i].name) if i < len(node.inputs) and node.inputs[i].name else None
               for i in range(3))
    if node.op not in ("Attention", "MultiHeadAttention", "GroupQueryAttention") or not _static(q) or len(q) != 3:
        return 0
    if node.op == "Attention":
        w = node.inputs[1].values.shape if isinstance(node.inputs[1], gs.Constant) else None
        if w is None or len(w) != 2:
            return 0
        sizes = [int(x) for x in node.attrs.get("qkv_hidden_sizes", [w[1] // 3] * 3)]
        return q[0] * q[1] * q[2] * w[1] + q[0] * q[1] * q[1] * (sizes[0] + sizes[2])
    if node.op == "GroupQueryAttention":  # each Q head reads one K/V head of its size
        heads, kv = int(node.attrs.get("num_heads", 1)), int(node.attrs.get("kv_num_heads", 1))
        hidden = q[2] if _static(k) else q[2] * heads // (heads + 2 * kv)
        return q[0] * q[1] * (k[1] if _static(k) else q[1]) * 2 * hidden
    if not (_static(k) and _static(v) and len(k) == len(v)):
        return 0
    length, v_hidden = (k[1], v[2]) if len(v) == 3 else (k[2], v[1] * v[3])  # [B, L, v] or [B, N, L, H]
    return q[0] * q[1] * length * (q[2] + v_hidden)


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
