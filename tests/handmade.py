"""Small hand-built ONNX graphs, one builder per channel-pruning pattern."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
X2D = [1, 3, 16, 16]
X2D_SMALL = [1, 3, 8, 8]
X_GEMM = [1, 3, 4, 4]


class Builder:
    """Accumulates nodes and weights for one graph, naming nodes conv1, bn1, ..."""

    def __init__(self, seed: int = 0, constants: bool = False) -> None:
        """Seeded builder; `constants` emits Constant nodes instead of initializers."""
        self.rng = np.random.default_rng(seed)
        self.constants = constants
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count: dict[str, int] = defaultdict(int)
        self.value_info: list[onnx.ValueInfoProto] = []

    # -- naming / raw nodes -------------------------------------------------
    def fresh(self, prefix: str) -> str:
        """Return the next unused name `prefix<N>`."""
        self._count[prefix] += 1
        return f"{prefix}{self._count[prefix]}"

    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None,
           name: str | None = None, **attrs) -> str:
        """Append a single-output node and return its output tensor name."""
        name = name or self.fresh(op_type.lower())
        out = out or name
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def op_multi(self, op_type: str, inputs: Sequence[str], n_out: int, **attrs) -> list[str]:
        """Append a node with `n_out` outputs and return their names."""
        name = self.fresh(op_type.lower())
        outs = [f"{name}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs

    def annotate(self, tensor: str, shape: Sequence[int]) -> str:
        """Declare a float tensor's shape (for ops ONNX cannot shape-infer)."""
        self.value_info.append(helper.make_tensor_value_info(tensor, FLOAT, list(shape)))
        return tensor

    # -- constants ----------------------------------------------------------
    def const(self, value, name: str | None = None) -> str:
        """Register a constant (initializer or Constant node); float64 becomes float32."""
        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = name or self.fresh("const")
        tensor = numpy_helper.from_array(arr, name)
        if self.constants:
            node = helper.make_node("Constant", [], [name], name=f"{name}_const", value=tensor)
            self.nodes.append(node)
        else:
            self.inits.append(tensor)
        return name

    def ints(self, values: Sequence[int]) -> str:
        """Register an int64 1-D constant (shapes, axes, pads, ...)."""
        return self.const(np.asarray(values, dtype=np.int64))

    def scalar(self, value: float) -> str:
        """Register a float32 scalar constant."""
        return self.const(np.float32(value))

    def randn(self, shape: Sequence[int], fan_in: int, name: str) -> str:
        """Normal weights scaled by 1/sqrt(fan_in)."""
        return self.const(self.rng.standard_normal(shape) / np.sqrt(fan_in), name)

    def uniform(self, lo: float, hi: float, shape: Sequence[int], name: str) -> str:
        """Uniform weights in [lo, hi)."""
        return self.const(self.rng.uniform(lo, hi, shape), name)

    def small(self, shape: Sequence[int], name: str) -> str:
        """Normal weights times 0.1 (biases, betas, means)."""
        return self.const(self.rng.standard_normal(shape) * 0.1, name)

    # -- layers -------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int = 3, *, dims: int = 2, group: int = 1,
             stride: int = 1, bias: bool = True, out: str | None = None) -> str:
        """Conv with 'same' padding (odd k) and random weights."""
        name = self.fresh("conv")
        ks = [k] * dims
        ins = [x, self.randn([cout, cin // group, *ks], cin // group * k**dims, f"{name}.weight")]
        if bias:
            ins.append(self.small([cout], f"{name}.bias"))
        return self.op("Conv", ins, out=out, name=name, kernel_shape=ks, pads=[k // 2] * 2 * dims,
                       strides=[stride] * dims, group=group)

    def conv_t(self, x: str, cin: int, cout: int, k: int = 3, *, group: int = 1) -> str:
        """ConvTranspose doubling the spatial size (stride 2, pad 1, output_padding 1)."""
        name = self.fresh("convt")
        w = self.randn([cin, cout // group, k, k], cin // group * k * k, f"{name}.weight")
        b = self.small([cout], f"{name}.bias")
        return self.op("ConvTranspose", [x, w, b], name=name, kernel_shape=[k, k], strides=[2, 2],
                       pads=[1, 1, 1, 1], output_padding=[1, 1], group=group)

    def bn(self, x: str, c: int) -> str:
        """BatchNormalization with random statistics."""
        name = self.fresh("bn")
        ins = [x, self.uniform(0.5, 1.5, [c], f"{name}.gamma"), self.small([c], f"{name}.beta"),
               self.small([c], f"{name}.mean"), self.uniform(0.5, 2.0, [c], f"{name}.var")]
        return self.op("BatchNormalization", ins, name=name, epsilon=1e-5)

    def relu(self, x: str) -> str:
        """Relu."""
        return self.op("Relu", [x])

    def cbr(self, x: str, cin: int, cout: int, k: int = 3, dims: int = 2) -> str:
        """Conv + BN + Relu."""
        return self.relu(self.bn(self.conv(x, cin, cout, k, dims=dims), cout))

    def head(self, x: str, cin: int, cout: int = 4, out: str = "y") -> str:
        """1x1 conv head writing a graph output."""
        return self.conv(x, cin, cout, 1, out=out)

    def gemm(self, x: str, n_in: int, n_out: int, trans_b: bool = True,
             out: str | None = None) -> str:
        """Gemm with bias; weight [out, in] if trans_b else [in, out]."""
        name = self.fresh("gemm")
        shape = [n_out, n_in] if trans_b else [n_in, n_out]
        w = self.randn(shape, n_in, f"{name}.weight")
        return self.op("Gemm", [x, w, self.small([n_out], f"{name}.bias")], out=out, name=name,
                       transB=int(trans_b))

    # -- model --------------------------------------------------------------
    def model(self, name: str, in_shape: Sequence[int], outputs: Sequence[str] = ("y",),
              opset: int = 17) -> onnx.ModelProto:
        """Wrap the nodes into a ModelProto with static input and inferred output shapes."""
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("x", FLOAT, list(in_shape))],
            [helper.make_tensor_value_info(o, FLOAT, None) for o in outputs],
            initializer=self.inits, value_info=self.value_info)
        opsets = [helper.make_opsetid("", opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune-tests",
                                  ir_version=helper.find_min_ir_version_for(opsets))
        return _with_output_shapes(model)


def _with_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy inferred output types/shapes into graph.output."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.type.CopyFrom(known[out.name].type)
    return model


# =========================================================================
# 1-3: chains, bias-as-add, residuals
# =========================================================================
def _chain_body(b: Builder) -> None:
    """Conv(3->8)+BN+Relu -> Conv(8->12)+BN+Relu -> Conv(12->6) -> y."""
    h = b.cbr(b.cbr("x", 3, 8), 8, 12)
    b.conv(h, 12, 6, out="y")


def conv_bn_relu_chain(seed: int = 0) -> onnx.ModelProto:
    """Plain Conv/BN/Relu chain."""
    b = Builder(seed)
    _chain_body(b)
    return b.model("conv_bn_relu_chain", X2D)


def conv_bias_reshape_add(seed: int = 0) -> onnx.ModelProto:
    """Bias-free conv whose bias is added via Reshape(b, [1,C,1,1]) -> Add."""
    b = Builder(seed)
    h = b.conv("x", 3, 8, bias=False)
    bias = b.op("Reshape", [b.small([8], "conv1.bias_vec"), b.ints([1, 8, 1, 1])])
    h = b.relu(b.op("Add", [h, bias]))
    b.head(h, 8)
    return b.model("conv_bias_reshape_add", X2D)


def _res_block(b: Builder, x: str, c: int, mid: int) -> str:
    """y = Relu(x + Conv(Relu(Conv(x))))."""
    h = b.conv(b.relu(b.conv(x, c, mid)), mid, c)
    return b.relu(b.op("Add", [x, h]))


def residual_add(seed: int = 0) -> onnx.ModelProto:
    """Stem conv then two identity residual blocks then head."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 3, 8))
    h = _res_block(b, _res_block(b, h, 8, 6), 8, 6)
    b.head(h, 8)
    return b.model("residual_add", X2D)


# =========================================================================
# 4-5: attention / spelled activations
# =========================================================================
def _se(b: Builder, x: str, c: int, gate: str) -> str:
    """Squeeze-excitation: x * gate(conv(relu(conv(GAP(x)))))."""
    s = b.op("GlobalAveragePool", [x])
    s = b.conv(b.relu(b.conv(s, c, c // 4, 1)), c // 4, c, 1)
    return b.op("Mul", [x, b.op(gate, [s])])


def se_block(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> SE (Sigmoid gate) -> head."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 3, 8))
    b.head(_se(b, h, 8, "Sigmoid"), 8)
    return b.model("se_block", X2D)


def se_block_hardsigmoid(seed: int = 0) -> onnx.ModelProto:
    """SE with HardSigmoid gate, then a [N,1,H,W] spatial-attention Mul."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 3, 8))
    h = _se(b, h, 8, "HardSigmoid")
    att = b.op("Sigmoid", [b.conv(h, 8, 1)])
    b.head(b.op("Mul", [h, att]), 8)
    return b.model("se_block_hardsigmoid", X2D)


def _hardswish_spelled(b: Builder, x: str) -> str:
    """x * Clip(x + 3, 0, 6) / 6 with scalar constants."""
    clip = b.op("Clip", [b.op("Add", [x, b.scalar(3.0)]), b.scalar(0.0), b.scalar(6.0)])
    return b.op("Div", [b.op("Mul", [x, clip]), b.scalar(6.0)])


def hardswish_spelled(seed: int = 0) -> onnx.ModelProto:
    """Spelled-out HardSwish branch plus a HardSwish-op branch, added."""
    b = Builder(seed)
    h = b.conv("x", 3, 8)
    left = b.conv(_hardswish_spelled(b, h), 8, 8)
    right = b.op("HardSwish", [b.conv(h, 8, 8)])
    b.head(b.op("Add", [left, right]), 8)
    return b.model("hardswish_spelled", X2D, opset=17)


# =========================================================================
# 6-8: concat / split / slice
# =========================================================================
def concat_offsets(seed: int = 0) -> onnx.ModelProto:
    """Concat of convs (4,6,5) -> BN -> Relu -> conv; and Concat(a, a) -> conv."""
    b = Builder(seed)
    s = b.relu(b.conv("x", 3, 8))
    a, c, d = b.conv(s, 8, 4), b.conv(s, 8, 6), b.conv(s, 8, 5)
    cat = b.relu(b.bn(b.op("Concat", [a, c, d], axis=1), 15))
    b.head(cat, 15, out="y")
    b.head(b.op("Concat", [a, a], axis=1), 8, out="y2")
    return b.model("concat_offsets", X2D, outputs=("y", "y2"))


def _split_body(b: Builder, split_as_input: bool) -> None:
    """conv(12) -> Split [4, 8] -> convs -> Concat -> head."""
    h = b.relu(b.conv("x", 3, 12))
    if split_as_input:
        p, q = b.op_multi("Split", [h, b.ints([4, 8])], 2, axis=1)
    else:
        p, q = b.op_multi("Split", [h], 2, axis=1, split=[4, 8])
    cat = b.op("Concat", [b.conv(p, 4, 4), b.conv(q, 8, 6)], axis=1)
    b.head(b.relu(cat), 10)


def split_attr_and_input(seed: int = 0) -> onnx.ModelProto:
    """Split sizes given as an input (opset 13+)."""
    b = Builder(seed)
    _split_body(b, split_as_input=True)
    return b.model("split_attr_and_input", X2D)


def split_attribute_opset11(seed: int = 0) -> onnx.ModelProto:
    """Split sizes given as an attribute (opset 11)."""
    b = Builder(seed)
    _split_body(b, split_as_input=False)
    return b.model("split_attribute_opset11", X2D, opset=11)


def _slice_c(b: Builder, x: str, start: int, end: int) -> str:
    """Slice channels [start:end]."""
    return b.op("Slice", [x, b.ints([start]), b.ints([end]), b.ints([1]), b.ints([1])])


def slice_channels(seed: int = 0) -> onnx.ModelProto:
    """conv(10) -> Slice [2:7] and [7:10] -> convs to 6 -> Add -> head."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 3, 10))
    left = b.conv(_slice_c(b, h, 2, 7), 5, 6)
    right = b.conv(_slice_c(b, h, 7, 10), 3, 6)
    b.head(b.relu(b.op("Add", [left, right])), 6)
    return b.model("slice_channels", X2D)


# =========================================================================
# 9-10: depthwise / grouped
# =========================================================================
def _depthwise_body(b: Builder, mult: int) -> None:
    """conv(3->8) -> depthwise(8->8*mult)+BN+Relu -> pointwise -> head."""
    h = b.relu(b.conv("x", 3, 8))
    dw = b.relu(b.bn(b.conv(h, 8, 8 * mult, group=8), 8 * mult))
    b.head(b.relu(b.conv(dw, 8 * mult, 12, 1)), 12)


def depthwise(seed: int = 0) -> onnx.ModelProto:
    """Depthwise conv, group == C_in == C_out."""
    b = Builder(seed)
    _depthwise_body(b, 1)
    return b.model("depthwise", X2D)


def depthwise_multiplier(seed: int = 0) -> onnx.ModelProto:
    """Depthwise conv with channel multiplier 2 (8 -> 16, group 8)."""
    b = Builder(seed)
    _depthwise_body(b, 2)
    return b.model("depthwise_multiplier", X2D)


def grouped_conv(seed: int = 0) -> onnx.ModelProto:
    """conv(3->8) -> grouped Conv(8->12, group 2) -> head."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 3, 8))
    b.head(b.relu(b.conv(h, 8, 12, group=2)), 12)
    return b.model("grouped_conv", X2D)


# =========================================================================
# 11-12: flatten / reshape / pooling heads
# =========================================================================
def flatten_gemm(seed: int = 0) -> onnx.ModelProto:
    """conv(3->6) -> Flatten -> Gemm(transB=1) -> Relu -> Gemm(transB=0)."""
    b = Builder(seed)
    h = b.op("Flatten", [b.relu(b.conv("x", 3, 6))], axis=1)
    h = b.relu(b.gemm(h, 6 * 16, 16, trans_b=True))
    b.gemm(h, 16, 10, trans_b=False, out="y")
    return b.model("flatten_gemm", X_GEMM)


def reshape_matmul(seed: int = 0) -> onnx.ModelProto:
    """conv(3->6) -> Reshape [1, C*H*W] -> MatMul -> Add bias."""
    b = Builder(seed)
    h = b.op("Reshape", [b.relu(b.conv("x", 3, 6)), b.ints([1, 6 * 16])])
    h = b.op("MatMul", [h, b.randn([96, 10], 96, "matmul1.weight")])
    b.op("Add", [h, b.small([10], "add1.bias")], out="y")
    return b.model("reshape_matmul", X_GEMM)


def gap_squeeze_matmul(seed: int = 0) -> onnx.ModelProto:
    """conv -> ReduceMean[2,3] -> Squeeze[2,3] -> MatMul -> Add."""
    b = Builder(seed)
    h = b.op("ReduceMean", [b.relu(b.conv("x", 3, 8))], axes=[2, 3], keepdims=1)
    h = b.op("Squeeze", [h, b.ints([2, 3])])
    h = b.op("MatMul", [h, b.randn([8, 10], 8, "matmul1.weight")])
    b.op("Add", [h, b.small([10], "add1.bias")], out="y")
    return b.model("gap_squeeze_matmul", X2D_SMALL)


def gap_flatten_gemm(seed: int = 0) -> onnx.ModelProto:
    """conv -> GlobalAveragePool -> Flatten -> Gemm."""
    b = Builder(seed)
    h = b.op("GlobalAveragePool", [b.relu(b.conv("x", 3, 8))])
    b.gemm(b.op("Flatten", [h], axis=1), 8, 10, out="y")
    return b.model("gap_flatten_gemm", X2D_SMALL)


# =========================================================================
# 13-14: transposed conv, 1-D / 3-D
# =========================================================================
def conv_transpose(seed: int = 0) -> onnx.ModelProto:
    """conv(3->8) -> ConvTranspose(8->6, stride 2) -> Relu -> Conv -> head."""
    b = Builder(seed)
    h = b.relu(b.conv_t(b.relu(b.conv("x", 3, 8)), 8, 6))
    b.head(b.relu(b.conv(h, 6, 6)), 6)
    return b.model("conv_transpose", X2D_SMALL)


def conv_transpose_grouped(seed: int = 0) -> onnx.ModelProto:
    """Depthwise ConvTranspose (group 8, weight [8,1,k,k])."""
    b = Builder(seed)
    h = b.relu(b.conv_t(b.relu(b.conv("x", 3, 8)), 8, 8, group=8))
    b.head(b.relu(b.conv(h, 8, 6)), 6)
    return b.model("conv_transpose_grouped", X2D_SMALL)


def _nd_chain(b: Builder, dims: int, cin: int, widths: Sequence[int]) -> None:
    """N-D Conv+BN+Relu chain over `widths`, then a conv to 3 channels."""
    h, c = "x", cin
    for w in widths:
        h, c = b.cbr(h, c, w, dims=dims), w
    b.conv(h, c, 3, dims=dims, out="y")


def conv1d_chain(seed: int = 0) -> onnx.ModelProto:
    """1-D conv chain on [1,3,32]."""
    b = Builder(seed)
    _nd_chain(b, 1, 3, [8, 12])
    return b.model("conv1d_chain", [1, 3, 32])


def conv3d_chain(seed: int = 0) -> onnx.ModelProto:
    """3-D conv chain on [1,2,6,8,8]."""
    b = Builder(seed)
    _nd_chain(b, 3, 2, [4, 6])
    return b.model("conv3d_chain", [1, 2, 6, 8, 8])


# =========================================================================
# 15-16: activations and normalisations
# =========================================================================
def prelu_per_channel(seed: int = 0) -> onnx.ModelProto:
    """conv -> PRelu(slope [C,1,1]) -> conv -> head."""
    b = Builder(seed)
    h = b.op("PRelu", [b.conv("x", 3, 8), b.uniform(0.05, 0.3, [8, 1, 1], "prelu1.slope")],
             name="prelu1")
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    return b.model("prelu_per_channel", X2D)


def _act(b: Builder, x: str, op_type: str) -> str:
    """Apply one elementwise activation with fixed attributes/inputs."""
    if op_type == "Clip":
        return b.op("Clip", [x, b.scalar(-2.0), b.scalar(2.0)])
    if op_type == "Cast":
        return b.op("Cast", [x], to=FLOAT)
    if op_type == "LeakyRelu":
        return b.op("LeakyRelu", [x], alpha=0.1)
    return b.op(op_type, [x])


ACTIVATION_GROUPS = [["LeakyRelu", "Elu"], ["Selu", "Softplus"], ["Tanh", "Gelu"],
                     ["Erf", "Sigmoid"], ["Clip", "Dropout", "Identity", "Cast"]]


def leakyrelu_elu_selu_etc(seed: int = 0) -> onnx.ModelProto:
    """Convs (8 ch) separated by groups of unary ops; opset 20 for Gelu."""
    b = Builder(seed)
    h, c = "x", 3
    for group in ACTIVATION_GROUPS:
        h, c = b.conv(h, c, 8), 8
        for op_type in group:
            h = _act(b, h, op_type)
    b.head(h, 8)
    return b.model("leakyrelu_elu_selu_etc", X2D_SMALL, opset=20)


def norms(seed: int = 0) -> onnx.ModelProto:
    """conv -> InstanceNormalization -> Relu -> conv -> head."""
    b = Builder(seed)
    h = b.conv("x", 3, 8)
    h = b.op("InstanceNormalization", [h, b.uniform(0.5, 1.5, [8], "in1.scale"),
                                       b.small([8], "in1.bias")], name="in1", epsilon=1e-5)
    b.head(b.relu(b.conv(b.relu(h), 8, 8)), 8)
    return b.model("norms", X2D)


def _group_norm_body(b: Builder, param_len: int) -> None:
    """conv(8) -> GroupNormalization(4 groups, params of length param_len) -> conv -> head.

    onnx 1.23 has no shape inference for GroupNormalization (onnx/onnx#7157), so its
    output shape is declared in value_info for check_model(full_check=True).
    """
    h = b.conv("x", 3, 8)
    h = b.op("GroupNormalization", [h, b.uniform(0.5, 1.5, [param_len], "gn1.scale"),
                                    b.small([param_len], "gn1.bias")],
             name="gn1", num_groups=4, epsilon=1e-5)
    b.annotate(h, X2D[:1] + [8] + X2D[2:])
    b.head(b.relu(b.conv(b.relu(h), 8, 8)), 8)


def group_norm(seed: int = 0) -> onnx.ModelProto:
    """GroupNormalization-21: scale/bias per channel [C]."""
    b = Builder(seed)
    _group_norm_body(b, 8)
    return b.model("group_norm", X2D, opset=21)


def group_norm_opset18(seed: int = 0) -> onnx.ModelProto:
    """GroupNormalization-18: scale/bias per group [num_groups]."""
    b = Builder(seed)
    _group_norm_body(b, 4)
    return b.model("group_norm_opset18", X2D, opset=18)


# =========================================================================
# 17-19: spatial ops, per-channel constants, multi-input elementwise
# =========================================================================
def pools_pad_resize(seed: int = 0) -> onnx.ModelProto:
    """conv -> MaxPool -> AveragePool -> Pad(spatial) -> Resize(scales) -> conv."""
    b = Builder(seed)
    h = b.op("MaxPool", [b.relu(b.conv("x", 3, 8))], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("AveragePool", [h], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    h = b.op("Pad", [h, b.ints([0, 0, 1, 1, 0, 0, 1, 1])], mode="constant")
    h = b.op("Resize", [h, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    return b.model("pools_pad_resize", X2D)


def resize_sizes(seed: int = 0) -> onnx.ModelProto:
    """conv(8) -> Resize with sizes [1, 8, 2H, 2W] (mentions C) -> conv."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 3, 8))
    h = b.op("Resize", [h, "", "", b.ints([1, 8, 16, 16])], mode="nearest")
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    return b.model("resize_sizes", X2D_SMALL)


def per_channel_consts(seed: int = 0) -> onnx.ModelProto:
    """conv -> Mul[1,C,1,1] -> Add[C,1,1] -> Sub[C,1,1] -> Div[1,C,1,1] -> conv."""
    b = Builder(seed)
    h = b.conv("x", 3, 8)
    h = b.op("Mul", [h, b.uniform(0.5, 1.5, [1, 8, 1, 1], "mul1.scale")], name="mul1")
    h = b.op("Add", [h, b.small([8, 1, 1], "add1.shift")], name="add1")
    h = b.op("Sub", [h, b.small([8, 1, 1], "sub1.shift")], name="sub1")
    h = b.op("Div", [h, b.uniform(0.5, 1.5, [1, 8, 1, 1], "div1.scale")], name="div1")
    b.head(b.relu(b.conv(b.relu(h), 8, 8)), 8)
    return b.model("per_channel_consts", X2D)


def max_min_sum(seed: int = 0) -> onnx.ModelProto:
    """Two convs a, b coupled by Max(a,b), Min(a,b), Sum(max, min, a)."""
    b = Builder(seed)
    s = b.relu(b.conv("x", 3, 8))
    p, q = b.conv(s, 8, 6), b.conv(s, 8, 6)
    total = b.op("Sum", [b.op("Max", [p, q]), b.op("Min", [p, q]), p])
    b.head(b.relu(total), 6)
    return b.model("max_min_sum", X2D)


# =========================================================================
# 20: Paddle-style constants
# =========================================================================
def paddle_constants(seed: int = 0) -> onnx.ModelProto:
    """conv_bn_relu_chain with every parameter a Constant node, no initializers, opset 11."""
    b = Builder(seed, constants=True)
    _chain_body(b)
    return b.model("paddle_constants", X2D, opset=11)


# =========================================================================
# 21: patterns that must be (partly) frozen
# =========================================================================
def graph_output_channels(seed: int = 0) -> onnx.ModelProto:
    """conv1 output is also graph output y2; conv2 in the middle is free."""
    b = Builder(seed)
    h = b.conv("x", 3, 8, out="y2")
    h = b.relu(b.conv(b.relu(h), 8, 8))
    b.head(h, 8)
    return b.model("graph_output_channels", X2D, outputs=("y", "y2"))


def unknown_op(seed: int = 0) -> onnx.ModelProto:
    """conv1 -> LpNormalization(axis=1) (mixes channels) -> conv2 -> head."""
    b = Builder(seed)
    h = b.op("LpNormalization", [b.conv("x", 3, 8)], axis=1, p=2)
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    return b.model("unknown_op", X2D)


def layernorm_channels(seed: int = 0) -> onnx.ModelProto:
    """conv -> NHWC -> LayerNormalization(last axis = C) -> NCHW -> conv."""
    b = Builder(seed)
    h = b.op("Transpose", [b.conv("x", 3, 8)], perm=[0, 2, 3, 1])
    h = b.op("LayerNormalization", [h, b.uniform(0.5, 1.5, [8], "ln1.scale"),
                                    b.small([8], "ln1.bias")], name="ln1", axis=-1, epsilon=1e-5)
    h = b.op("Transpose", [h], perm=[0, 3, 1, 2])
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    return b.model("layernorm_channels", X2D)


def channel_shuffle(seed: int = 0) -> onnx.ModelProto:
    """ShuffleNet shuffle: Reshape [1,g,C/g,H,W] -> Transpose -> Reshape [1,C,H,W]."""
    b = Builder(seed)
    h = b.op("Reshape", [b.relu(b.conv("x", 3, 8)), b.ints([1, 2, 4, 8, 8])])
    h = b.op("Transpose", [h], perm=[0, 2, 1, 3, 4])
    h = b.op("Reshape", [h, b.ints([1, 8, 8, 8])])
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    return b.model("channel_shuffle", X2D_SMALL)


def expand_tile_shape(seed: int = 0) -> onnx.ModelProto:
    """conv(8) -> Reshape [1,8,HW] -> Reshape [1,8,H,W] -> Expand [1,8,H,W] -> Tile -> conv."""
    b = Builder(seed)
    h = b.op("Reshape", [b.relu(b.conv("x", 3, 8)), b.ints([1, 8, 64])])
    h = b.op("Reshape", [h, b.ints([1, 8, 8, 8])])
    h = b.op("Expand", [h, b.ints([1, 8, 8, 8])])
    h = b.op("Tile", [h, b.ints([1, 1, 2, 2])])
    b.head(b.relu(b.conv(h, 8, 8)), 8)
    return b.model("expand_tile_shape", X2D_SMALL)


# =========================================================================
# 22: old / new opsets
# =========================================================================
def opset9_chain(seed: int = 0) -> onnx.ModelProto:
    """Conv/BN/Relu/MaxPool x2 -> Flatten -> Gemm, opset 9 (IR 4)."""
    b = Builder(seed)
    h = b.op("MaxPool", [b.cbr("x", 3, 8)], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("MaxPool", [b.cbr(h, 8, 6)], kernel_shape=[2, 2], strides=[2, 2])
    b.gemm(b.op("Flatten", [h], axis=1), 6 * 4, 10, out="y")
    return b.model("opset9_chain", X2D_SMALL, opset=9)


OPSET_NEW = 23


def opset23_chain(seed: int = 0) -> onnx.ModelProto:
    """Conv/BN/Relu chain -> GAP -> Flatten -> Gemm, opset 23 (IR 11)."""
    b = Builder(seed)
    h = b.cbr(b.cbr("x", 3, 8), 8, 12)
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1)
    b.gemm(h, 12, 10, out="y")
    return b.model("opset23_chain", X2D_SMALL, opset=OPSET_NEW)


# =========================================================================
# 23: concat + residual
# =========================================================================
def concat_residual(seed: int = 0) -> onnx.ModelProto:
    """x0=conv(4); x1=conv(Relu(x0)); cat=Concat(x0,x1); cat + conv8(cat) -> head."""
    b = Builder(seed)
    s = b.relu(b.conv("x", 3, 8))
    x0 = b.conv(s, 8, 4)
    x1 = b.conv(b.relu(x0), 4, 4)
    cat = b.op("Concat", [x0, x1], axis=1)
    res = b.op("Add", [cat, b.conv(b.relu(cat), 8, 8)])
    b.head(b.relu(res), 8)
    return b.model("concat_residual", X2D)


# =========================================================================
# registry
# =========================================================================
PATTERNS: dict[str, Callable[[int], onnx.ModelProto]] = {
    f.__name__: f for f in [
        conv_bn_relu_chain, conv_bias_reshape_add, residual_add,
        se_block, se_block_hardsigmoid, hardswish_spelled,
        concat_offsets, split_attr_and_input, split_attribute_opset11, slice_channels,
        depthwise, depthwise_multiplier, grouped_conv,
        flatten_gemm, reshape_matmul, gap_squeeze_matmul, gap_flatten_gemm,
        conv_transpose, conv_transpose_grouped, conv1d_chain, conv3d_chain,
        prelu_per_channel, leakyrelu_elu_selu_etc, norms, group_norm, group_norm_opset18,
        pools_pad_resize, resize_sizes, per_channel_consts, max_min_sum, paddle_constants,
        graph_output_channels, unknown_op, layernorm_channels, channel_shuffle,
        expand_tile_shape, opset9_chain, opset23_chain, concat_residual,
    ]
}

EXPECT: dict[str, str] = {
    "conv_bn_relu_chain": "conv1(8), conv2(12) prunable; conv3 output frozen (graph output)",
    "conv_bias_reshape_add": "conv1 prunable together with its Reshape'd bias (shape const "
                             "[1,8,1,1] must be rewritten); head frozen",
    "residual_add": "stem conv1 + both blocks' 2nd convs (conv3, conv5) one coupled group via"
                    " the Adds; inner convs conv2, conv4 independently prunable",
    "se_block": "conv1 and SE expand conv3 coupled via Mul; SE squeeze conv2 (C/4) prunable "
                "alone",
    "se_block_hardsigmoid": "as se_block; spatial conv4 (1 channel, [N,1,H,W]) broadcasts in "
                            "Mul and must NOT couple channels; conv4 output of size 1 best "
                            "kept",
    "hardswish_spelled": "conv1 prunable through spelled HardSwish (scalar consts); "
                         "conv2+conv3 coupled via Add and prunable",
    "concat_offsets": "conv2/3/4 prunable at concat offsets 0/4/10 with BN(15) sliced; conv2 "
                      "also feeds Concat(a,a) (both copies pruned alike); heads frozen",
    "split_attr_and_input": "conv1(12) prunable per split part, split input [4,8] rewritten; "
                            "conv2, conv3 prunable at concat offsets",
    "split_attribute_opset11": "as split_attr_and_input, but the split attribute is rewritten",
    "slice_channels": "conv1 channels in [2:7] and [7:10] prunable with slice bounds "
                      "rewritten, channels 0..1 unused (dead); conv2+conv3 coupled via Add",
    "depthwise": "conv1 + depthwise conv2 + bn1 one group (group attr updated); conv3 "
                 "prunable",
    "depthwise_multiplier": "conv1 (8) pruned with whole multiplier pairs of dw conv2 (16); "
                            "conv3 prunable",
    "grouped_conv": "conv1 (8) and conv2 (12) outputs prunable only evenly across the 2 "
                    "groups of conv2 (same count removed per group), else frozen",
    "flatten_gemm": "conv1 prunable with gemm1 input columns in blocks of H*W=16; gemm1 (16) "
                    "prunable; gemm2 output frozen",
    "reshape_matmul": "conv1 prunable with MatMul rows in blocks of 16 (reshape const "
                      "rewritten) or frozen",
    "gap_squeeze_matmul": "conv1 prunable with MatMul rows; MatMul/Add output frozen",
    "gap_flatten_gemm": "conv1 prunable with Gemm input columns; Gemm output frozen",
    "conv_transpose": "conv1 prunable (ConvTranspose weight dim 0); convt1 (6) prunable "
                      "(weight dim 1); conv2 prunable",
    "conv_transpose_grouped": "conv1 + depthwise convt1 one group (group attr updated); conv2"
                              " prunable",
    "conv1d_chain": "conv1(8), conv2(12) prunable; conv3 frozen (graph output)",
    "conv3d_chain": "conv1(4), conv2(6) prunable; conv3 frozen (graph output)",
    "prelu_per_channel": "conv1 prunable with PRelu slope [C,1,1]; conv2 prunable",
    "leakyrelu_elu_selu_etc": "conv1..conv5 each prunable through their unary ops (opset 20 "
                              "for Gelu)",
    "norms": "conv1 prunable with InstanceNormalization scale/bias; conv2 prunable",
    "group_norm": "conv1 frozen or pruned by whole groups of 2 (GroupNorm-21, scale [C]); "
                  "conv2 prunable",
    "group_norm_opset18": "refused with a one-line error: onnx.checker rejects the deprecated "
                          "GroupNormalization-18, so a result could not be vouched for (runs in ORT)",
    "pools_pad_resize": "conv1 prunable through "
                        "MaxPool/AveragePool/Pad(spatial)/Resize(scales); conv2 prunable",
    "resize_sizes": "conv1 prunable only if Resize sizes[1] is rewritten, else frozen; conv2 "
                    "prunable",
    "per_channel_consts": "conv1 prunable with Mul/Add/Sub/Div constants sliced; conv2 "
                          "prunable",
    "max_min_sum": "conv2 and conv3 one coupled group (Max/Min/Sum); conv1 prunable",
    "paddle_constants": "as conv_bn_relu_chain, parameters in Constant nodes (opset 11, no "
                        "initializers)",
    "graph_output_channels": "conv1 frozen (output y2); conv2 prunable; conv3 frozen (output "
                             "y)",
    "unknown_op": "conv1 frozen (LpNormalization over channels is unknown/mixing); conv2 "
                  "prunable",
    "layernorm_channels": "conv1 frozen (LayerNorm over channels after Transpose); conv2 "
                          "prunable",
    "channel_shuffle": "conv1 frozen (Reshape/Transpose shuffle mixes channel index); conv2 "
                       "prunable",
    "expand_tile_shape": "conv1 frozen (constant Reshape/Expand shapes contain C=8; Tile "
                         "repeats channels x1); conv2 prunable",
    "opset9_chain": "conv1(8), conv2(6) prunable (conv2 with Gemm columns in blocks of 4); "
                    "Gemm output frozen; opset 9 / IR 4",
    "opset23_chain": "conv1(8), conv2(12) prunable; Gemm output frozen; opset 23 / IR 11",
    "concat_residual": "conv2 (x0), conv3 (x1) and conv4 coupled: Concat offsets 0/4 tied to "
                       "conv4 channels by the Add; conv1 prunable",
}


# Patterns onnx.checker rejects by design; they still shape-infer (strict) and run in onnxruntime.
CHECKER_EXEMPT: dict[str, str] = {
    "group_norm_opset18": "GroupNormalization-18 is deprecated in onnx; check_model refuses it",
}


def check(model: onnx.ModelProto, name: str = "") -> None:
    """check_model(full_check=True), or strict shape inference for CHECKER_EXEMPT patterns."""
    if name in CHECKER_EXEMPT:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    else:
        onnx.checker.check_model(model, full_check=True)


def _self_check(seed: int = 0) -> None:
    """Build, check and run every pattern in onnxruntime; print a summary line each."""
    import onnxruntime as ort

    assert set(EXPECT) == set(PATTERNS), set(EXPECT) ^ set(PATTERNS)
    for name, build in PATTERNS.items():
        model = build(seed)
        check(model, name)
        names = [n.name for n in model.graph.node]
        assert all(names) and len(set(names)) == len(names), f"{name}: node names"
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
        outs = sess.run(None, {"x": x})
        assert all(np.isfinite(o).all() for o in outs), f"{name}: non-finite output"
        opset = model.opset_import[0].version
        shapes = ", ".join(str(list(o.shape)) for o in outs)
        note = "  (checker exempt: deprecated op)" if name in CHECKER_EXEMPT else ""
        print(f"{name:26s} opset {opset:2d} nodes {len(names):3d} "
              f"bytes {model.ByteSize():6d} out {shapes}{note}")
    print(f"all {len(PATTERNS)} patterns OK")


if __name__ == "__main__":
    _self_check()
