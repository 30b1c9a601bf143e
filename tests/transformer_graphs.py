"""Hand-built transformer blocks, spelled as the PyTorch exporters spell them (one builder per pattern)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from handmade import Builder

S, C, H, D, FF = 6, 16, 4, 4, 24  # sequence, hidden, heads, head_dim, FFN units


def _linear(b: Builder, x: str, n_in: int, n_out: int, bias: bool = True) -> str:
    """MatMul by a [in, out] weight, plus a bias Add (the TorchScript spelling of nn.Linear)."""
    name = b.fresh("linear")
    y = b.op("MatMul", [x, b.randn([n_in, n_out], n_in, f"{name}.weight")], name=name)
    return b.op("Add", [y, b.small([n_out], f"{name}.bias")]) if bias else y


def _layer_norm(b: Builder, x: str) -> str:
    name = b.fresh("ln")
    return b.op("LayerNormalization", [x, b.uniform(0.5, 1.5, [C], f"{name}.gamma"), b.small([C], f"{name}.beta")],
                name=name, axis=-1, epsilon=1e-5)


def _heads(b: Builder, x: str, n_heads: int, target: list[int] | None = None) -> str:
    """[1, S, n*D] -> [1, n, S, D]."""
    t = b.op("Reshape", [x, b.ints(target or [1, S, n_heads, D])])
    return b.op("Transpose", [t], perm=[0, 2, 1, 3])


def _merge(b: Builder, x: str, target: list[int] | None = None) -> str:
    """[1, H, S, D] -> [1, S, H*D]."""
    t = b.op("Transpose", [x], perm=[0, 2, 1, 3])
    return b.op("Reshape", [t, b.ints(target or [1, S, H * D])])


def _attend(b: Builder, q: str, k: str, v: str, mask: bool = True) -> str:
    """softmax(q k^T / sqrt(D) + mask) v over [1, H, S, D] heads."""
    kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = b.op("Div", [b.op("MatMul", [q, kt]), b.scalar(np.sqrt(D))])
    if mask:
        causal = np.triu(np.full((S, S), -1e4, np.float32), 1).reshape(1, 1, S, S)
        scores = b.op("Add", [scores, b.const(causal)])
    return b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])


def _ffn(b: Builder, x: str) -> str:
    """Up projection, GELU in its Erf spelling, down projection."""
    up = _linear(b, x, C, FF)
    erf = b.op("Erf", [b.op("Div", [up, b.scalar(np.sqrt(2.0))])])
    gelu = b.op("Mul", [b.op("Mul", [up, b.op("Add", [erf, b.scalar(1.0)])]), b.scalar(0.5)])
    return _linear(b, gelu, FF, C)


def _block(b: Builder, x: str, attention: str) -> str:
    """Post-norm encoder block: LN(x + attn), LN(h + ffn)."""
    h = _layer_norm(b, b.op("Add", [x, attention]))
    return _layer_norm(b, b.op("Add", [h, _ffn(b, h)]))


def bert_block(seed: int = 0) -> onnx.ModelProto:
    """Separate Q/K/V MatMul+Add, constant Reshape targets, mask added to the scores, Erf GELU FFN."""
    b = Builder(seed)
    q, k, v = (_heads(b, _linear(b, "x", C, C), H) for _ in range(3))
    attn = _linear(b, _merge(b, _attend(b, q, k, v)), C, C)
    _block(b, "x", attn)
    b.nodes[-1].output[0] = "y"
    return b.model("bert_block", [1, S, C])


def inferred_dims_block(seed: int = 0) -> onnx.ModelProto:
    """Head split with [0, 0, -1, D] and merge with [0, 0, -1] (the targets transformers 5 writes)."""
    b = Builder(seed)
    q, k, v = (_heads(b, _linear(b, "x", C, C), H, [0, 0, -1, D]) for _ in range(3))
    attn = _linear(b, _merge(b, _attend(b, q, k, v), [0, 0, -1]), C, C)
    _block(b, "x", attn)
    b.nodes[-1].output[0] = "y"
    return b.model("inferred_dims_block", [1, S, C])


def fused_qkv_block(seed: int = 0) -> onnx.ModelProto:
    """One QKV projection, Reshape [1, S, 3, H, D], Transpose [2, 0, 3, 1, 4], Gather 0/1/2."""
    b = Builder(seed)
    qkv = b.op("Reshape", [_linear(b, "x", C, 3 * C), b.ints([1, S, 3, H, D])])
    qkv = b.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])
    q, k, v = (b.op("Gather", [qkv, b.const(np.int64(i))], axis=0) for i in range(3))
    attn = _linear(b, _merge(b, _attend(b, q, k, v, mask=False)), C, C)
    _block(b, "x", attn)
    b.nodes[-1].output[0] = "y"
    return b.model("fused_qkv_block", [1, S, C])


def _conv1d(b: Builder, x: str, n_in: int, n_out: int) -> str:
    """GPT-2's Conv1D: Reshape [-1, in] -> Gemm -> Reshape to a target computed from Shape ops."""
    name = b.fresh("conv1d")
    flat = b.op("Reshape", [x, b.ints([-1, n_in])])
    y = b.op("Gemm", [flat, b.randn([n_in, n_out], n_in, f"{name}.weight"), b.small([n_out], f"{name}.bias")],
             name=name)
    lead = b.op("Slice", [b.op("Shape", [x]), b.ints([0]), b.ints([-1])])
    return b.op("Reshape", [y, b.op("Concat", [lead, b.ints([n_out])], axis=0)])


