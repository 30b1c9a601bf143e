"""A LLaMA-style ONNX model of about 1.8 GB with external data and random weights, for speed and memory runs.

    python tools/make_large_llama.py OUT.onnx [--layers 10] [--hidden 2048] [--heads 16] [--kv-heads 4]
        [--ffn 5632]

Spelled as the TorchScript exporter spells LLaMA: RMSNorm (Pow, ReduceMean, Add, Sqrt, Div, Mul),
q/k/v projections as MatMuls without bias, head split by Reshape [0, 0, -1, head_dim], rotary halves
by Slice/Neg/Concat, grouped-query attention by Unsqueeze -> Expand -> Reshape, a causal mask added
to the scores, SwiGLU FFN. The input is the token embeddings x [1, sequence, hidden] (sequence
dynamic). Only numpy and onnx are needed; nothing is committed (the file is regenerated).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Graph:
    """Nodes and weights of the model being written."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.count += 1
        name = name or f"/{op_type}_{self.count}"
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, value: np.ndarray, name: str) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, shape: tuple[int, int], name: str) -> str:
        w = self.rng.standard_normal(shape, dtype=np.float32)
        w *= np.float32(1 / np.sqrt(shape[0]))
        return self.const(w, name)


def rms_norm(g: Graph, x: str, hidden: int, name: str) -> str:
    ms = g.op("ReduceMean", [g.op("Pow", [x, g.const(np.float32(2), f"{name}.two")])], keepdims=1, axes=[-1])
    inv = g.op("Div", [g.const(np.float32(1), f"{name}.one"),
                       g.op("Sqrt", [g.op("Add", [ms, g.const(np.float32(1e-6), f"{name}.eps")])])])
    scale = np.ones(hidden, np.float32) + g.rng.standard_normal(hidden, dtype=np.float32) * 0.02
    return g.op("Mul", [g.op("Mul", [x, inv]), g.const(scale, f"{name}.weight")])


def heads(g: Graph, x: str, d: int, name: str) -> str:
    t = g.op("Reshape", [x, g.const(np.array([0, 0, -1, d], np.int64), f"{name}.split")])
    return g.op("Transpose", [t], perm=[0, 2, 1, 3])


def rotary(g: Graph, x: str, cos: str, sin: str, d: int, name: str) -> str:
    ax = g.const(np.array([3], np.int64), f"{name}.axis")
    x1 = g.op("Slice", [x, g.const(np.array([0], np.int64), f"{name}.s0"),
                        g.const(np.array([d // 2], np.int64), f"{name}.s1"), ax])
    x2 = g.op("Slice", [x, g.const(np.array([d // 2], np.int64), f"{name}.s2"),
                        g.const(np.array([d], np.int64), f"{name}.s3"), ax])
    rot = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rot, sin])])


def repeat_kv(g: Graph, x: str, shape_of: str, kv: int, rep: int, d: int, name: str) -> str:
    """[B, kv, S, D] -> [B, kv * rep, S, D]; batch and sequence read from Shape as TorchScript does."""
    dims = g.op("Shape", [shape_of])
    b = g.op("Slice", [dims, g.const(np.array([0], np.int64), f"{name}.b0"), g.const(np.array([1], np.int64), f"{name}.b1")])
    s = g.op("Slice", [dims, g.const(np.array([2], np.int64), f"{name}.q0"), g.const(np.array([3], np.int64), f"{name}.q1")])
    kvc = g.const(np.array([kv], np.int64), f"{name}.kv")
    expand = g.op("Concat", [b, kvc, g.const(np.array([rep], np.int64), f"{name}.rep"), s,
                             g.const(np.array([d], np.int64), f"{name}.d")], axis=0)
    e = g.op("Expand", [g.op("Unsqueeze", [x, g.const(np.array([2], np.int64), f"{name}.ax")]), expand])
    target = g.op("Concat", [b, g.const(np.array([kv * rep], np.int64), f"{name}.h"), s,
                             g.const(np.array([d], np.int64), f"{name}.d2")], axis=0)
    return g.op("Reshape", [e, target])


def layer(g: Graph, x: str, i: int, a: argparse.Namespace, cos: str, sin: str, mask: str) -> str:
    p, d = f"layers.{i}", a.hidden // a.heads
    n = rms_norm(g, x, a.hidden, f"{p}.input_layernorm")
    q = rotary(g, heads(g, g.op("MatMul", [n, g.weight((a.hidden, a.hidden), f"{p}.q_proj.weight")],
                                  name=f"/{p}/q_proj/MatMul"), d, f"{p}.q"), cos, sin, d, f"{p}.qr")
    k = g.op("MatMul", [n, g.weight((a.hidden, a.kv_heads * d), f"{p}.k_proj.weight")], name=f"/{p}/k_proj/MatMul")
    v = g.op("MatMul", [n, g.weight((a.hidden, a.kv_heads * d), f"{p}.v_proj.weight")], name=f"/{p}/v_proj/MatMul")
    k = rotary(g, heads(g, k, d, f"{p}.k"), cos, sin, d, f"{p}.kr")
    v = heads(g, v, d, f"{p}.v")
    rep = a.heads // a.kv_heads
    k, v = repeat_kv(g, k, k, a.kv_heads, rep, d, f"{p}.rk"), repeat_kv(g, v, v, a.kv_heads, rep, d, f"{p}.rv")
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          g.const(np.float32(1 / np.sqrt(d)), f"{p}.scale")])
    probs = g.op("Softmax", [g.op("Add", [scores, mask])], axis=-1)
    merged = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]),
                              g.const(np.array([0, 0, -1], np.int64), f"{p}.merge")])
    h = g.op("Add", [x, g.op("MatMul", [merged, g.weight((a.hidden, a.hidden), f"{p}.o_proj.weight")],
                              name=f"/{p}/o_proj/MatMul")])
    n = rms_norm(g, h, a.hidden, f"{p}.post_attention_layernorm")
    gate = g.op("MatMul", [n, g.weight((a.hidden, a.ffn), f"{p}.gate_proj.weight")], name=f"/{p}/mlp/gate_proj/MatMul")
    up = g.op("MatMul", [n, g.weight((a.hidden, a.ffn), f"{p}.up_proj.weight")], name=f"/{p}/mlp/up_proj/MatMul")
    act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
    return g.op("Add", [h, g.op("MatMul", [act, g.weight((a.ffn, a.hidden), f"{p}.down_proj.weight")],
                                name=f"/{p}/mlp/down_proj/MatMul")])


