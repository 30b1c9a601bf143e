"""Random valid CNN ONNX graphs for property-based tests (hypothesis strategies -> onnx.ModelProto).

`cnn_models()` draws a small graph: a stem Conv, up to a handful of blocks from the vocabulary
below, and a head. The structure comes from hypothesis draws (so failures shrink to few blocks);
the weights come from a numpy generator seeded by a drawn integer. Every op is written in the form
its opset wants (Split sizes as attribute before 13, as input after; Squeeze axes likewise; ReduceMean
axes as input from 18; Resize's roi input required before 13; HardSwish spelled before 14).

Vocabulary: Conv (bias or not, pads, strides, dilations, auto_pad), depthwise / grouped Conv,
BatchNormalization, Relu / LeakyRelu / Sigmoid / HardSigmoid / HardSwish / Tanh / Clip / PRelu /
SiLU (Mul(x, Sigmoid(x))), residual Add, Concat / Split / Slice on the channel axis, squeeze-
excitation, MaxPool / AveragePool / GlobalAveragePool, Resize (nearest, scales), ConvTranspose
(stride 1 and 2), Pad (constant zero / nonzero, edge, reflect), per-channel Add / Mul / Sub / Div
constants, Transpose and Reshape round trips, Flatten -> Gemm and GAP -> Flatten -> Gemm heads,
a weight shared by two Convs, weights as Constant nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper

import handmade

OPSETS = list(range(11, 22))
IN_SIZES = [(8, 8), (8, 12), (12, 12), (16, 16)]
MAX_HW = 32
MAX_NODES = 14  # blocks stop being added once the graph holds this many (non-Constant) nodes


@dataclass
class T:
    """A 4-D NCHW tensor of the graph being built."""

    name: str
    c: int
    h: int
    w: int


class Gen:
    """Builds one graph from hypothesis draws; weights from the builder's seeded rng."""

    def __init__(self, draw, opset: int, seed: int, const_mode: str):
        self.draw = draw
        self.opset = opset
        self.b = handmade.Builder(seed)
        self.const_mode = const_mode  # "init", "node" or "mixed"
        self.shared: list[tuple[str, tuple[int, ...]]] = []  # conv weights another conv may reuse
        self.log: list[str] = []

    # -- helpers ------------------------------------------------------------
    def d(self, strategy):
        return self.draw(strategy)

    def choice(self, options):
        return self.draw(st.sampled_from(list(options)))

    def _mode(self) -> None:
        if self.const_mode == "mixed":
            self.b.constants = self.d(st.booleans())
        else:
            self.b.constants = self.const_mode == "node"

    def const(self, value, name: str | None = None) -> str:
        self._mode()
        return self.b.const(value, name)

    def ints(self, values) -> str:
        self._mode()
        return self.b.ints(values)

    def randn(self, shape, fan_in: int, name: str) -> str:
        self._mode()
        return self.b.randn(shape, fan_in, name)

    def small(self, shape, name: str) -> str:
        self._mode()
        return self.b.small(shape, name)

    def uniform(self, lo, hi, shape, name: str) -> str:
        self._mode()
        return self.b.uniform(lo, hi, shape, name)

    def op(self, op_type: str, inputs, **attrs) -> str:
        return self.b.op(op_type, inputs, **attrs)

    def nodes(self) -> int:
        return sum(n.op_type != "Constant" for n in self.b.nodes)

    def width(self, lo: int = 4, hi: int = 16) -> int:
        return self.d(st.integers(lo, hi))

    def shape(self, name: str) -> tuple[int, ...]:
        """The inferred shape of a tensor of the graph built so far."""
        model = self._model([name])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        for v in inferred.graph.output:
            if v.name == name:
                return tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        raise AssertionError(f"no shape for {name}")

    def t(self, name: str) -> T:
        s = self.shape(name)
        assert len(s) == 4 and all(v > 0 for v in s), (name, s)
        return T(name, s[1], s[2], s[3])

    def _model(self, outputs, in_shape=None) -> onnx.ModelProto:
        graph = helper.make_graph(
            list(self.b.nodes), "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.in_shape))],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            initializer=list(self.b.inits))
        opsets = [helper.make_opsetid("", self.opset)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune-fuzz",
                                 ir_version=helper.find_min_ir_version_for(opsets))

    # -- layers -------------------------------------------------------------
    def conv(self, x: T, cout: int | None = None, *, k: int | None = None, same: bool = False, group: int = 1,
             bias: bool | None = None, weight: str | None = None) -> T:
        """A Conv with drawn kernel, bias, padding, stride and dilation (same=True: keeps H, W)."""
        cout = cout or self.width()
        k = k if k is not None else self.choice([1, 3] if min(x.h, x.w) >= 3 else [1])
        stride = dil = 1
        if not same:
            if k == 3 and min(x.h, x.w) >= 8 and self.d(st.integers(0, 3)) == 0:
                dil = 2
            if min(x.h, x.w) >= 6 and self.d(st.integers(0, 3)) == 0:
                stride = 2
        name = self.b.fresh("conv")
        if weight is None:
            weight = self.randn([cout, x.c // group, k, k], x.c // group * k * k, f"{name}.weight")
        bias = self.d(st.booleans()) if bias is None else bias
        ins = [x.name, weight] + ([self.small([cout], f"{name}.bias")] if bias else [])
        attrs = dict(kernel_shape=[k, k])
        ext = dil * (k - 1)
        pad = "same" if same else self.choice(["same", "same", "zero", "random", "SAME_UPPER", "SAME_LOWER", "VALID"])
        if pad in ("VALID", "zero") and min(x.h, x.w) - ext < 2:
            pad = "same"
        if pad.startswith("SAME_") and dil > 1:  # onnxruntime: no dilation with SAME auto_pad
            pad = "same"
        if pad == "same":
            attrs["pads"] = [ext // 2, ext // 2, ext - ext // 2, ext - ext // 2]
        elif pad == "random":
            attrs["pads"] = [self.d(st.integers(0, max(ext, 1))) for _ in range(4)]
        elif pad == "zero":
            if self.d(st.booleans()):
                attrs["pads"] = [0, 0, 0, 0]
        else:
            attrs["auto_pad"] = pad
        if stride > 1 or self.d(st.integers(0, 4)) == 0:
            attrs["strides"] = [stride, stride]
        if dil > 1 or self.d(st.integers(0, 4)) == 0:
            attrs["dilations"] = [dil, dil]
        if group > 1 or self.d(st.integers(0, 4)) == 0:
            attrs["group"] = group
        out = self.b.op("Conv", ins, name=name, **attrs)
        if group == 1:
            self.shared.append((weight, (x.c, cout, k)))
        self.log.append(f"Conv({x.c}->{cout}, k{k}, {pad}, s{stride}, d{dil}, g{group}, bias={bias})")
        return self.t(out)

    def act(self, x: T, kind: str | None = None) -> T:
        kind = kind or self.choice(["Relu", "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                                    "Clip", "PRelu", "SiLU"])
        self.log.append(kind)
        if kind == "LeakyRelu":
            out = self.op("LeakyRelu", [x.name], alpha=self.choice([0.01, 0.1, 0.2]))
        elif kind == "HardSigmoid":
            out = self.op("HardSigmoid", [x.name], alpha=0.2, beta=0.5)
        elif kind == "HardSwish":
            if self.opset >= 14 and self.d(st.booleans()):
                out = self.op("HardSwish", [x.name])
            else:  # x * HardSigmoid(x) with HardSwish's constants
                out = self.op("Mul", [x.name, self.op("HardSigmoid", [x.name], alpha=1 / 6, beta=0.5)])
        elif kind == "Clip":
            lo, hi = self.choice([(0.0, 6.0), (-1.0, 1.0), (0.0, None), (None, 2.0)])
            ins = [x.name, self.const(np.float32(lo)) if lo is not None else ""]
            if hi is not None:
                ins.append(self.const(np.float32(hi)))
            out = self.op("Clip", ins)
        elif kind == "PRelu":
            per_channel = self.d(st.booleans())
            shape = [x.c, 1, 1] if per_channel else [1]
            name = self.b.fresh("prelu")
            out = self.b.op("PRelu", [x.name, self.uniform(0.05, 0.3, shape, f"{name}.slope")], name=name)
        elif kind == "SiLU":
            sig = self.op("Sigmoid", [x.name])
            out = self.op("Mul", [x.name, sig] if self.d(st.booleans()) else [sig, x.name])
        else:
            out = self.op(kind, [x.name])
        return T(out, x.c, x.h, x.w)

    def maybe_act(self, x: T) -> T:
        return self.act(x) if self.d(st.booleans()) else x

    def bn(self, x: T) -> T:
        name = self.b.fresh("bn")
        ins = [x.name, self.uniform(0.5, 1.5, [x.c], f"{name}.gamma"), self.small([x.c], f"{name}.beta"),
               self.small([x.c], f"{name}.mean"), self.uniform(0.5, 2.0, [x.c], f"{name}.var")]
        self.log.append("BatchNormalization")
        return T(self.b.op("BatchNormalization", ins, name=name, epsilon=self.choice([1e-5, 1e-3])), x.c, x.h, x.w)

    # -- blocks -------------------------------------------------------------
    def block_conv(self, x: T) -> T:
        h = self.conv(x)
        if self.d(st.booleans()):
            h = self.bn(h)
        return self.maybe_act(h)

    def block_bn(self, x: T) -> T:
        return self.bn(x)

    def block_act(self, x: T) -> T:
        return self.act(x)

    def block_residual(self, x: T) -> T:
        h = self.conv(x, x.c, same=True)
        if self.d(st.booleans()):
            h = self.bn(h)
        if self.d(st.booleans()):
            h = self.conv(self.act(h), x.c, same=True)
        ins = [x.name, h.name] if self.d(st.booleans()) else [h.name, x.name]
        self.log.append("Add(residual)")
        out = T(self.op("Add", ins), x.c, x.h, x.w)
        return self.maybe_act(out)

    def block_concat(self, x: T) -> T:
        kind = self.choice(["two_convs", "self_and_conv", "self_twice"])
        if kind == "two_convs":
            parts = [self.maybe_act(self.conv(x, same=True)), self.conv(x, same=True)]
        elif kind == "self_and_conv":
            parts = [x, self.conv(self.act(x), same=True)]
        else:
            parts = [x, x]
        if self.d(st.booleans()):
            parts.reverse()
        axis = self.choice([1, -3])
        self.log.append(f"Concat({kind}, axis={axis})")
        out = self.op("Concat", [p.name for p in parts], axis=axis)
        return T(out, sum(p.c for p in parts), x.h, x.w)

    def block_split(self, x: T) -> T:
        if x.c < 4:
            return self.block_conv(x)
        n = self.choice([2, 3]) if x.c >= 6 else 2
        equal = x.c % n == 0 and self.d(st.booleans())
        if equal:
            sizes = [x.c // n] * n
        else:
            cuts = sorted(self.d(st.lists(st.integers(1, x.c - 1), min_size=n - 1, max_size=n - 1, unique=True)))
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, x.c])]
        name = self.b.fresh("split")
        outs = [f"{name}_{i}" for i in range(len(sizes))]
        attrs = {"axis": self.choice([1, -3])}
        ins = [x.name]
        if self.opset < 13:
            if not equal or self.d(st.booleans()):
                attrs["split"] = sizes
        elif self.opset >= 18 and equal and self.d(st.booleans()):
            attrs["num_outputs"] = len(sizes)
        else:
            ins.append(self.ints(sizes))
        self.b.nodes.append(helper.make_node("Split", ins, outs, name=name, **attrs))
        parts = []
        for o, c in zip(outs, sizes):
            p = T(o, c, x.h, x.w)
            what = self.choice(["id", "act", "conv"])
            parts.append(p if what == "id" else self.act(p) if what == "act" else self.conv(p, same=True))
        self.log.append(f"Split({sizes})")
        if len({p.c for p in parts}) == 1 and self.d(st.booleans()):
            out = self.op("Add" if len(parts) == 2 else "Sum", [p.name for p in parts])
            return T(out, parts[0].c, x.h, x.w)
        out = self.op("Concat", [p.name for p in parts], axis=1)
        return T(out, sum(p.c for p in parts), x.h, x.w)

    def _slice(self, x: T, start: int, end: int) -> T:
        ins = [x.name, self.ints([start]), self.ints([end]), self.ints([self.choice([1, -3])])]
        if self.d(st.booleans()):
            ins.append(self.ints([1]))
        return T(self.op("Slice", ins), end - start, x.h, x.w)

    def block_slice(self, x: T) -> T:
        if x.c < 3:
            return self.block_conv(x)
        start = self.d(st.integers(0, x.c - 2))
        end = self.d(st.integers(start + 1, x.c))
        self.log.append(f"Slice[{start}:{end}]")
        a = self._slice(x, start, end)
        kind = self.choice(["alone", "concat_rest"])
        if kind == "concat_rest" and end < x.c:
            b = self.maybe_act(self._slice(x, end, x.c))
            self.log.append("Concat(slices)")
            return T(self.op("Concat", [a.name, b.name], axis=1), a.c + b.c, x.h, x.w)
        return a

    def block_depthwise(self, x: T) -> T:
        mult = self.choice([1, 1, 2])
        h = self.conv(x, x.c * mult, k=3, same=True, group=x.c)
        if self.d(st.booleans()):
            h = self.bn(h)
        return self.maybe_act(h)

    def block_grouped(self, x: T) -> T:
        divisors = [g for g in range(2, x.c + 1) if x.c % g == 0 and g < x.c]
        if not divisors:
            return self.block_conv(x)
        g = self.choice(divisors)
        cout = g * self.d(st.integers(1, max(1, 16 // g)))
        return self.maybe_act(self.conv(x, cout, same=self.d(st.booleans()), group=g))

    def block_se(self, x: T) -> T:
        s = T(self.op("GlobalAveragePool", [x.name]), x.c, 1, 1)
        r = max(2, x.c // 4)
        s = self.conv(self.act(self.conv(s, r, k=1, same=True), "Relu"), x.c, k=1, same=True)
        gate = self.choice(["Sigmoid", "HardSigmoid"])
        g = self.op(gate, [s.name])
        self.log.append(f"SE({gate})")
        out = self.op("Mul", [x.name, g] if self.d(st.booleans()) else [g, x.name])
        return T(out, x.c, x.h, x.w)

    def block_pool(self, x: T) -> T:
        kind = self.choice(["MaxPool", "AveragePool", "GlobalAveragePool"] if min(x.h, x.w) >= 4 else
                           ["MaxPool", "AveragePool"])
        self.log.append(kind)
        if kind == "GlobalAveragePool":
            return self.t(self.op(kind, [x.name]))
        if min(x.h, x.w) >= 4 and self.d(st.booleans()):
            attrs = dict(kernel_shape=[2, 2], strides=[2, 2])
        else:
            attrs = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
            if kind == "AveragePool":
                attrs["count_include_pad"] = self.choice([0, 1])
        return self.t(self.op(kind, [x.name], **attrs))

    def block_resize(self, x: T) -> T:
        if max(x.h, x.w) * 2 > MAX_HW:
            return self.block_pool(x)
        scales = self.const(np.array([1, 1, 2, 2], np.float32))
        roi = self.const(np.array([], np.float32)) if self.opset < 13 else ""
        self.log.append("Resize(nearest, x2)")
        out = self.op("Resize", [x.name, roi, scales], mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return T(out, x.c, 2 * x.h, 2 * x.w)

    def block_convtranspose(self, x: T) -> T:
        cout = self.width()
        stride = 2 if max(x.h, x.w) * 2 <= MAX_HW and self.d(st.booleans()) else 1
        name = self.b.fresh("convt")
        k = 3 if stride == 1 else self.choice([2, 3])
        ins = [x.name, self.randn([x.c, cout, k, k], x.c * k * k, f"{name}.weight")]
        if self.d(st.booleans()):
            ins.append(self.small([cout], f"{name}.bias"))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride])
        if k == 3:
            attrs["pads"] = [1, 1, 1, 1]
            if stride == 2:
                attrs["output_padding"] = [1, 1]
        self.log.append(f"ConvTranspose({x.c}->{cout}, k{k}, s{stride}, bias={len(ins) == 3})")
        h = self.t(self.b.op("ConvTranspose", ins, name=name, **attrs))
        return self.maybe_act(h)

    def block_pad(self, x: T) -> T:
        mode = self.choice(["zero", "nonzero", "edge", "reflect"])
        if mode == "reflect" and min(x.h, x.w) < 2:
            mode = "edge"
        most = 1 if mode == "reflect" and min(x.h, x.w) <= 2 else 2
        p = [self.d(st.integers(0, most)) for _ in range(4)]  # top, left, bottom, right
        if not any(p):
            p[0] = 1
        self.log.append(f"Pad({mode}, {p})")
        attrs = {"mode": "constant" if mode in ("zero", "nonzero") else mode}
        if self.opset >= 18 and self.d(st.booleans()):
            ins = [x.name, self.ints([p[0], p[1], p[2], p[3]])]
            axes = self.ints(self.choice([[2, 3], [-2, -1]]))
        else:
            ins = [x.name, self.ints([0, 0, p[0], p[1], 0, 0, p[2], p[3]])]
            axes = None
        if mode == "nonzero":
            ins.append(self.const(np.float32(self.choice([0.5, -1.0, 2.0]))))
        elif mode == "zero" and (axes or self.d(st.booleans())):
            ins.append(self.const(np.float32(0.0)))
        if axes:
            if len(ins) == 2:
                ins.append("")
            ins.append(axes)
        out = self.op("Pad", ins, **attrs)
        return T(out, x.c, x.h + p[0] + p[2], x.w + p[1] + p[3])

    def block_perchannel(self, x: T) -> T:
        kind = self.choice(["Add", "Mul", "Sub", "Div"])
        shape = self.choice([[1, x.c, 1, 1], [x.c, 1, 1]])
        name = self.b.fresh(kind.lower())
        if kind in ("Mul", "Div"):
            values = self.b.rng.uniform(0.5, 1.5, shape)
            if self.d(st.booleans()):  # some negative factors
                values *= self.b.rng.choice([-1.0, 1.0], shape)
            c = self.const(values, f"{name}.c")
        else:
            c = self.small(shape, f"{name}.c")
        first = kind in ("Add", "Mul", "Sub") and self.d(st.booleans())  # c - x, c + x, c * x
        self.log.append(f"{kind}(per-channel const{', const first' if first else ''})")
        out = self.b.op(kind, [c, x.name] if first else [x.name, c], name=name)
        return T(out, x.c, x.h, x.w)

    def block_roundtrip(self, x: T) -> T:
        kind = self.choice(["nhwc", "reshape", "reshape_special"])
        self.log.append(f"roundtrip({kind})")
        if kind == "nhwc":
            h = self.op("Transpose", [x.name], perm=[0, 2, 3, 1])
            what = self.choice(["none", "relu", "mul"])
            if what == "relu":
                h = self.op("Relu", [h])
            elif what == "mul":
                h = self.op("Mul", [h, self.uniform(0.5, 1.5, [x.c], self.b.fresh("nhwc_scale"))])
            out = self.op("Transpose", [h], perm=[0, 3, 1, 2])
        else:
            flat = [1, x.c, x.h * x.w] if kind == "reshape" else [0, 0, -1]
            back = [1, x.c, x.h, x.w] if kind == "reshape" else [0, 0, x.h, x.w]
            h = self.op("Reshape", [x.name, self.ints(flat)])
            if self.d(st.booleans()):
                h = self.op("Relu", [h])
            out = self.op("Reshape", [h, self.ints(back)])
        return T(out, x.c, x.h, x.w)

    def block_shared(self, x: T) -> T:
        """Two Convs reading one weight initializer: in sequence (C->C twice) or a reused earlier weight."""
        reuse = [w for w, (cin, cout, k) in self.shared if cin == x.c and cout == x.c and k in (1, 3)]
        if reuse and self.d(st.booleans()):
            w = self.choice(reuse)
            self.log.append(f"Conv(shared earlier weight {w})")
            k = next(k for name, (_, _, k) in self.shared if name == w)
            return self.maybe_act(self.conv(x, x.c, k=k, same=True, weight=w))
        name = self.b.fresh("shared")
        k = self.choice([1, 3])
        w = self.randn([x.c, x.c, k, k], x.c * k * k, f"{name}.weight")
        self.log.append("twin Convs sharing a weight")
        a = self.conv(x, x.c, k=k, same=True, weight=w)
        if self.d(st.booleans()):  # sequence
            return self.conv(self.act(a, "Relu"), x.c, k=k, same=True, weight=w)
        b = self.conv(self.act(x, "Relu"), x.c, k=k, same=True, weight=w)
        return T(self.op("Add", [a.name, b.name]), x.c, x.h, x.w)

    BLOCKS = ["conv", "conv", "bn", "act", "residual", "concat", "split", "slice", "depthwise", "grouped", "se",
              "pool", "resize", "convtranspose", "pad", "perchannel", "roundtrip", "shared"]

    # -- heads --------------------------------------------------------------
    def gemm(self, x: str, n_in: int, out: str) -> str:
        n_out = self.d(st.integers(2, 10))
        name = self.b.fresh("gemm")
        trans_b = self.d(st.booleans())
        shape = [n_out, n_in] if trans_b else [n_in, n_out]
        ins = [x, self.randn(shape, n_in, f"{name}.weight")]
        if self.d(st.integers(0, 3)):
            ins.append(self.small([n_out], f"{name}.bias"))
        attrs = {"transB": int(trans_b)} if trans_b or self.d(st.booleans()) else {}
        if self.d(st.integers(0, 3)) == 0:
            attrs["alpha"] = 0.5
        return self.b.op("Gemm", ins, out=out, name=name, **attrs)

    def head(self, x: T) -> list[str]:
        options = ["conv1x1", "gap_gemm", "identity", "reduce_squeeze"]
        if x.c * x.h * x.w <= 1024:
            options.append("flatten_gemm")
        kind = self.choice(options)
        self.log.append(f"head({kind})")
        if kind == "conv1x1":
            name = self.b.fresh("conv")
            cout = self.d(st.integers(2, 6))
            self.b.op("Conv", [x.name, self.randn([cout, x.c, 1, 1], x.c, f"{name}.weight"),
                               self.small([cout], f"{name}.bias")], out="y", name=name, kernel_shape=[1, 1])
        elif kind == "identity":
            self.op("Identity", [x.name], out="y")
        elif kind == "flatten_gemm":
            self.gemm(self.op("Flatten", [x.name], axis=1), x.c * x.h * x.w, "y")
        elif kind == "gap_gemm":
            self.gemm(self.op("Flatten", [self.op("GlobalAveragePool", [x.name])], axis=1), x.c, "y")
        else:
            if self.opset >= 18:
                r = self.op("ReduceMean", [x.name, self.ints([2, 3])], keepdims=1)
            else:
                r = self.op("ReduceMean", [x.name], axes=[2, 3], keepdims=1)
            if self.opset >= 13:
                s = self.op("Squeeze", [r, self.ints([2, 3])])
            else:
                s = self.op("Squeeze", [r], axes=[2, 3])
            self.gemm(s, x.c, "y")
        return ["y"]

    def build(self) -> onnx.ModelProto:
        h_in, w_in = self.choice(IN_SIZES)
        self.in_shape = [1, self.d(st.integers(1, 3)), h_in, w_in]
        x = T("x", self.in_shape[1], h_in, w_in)
        x = self.block_conv(x)
        kinds = self.d(st.lists(st.sampled_from(self.BLOCKS), min_size=0, max_size=6))
        outputs = []
        for kind in kinds:
            if self.nodes() >= MAX_NODES:
                break
            x = getattr(self, f"block_{kind}")(x)
            if self.d(st.integers(0, 15)) == 0:  # an intermediate graph output (freezes its channels)
                outputs.append(self.op("Identity", [x.name], out=self.b.fresh("aux")))
        outputs = self.head(x) + outputs
        model = self._model(outputs)
        model = handmade._with_output_shapes(model)
        model.doc_string = " -> ".join(self.log)
        return model


@st.composite
def cnn_models(draw, opsets=OPSETS) -> onnx.ModelProto:
    """A random valid small CNN (see the module docstring); doc_string lists its blocks."""
    opset = draw(st.sampled_from(list(opsets)))
    seed = draw(st.integers(0, 2**31 - 1))
    const_mode = draw(st.sampled_from(["init", "init", "node", "mixed"]))
    gen = Gen(draw, opset, seed, const_mode)
    return gen.build()


def describe(model: onnx.ModelProto) -> str:
    """One line: opset and the block log the generator kept in doc_string."""
    return f"opset {model.opset_import[0].version}: {model.doc_string}"