def gpt2_block(seed: int = 0) -> onnx.ModelProto:
    """Conv1D QKV split in three on the channel axis, causal mask, Conv1D output projection."""
    b = Builder(seed)
    x = _layer_norm(b, "x")
    q, k, v = b.op_multi("Split", [_conv1d(b, x, C, 3 * C), b.ints([C, C, C])], 3, axis=2)
    heads = [_heads(b, t, H, [0, 0, H, D]) for t in (q, k, v)]
    attn = _conv1d(b, _merge(b, _attend(b, *heads), [0, 0, C]), C, C)
    h = b.op("Add", ["x", attn])
    up = _conv1d(b, _layer_norm(b, h), C, FF)
    gelu = b.op("Mul", [up, b.op("Sigmoid", [b.op("Mul", [up, b.scalar(1.702)])])])
    b.op("Add", [h, _conv1d(b, gelu, FF, C)], out="y")
    return b.model("gpt2_block", [1, S, C])


def _rotary(b: Builder, x: str, cos: str, sin: str) -> str:
    """x * cos + rotate_half(x) * sin on [1, n, S, D], halves of head_dim by Slice and Concat."""
    x1 = b.op("Slice", [x, b.ints([0]), b.ints([D // 2]), b.ints([-1])])
    x2 = b.op("Slice", [x, b.ints([D // 2]), b.ints([D]), b.ints([-1])])
    rotated = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
    return b.op("Add", [b.op("Mul", [x, cos]), b.op("Mul", [rotated, sin])])


def _repeat_kv(b: Builder, x: str, kv_heads: int, group: int) -> str:
    """[1, kv, S, D] -> [1, kv * group, S, D] by Unsqueeze, Expand and Reshape."""
    u = b.op("Unsqueeze", [x, b.ints([2])])
    e = b.op("Expand", [u, b.ints([1, kv_heads, group, S, D])])
    return b.op("Reshape", [e, b.ints([1, kv_heads * group, S, D])])


def _rms_norm(b: Builder, x: str) -> str:
    name = b.fresh("rms")
    ms = b.op("ReduceMean", [b.op("Pow", [x, b.scalar(2.0)]), b.ints([-1])], keepdims=1)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [ms, b.scalar(1e-6)])])])
    return b.op("Mul", [b.op("Mul", [x, inv]), b.uniform(0.5, 1.5, [C], f"{name}.weight")])


def llama_block(seed: int = 0) -> onnx.ModelProto:
    """RMSNorm, grouped-query attention (4 Q heads, 2 K/V heads), rotary halves, SwiGLU FFN."""
    b, kv = Builder(seed), 2
    x = _rms_norm(b, "x")
    angles = np.arange(S)[:, None] * (1.0 / 100 ** (np.arange(D // 2) / (D // 2)))[None]
    angles = np.concatenate([angles, angles], axis=-1).reshape(1, 1, S, D)
    cos, sin = b.const(np.cos(angles)), b.const(np.sin(angles))
    q = _rotary(b, _heads(b, _linear(b, x, C, H * D, bias=False), H), cos, sin)
    k = _rotary(b, _heads(b, _linear(b, x, C, kv * D, bias=False), kv), cos, sin)
    v = _heads(b, _linear(b, x, C, kv * D, bias=False), kv)
    k, v = _repeat_kv(b, k, kv, H // kv), _repeat_kv(b, v, kv, H // kv)
    h = b.op("Add", ["x", _linear(b, _merge(b, _attend(b, q, k, v)), C, C, bias=False)])
    n = _rms_norm(b, h)
    gate, up = _linear(b, n, C, FF, bias=False), _linear(b, n, C, FF, bias=False)
    silu = b.op("Mul", [gate, b.op("Sigmoid", [gate])])
    b.op("Add", [h, _linear(b, b.op("Mul", [silu, up]), FF, C, bias=False)], out="y")
    return b.model("llama_block", [1, S, C], opset=18)


PATTERNS: dict[str, Callable[[int], onnx.ModelProto]] = {
    f.__name__: f for f in [bert_block, inferred_dims_block, fused_qkv_block, gpt2_block, llama_block]
}
# What each pattern's prunable groups are: (channels of the group, what they are)
EXPECT: dict[str, list[tuple[int, str]]] = {
    "bert_block": [(H, "heads"), (FF, "FFN units")],
    "inferred_dims_block": [(H, "heads"), (FF, "FFN units")],
    "fused_qkv_block": [(H, "heads"), (FF, "FFN units")],
    "gpt2_block": [(H, "heads"), (FF, "FFN units")],
    "llama_block": [(2, "K/V heads, each with its group of 2 Q heads"), (FF, "SwiGLU units")],
}


def _attention_op(b: Builder, x: str, kv_heads: int, four_d: bool) -> str:
    """Q, K, V projections into the ONNX Attention op (opset 23), 3-D or 4-D, then the output projection."""
    q = _linear(b, x, C, H * D)
    k, v = _linear(b, x, C, kv_heads * D), _linear(b, x, C, kv_heads * D)
    if four_d:
        q, k, v = _heads(b, q, H, [0, 0, -1, D]), _heads(b, k, kv_heads, [0, 0, -1, D]), _heads(b, v, kv_heads, [0, 0, -1, D])
        y = b.op("Attention", [q, k, v], is_causal=1)
        return _linear(b, _merge(b, y, [0, 0, -1]), C, C)
    y = b.op("Attention", [q, k, v], q_num_heads=H, kv_num_heads=kv_heads, is_causal=1)
    return _linear(b, y, C, C)


def attention_op23(seed: int = 0) -> onnx.ModelProto:
    """The ONNX Attention op on 3-D Q/K/V (q_num_heads = kv_num_heads = 4) in a post-norm block."""
    b = Builder(seed)
    _block(b, "x", _attention_op(b, "x", H, four_d=False))
    b.nodes[-1].output[0] = "y"
    return b.model("attention_op23", [1, S, C], opset=23)


def attention_op23_gqa_4d(seed: int = 0) -> onnx.ModelProto:
    """The ONNX Attention op on 4-D heads, 4 Q heads sharing 2 K/V heads."""
    b = Builder(seed)
    _block(b, "x", _attention_op(b, "x", 2, four_d=True))
    b.nodes[-1].output[0] = "y"
    return b.model("attention_op23_gqa_4d", [1, S, C], opset=23)


PATTERNS.update(attention_op23=attention_op23, attention_op23_gqa_4d=attention_op23_gqa_4d)
EXPECT.update(attention_op23=[(H, "heads"), (FF, "FFN units")],
              attention_op23_gqa_4d=[(2, "K/V heads with their Q groups"), (FF, "FFN units")])