def build(a: argparse.Namespace) -> onnx.ModelProto:
    g, d = Graph(a.seed), a.hidden // a.heads
    seq = g.op("Slice", [g.op("Shape", ["x"]), g.const(np.array([1], np.int64), "seq.0"),
                         g.const(np.array([2], np.int64), "seq.1")])
    pos = g.op("Cast", [g.op("Range", [g.const(np.int64(0), "pos.0"), g.op("Squeeze", [seq]),
                                       g.const(np.int64(1), "pos.1")])], to=TensorProto.FLOAT)
    inv = (1.0 / 10000 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    f = g.op("Mul", [g.op("Unsqueeze", [pos, g.const(np.array([1], np.int64), "pos.ax")]), g.const(inv, "inv_freq")])
    emb = g.op("Concat", [f, f], axis=-1)
    four = g.const(np.array([0, 1], np.int64), "rope.ax")
    cos, sin = g.op("Unsqueeze", [g.op("Cos", [emb]), four]), g.op("Unsqueeze", [g.op("Sin", [emb]), four])
    ones = g.op("ConstantOfShape", [g.op("Concat", [seq, seq], axis=0)],
                value=numpy_helper.from_array(np.array([1.0], np.float32)))
    above = g.op("Sub", [ones, g.op("Trilu", [ones], upper=0)])  # 1 above the diagonal: the future
    mask = g.op("Mul", [above, g.const(np.float32(-1e9), "mask.min")])
    x = "x"
    for i in range(a.layers):
        x = layer(g, x, i, a, cos, sin, mask)
    out = rms_norm(g, x, a.hidden, "norm")
    g.nodes.append(helper.make_node("Identity", [out], ["last_hidden_state"], name="/output"))
    graph = helper.make_graph(g.nodes, "large_llama",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "sequence", a.hidden])],
                              [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                             [1, "sequence", a.hidden])], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                             producer_name="onnxprune tools/make_large_llama.py")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = build(a)
    out = Path(a.out)
    onnx.save(model, out, save_as_external_data=True, all_tensors_to_one_file=True, location=out.name + ".data",
              size_threshold=1024)
    size = (out.parent / (out.name + ".data")).stat().st_size
    print(f"wrote {out} (+ {out.name}.data, {size / 2**30:.2f} GiB, {a.layers} layers)")


if __name__ == "__main__":
    main()
