"""TorchGraph runs ONNX graphs in PyTorch as onnxruntime does, trains their weights and writes them back."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper, numpy_helper

import handmade
import random_graphs
from conftest import ROOT, ocr_model
from onnxprune.errors import OnnxPruneError
from onnxprune.recovery.torch_graph import TorchGraph

TOL = 1e-4
OCR_SHAPES = {"ch_ppocr_mobile_v2.0_cls_infer.onnx": (1, 3, 48, 96), "ch_PP-OCRv4_det_infer.onnx": (1, 3, 64, 64),
              "ch_PP-OCRv4_rec_infer.onnx": (1, 3, 48, 64)}
# onnxruntime's fused com.microsoft ops have no torch function: recovery refuses them (test_contrib_ops.py)
MODELS = sorted({p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models").rglob("*.onnx")
                 if p.parent.name != "transformers_fused"}
                | {f"third_party/rapidocr/{name}" for name in OCR_SHAPES})
PROBABILITY_OPS = ("Sigmoid", "Softmax")
NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.INT64: np.int64, TensorProto.INT32: np.int32,
         TensorProto.BOOL: np.bool_, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}
rng = np.random.default_rng(0)


# -- helpers -------------------------------------------------------------------
def session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    """A single-threaded CPU session (optimizations off for hand-built graphs: ORT mis-fuses some)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the model whose graph outputs are `names` (untyped; onnxruntime infers them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.output[:]
    out.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return out


def error(got: np.ndarray, want: np.ndarray, scale: float | None = None) -> float:
    """Largest |got - want| relative to the reference's scale (its largest magnitude unless given)."""
    assert got.shape == want.shape, f"shape {got.shape}, onnxruntime {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype}, onnxruntime {want.dtype}"
    if want.dtype == np.bool_ or np.issubdtype(want.dtype, np.integer):
        return float(np.count_nonzero(got != want))
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    same = np.isnan(got) & np.isnan(want) | (got == want)
    scale = scale or max(float(np.abs(np.where(np.isfinite(want), want, 0)).max(initial=0.0)), 1e-6)
    return float(np.where(same, 0.0, diff).max(initial=0.0)) / scale


def run_torch(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict:
    """TorchGraph's results as numpy arrays."""
    with torch.no_grad():
        got = TorchGraph(model)({k: torch.from_numpy(v) for k, v in feeds.items()}, outputs)
    return {k: v.numpy() for k, v in got.items()}


def make_model(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], outputs: list[str],
               consts: dict[str, np.ndarray] | None = None, opset: int = 17) -> onnx.ModelProto:
    """A model of the nodes: feeds as graph inputs, consts as initializers, untyped outputs."""
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_empty_tensor_value_info(o) for o in outputs],
                              initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=max(helper.find_min_ir_version_for(opsets), 7))


def assert_matches(model: onnx.ModelProto, feeds: dict[str, np.ndarray], scales: dict[str, float | None] | None = None,
                   optimize: bool = False, what: str = "") -> None:
    """TorchGraph's tensors (default: the graph outputs) are onnxruntime's within TOL of their scale."""
    scales = scales or {o.name: None for o in model.graph.output}
    want = session(with_outputs(model, list(scales)), optimize).run(list(scales), feeds)
    got = run_torch(model, feeds, list(scales))
    for (name, scale), w in zip(scales.items(), want):
        assert error(got[name], w, scale) <= TOL, f"{what}{name}: error {error(got[name], w, scale):.2e}"


def check_node(op_type: str, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray] | None = None,
               order: list[str] | None = None, opset: int = 17, outputs: int = 1, **attrs) -> None:
    """One node against onnxruntime: feeds are graph inputs, consts initializers, `order` the node's inputs."""
    consts = consts or {}
    order = [*feeds, *consts] if order is None else order
    names = [f"y{i}" for i in range(outputs)]
    model = make_model([helper.make_node(op_type, order, names, name="n", **attrs)], feeds, names, consts, opset)
    assert_matches(model, feeds, what=f"{op_type} ")


def randn(*shape: int) -> np.ndarray:
    """Standard normal float32."""
    return rng.standard_normal(shape).astype(np.float32)


def i64(*values) -> np.ndarray:
    """An int64 array."""
    return np.asarray(values, dtype=np.int64)


# -- every committed and fetched model --------------------------------------------
def model_feeds(model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray]:
    """Seeded inputs: dynamic batch 2, sequence dims 16, other dynamic dims 32; token ids and ones masks."""
    gen = np.random.default_rng(0)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        ttype = value.type.tensor_type
        shape = OCR_SHAPES.get(path.name) or tuple(
            d.dim_value if d.dim_value > 0 else 2 if i == 0 else 16 if "seq" in d.dim_param else 32
            for i, d in enumerate(ttype.shape.dim))
        dtype = NUMPY[ttype.elem_type]
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = gen.standard_normal(shape).astype(dtype)
        elif "mask" in value.name:
            feeds[value.name] = np.ones(shape, dtype)
        else:
            feeds[value.name] = gen.integers(0, 100, shape).astype(dtype)
    return feeds


def compared(model: onnx.ModelProto) -> dict[str, float | None]:
    """Tensors to compare and their scale: the outputs, and the logits before a Sigmoid/Softmax output.

    Probabilities are compared on the scale of a probability (1): random inputs saturate heads like
    PP-OCR det's to values near 0, where float32 noise is most of the value; their logits are not.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    names: dict[str, float | None] = {}
    for out in model.graph.output:
        node = producers.get(out.name)
        if node is not None and node.op_type in PROBABILITY_OPS:
            names[node.input[0]] = None
            names[out.name] = 1.0
        else:
            names[out.name] = None
    return names


@pytest.mark.parametrize("name", MODELS)
def test_model_matches_onnxruntime(name: str) -> None:
    """The whole model gives onnxruntime's outputs within 1e-4 of their scale."""
    path = ocr_model(Path(name).name) if name.startswith("third_party/rapidocr/") else ROOT / "models" / name
    model = onnx.load(str(path))
    assert_matches(model, model_feeds(model, path), compared(model), optimize=True)


@pytest.mark.parametrize("name", sorted(handmade.PATTERNS))
def test_handmade_pattern_matches_onnxruntime(name: str) -> None:
    """Every hand-built pattern (PRelu, GroupNorm-18/21, Tile, Resize sizes, opset 9 and 23 ...) matches."""
    model = handmade.PATTERNS[name](0)
    assert_matches(model, {"x": randn(*[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])})


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
@given(random_graphs.cnn_models())
def test_random_graphs_match_onnxruntime(model: onnx.ModelProto) -> None:
    """Random CNNs of the fuzz vocabulary (opsets 11-21, every pad / split / resize spelling) match."""
    feeds = {"x": randn(*[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])}
    assert_matches(model, feeds, what=f"{random_graphs.describe(model)}: ")


# -- one op family at a time ------------------------------------------------------
POSITIVE = np.abs(randn(2, 3, 4)) + 0.1
UNARY = [("Relu", 17, {}), ("Sigmoid", 17, {}), ("Tanh", 17, {}), ("Exp", 17, {}), ("Abs", 17, {}),
         ("Neg", 17, {}), ("Reciprocal", 17, {}), ("Erf", 17, {}), ("Sin", 17, {}), ("Cos", 17, {}),
         ("Floor", 17, {}), ("Ceil", 17, {}), ("Round", 17, {}), ("Sign", 17, {}), ("Softsign", 17, {}),
         ("Softplus", 17, {}), ("Mish", 18, {}), ("Identity", 17, {}), ("IsNaN", 17, {}), ("IsInf", 17, {}),
         ("LeakyRelu", 17, {}), ("LeakyRelu", 17, {"alpha": 0.3}), ("Elu", 17, {"alpha": 0.7}), ("Selu", 17, {}),
         ("Celu", 17, {"alpha": 2.0}), ("HardSigmoid", 17, {}), ("HardSigmoid", 17, {"alpha": 0.25, "beta": 0.4}),
         ("HardSwish", 17, {}), ("Gelu", 20, {}), ("Gelu", 20, {"approximate": "tanh"}),
         ("ThresholdedRelu", 17, {"alpha": 0.5}), ("Shrink", 17, {"lambd": 0.4, "bias": 0.1}), ("Dropout", 17, {}),
         ("Tan", 17, {"scale": 0.4}), ("Atan", 17, {}), ("Sinh", 17, {}), ("Cosh", 17, {}), ("Asinh", 17, {}),
         ("Asin", 17, {"scale": 0.3}), ("Acos", 17, {"scale": 0.3}), ("Atanh", 17, {"scale": 0.3}),
         ("Acosh", 17, {"positive": 1.0}), ("Log", 17, {"positive": 0.0}), ("Sqrt", 17, {"positive": 0.0})]


@pytest.mark.parametrize("op_type, opset, attrs", UNARY, ids=[f"{o}-{i}" for i, (o, _, _) in enumerate(UNARY)])
def test_unary(op_type: str, opset: int, attrs: dict) -> None:
    """Activations and elementwise math, with their attribute variants."""
    attrs = dict(attrs)
    shift, scale = attrs.pop("positive", None), attrs.pop("scale", 3.0)
    x = POSITIVE + shift if shift is not None else randn(2, 3, 4) * scale
    check_node(op_type, {"x": x}, opset=opset, **attrs)


def test_elementwise_binary_and_variadic() -> None:
    """Broadcast arithmetic, integer division and modulo, comparisons, logic, Pow, variadic Max/Min/Sum/Mean."""
    a, b, c = randn(2, 3, 4), randn(3, 1), randn(4)
    for op_type in ("Add", "Sub", "Mul", "Div", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"):
        check_node(op_type, {"a": a, "b": b})
    for op_type in ("Max", "Min", "Sum", "Mean"):
        check_node(op_type, {"a": a, "b": b, "c": c})
    ints, divisors = i64(7, -7, 9, -9, 5), i64(2, 2, -4, -4, 3)
    for op_type, attrs in (("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1})):
        check_node(op_type, {"a": ints, "b": divisors}, **attrs)
    check_node("Mod", {"a": a, "b": np.full((4,), 0.7, np.float32)}, fmod=1)
    check_node("Pow", {"a": POSITIVE, "b": randn(4)})
    check_node("Pow", {"a": a, "b": i64(2)})
    masks = {"a": rng.random((3, 4)) > 0.5, "b": rng.random((4,)) > 0.5}
    for op_type in ("And", "Or", "Xor"):
        check_node(op_type, masks)
    check_node("Not", {"a": masks["a"]})
    for op_type in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
        check_node(op_type, {"a": ints, "b": divisors}, opset=18)
    check_node("Where", {"c": masks["a"], "x": randn(2, 3, 4), "y": randn(4)})
    check_node("PRelu", {"x": randn(2, 3, 4, 4)}, {"slope": randn(3, 1, 1)})


@pytest.mark.parametrize("opset", [6, 11, 13])
def test_clip(opset: int) -> None:
    """Clip bounds as attributes (opset < 11) or optional inputs, one or both, integer too."""
    x = randn(2, 3, 4) * 3
    if opset < 11:
        check_node("Clip", {"x": x}, opset=opset, min=-1.0, max=0.5)
        check_node("Clip", {"x": x}, opset=opset, max=0.5)
        return
    check_node("Clip", {"x": x}, {"lo": np.float32(-1), "hi": np.float32(0.5)}, opset=opset)
    check_node("Clip", {"x": x}, {"hi": np.float32(0.5)}, order=["x", "", "hi"], opset=opset)
    check_node("Clip", {"x": x}, {"lo": np.float32(0)}, opset=opset)
    check_node("Clip", {"x": x}, opset=opset)
    if opset >= 12:
        check_node("Clip", {"x": i64(-5, 0, 3, 9)}, {"lo": i64(-2).reshape(()), "hi": i64(4).reshape(())}, opset=opset)


@pytest.mark.parametrize("to", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8,
                                TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL])
def test_cast(to: int) -> None:
    """Cast from float (truncating toward zero), from int64 and from bool to every type the models use."""
    unsigned = to == TensorProto.UINT8
    check_node("Cast", {"x": np.abs(randn(3, 4) * 20) if unsigned else randn(3, 4) * 20}, to=to)
    check_node("Cast", {"x": i64(3, 0, 5, 7) if unsigned else i64(-3, 0, 5, 7)}, to=to)
    check_node("Cast", {"x": rng.random((3,)) > 0.5}, to=to)
    check_node("CastLike", {"x": i64(1, 2, 3), "like": randn(1)})


REDUCE = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]


@pytest.mark.parametrize("op_type", REDUCE)
def test_reductions(op_type: str) -> None:
    """Axes as attribute (opset 13, ReduceSum's input) and as input (18), keepdims, negative, none, noop."""
    x = randn(2, 3, 4, 5)
    x = np.abs(x) + 0.1 if op_type == "ReduceLogSum" else x
    axes_input = op_type == "ReduceSum"
    for keepdims in (0, 1):
        if axes_input:
            check_node(op_type, {"x": x}, {"axes": i64(1, -1)}, opset=13, keepdims=keepdims)
        else:
            check_node(op_type, {"x": x}, opset=13, axes=[1, -1], keepdims=keepdims)
        check_node(op_type, {"x": x}, {"axes": i64(-2)}, opset=18, keepdims=keepdims)
    check_node(op_type, {"x": x}, opset=18, keepdims=0)
    check_node(op_type, {"x": x}, {"axes": np.zeros(0, np.int64)}, opset=18, noop_with_empty_axes=1)
    check_node(op_type, {"x": x}, opset=11, axes=[0, 2])


def test_arg_extremes() -> None:
    """ArgMax / ArgMin with ties, keepdims and select_last_index."""
    x = rng.integers(0, 3, (3, 5)).astype(np.float32)
    for op_type in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            check_node(op_type, {"x": x}, axis=1, keepdims=0, select_last_index=last)
            check_node(op_type, {"x": x}, axis=-2, keepdims=1, select_last_index=last)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_axis_semantics(op_type: str, opset: int) -> None:
    """Before opset 13 the input is coerced to 2-D at `axis`; from 13 the op runs along one axis."""
    x = randn(2, 3, 4)
    for axis in (1, -1, 0):
        check_node(op_type, {"x": x}, opset=opset, axis=axis)
    check_node(op_type, {"x": x}, opset=opset)


def test_cumsum_trilu_einsum() -> None:
    """CumSum's exclusive/reverse, Trilu's diagonals, Einsum equations."""
    x = randn(3, 4)
    for exclusive in (0, 1):
        for reverse in (0, 1):
            check_node("CumSum", {"x": x}, {"axis": i64(1).reshape(())}, exclusive=exclusive, reverse=reverse)
    for upper in (0, 1):
        check_node("Trilu", {"x": x}, {"k": i64(1).reshape(())}, upper=upper)
        check_node("Trilu", {"x": x}, upper=upper)
    check_node("Einsum", {"a": randn(2, 3, 4), "b": randn(2, 4, 5)}, equation="bij,bjk->bik")
    check_node("Einsum", {"a": randn(3, 4)}, equation="ij->ji")


CONV = [
    ({}, 2), ({"pads": [1, 1, 1, 1]}, 2), ({"pads": [0, 1, 2, 1], "strides": [2, 1]}, 2),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 2), ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 2),
    ({"auto_pad": "VALID", "dilations": [2, 2]}, 2), ({"group": 3, "pads": [1, 1, 1, 1]}, 2),
    ({"pads": [2, 1], "strides": [3], "dilations": [2]}, 1), ({"auto_pad": "SAME_UPPER"}, 1),
    ({"pads": [1, 0, 1, 1, 0, 1], "strides": [1, 2, 1]}, 3),
]


@pytest.mark.parametrize("attrs, dims", CONV, ids=[str(i) for i in range(len(CONV))])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(attrs: dict, dims: int, bias: bool) -> None:
    """1-D / 2-D / 3-D Conv with explicit, asymmetric and automatic pads, strides, dilations, groups."""
    group = attrs.get("group", 1)
    consts = {"w": randn(6, 3 // group, *[3] * dims)} | ({"b": randn(6)} if bias else {})
    check_node("Conv", {"x": randn(2, 3, *[9, 8, 7][:dims])}, consts, **attrs)


CONV_T = [
    ({}, 2), ({"strides": [2, 2]}, 2), ({"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, 2),
    ({"strides": [2, 2], "pads": [0, 1, 2, 1]}, 2), ({"strides": [2, 2], "output_shape": [10, 9]}, 2),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, 2), ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, 2),
    ({"dilations": [2, 2], "group": 3}, 2), ({"strides": [3], "pads": [1, 2]}, 1),
    ({"strides": [2, 1, 2], "pads": [1, 0, 0, 1, 0, 1]}, 3),
]


@pytest.mark.parametrize("attrs, dims", CONV_T, ids=[str(i) for i in range(len(CONV_T))])
def test_conv_transpose(attrs: dict, dims: int) -> None:
    """ConvTranspose with strides, pads, output_padding, output_shape, auto_pad, dilations, groups."""
    group = attrs.get("group", 1)
    consts = {"w": randn(3, 6 // group, *[3] * dims), "b": randn(6)}
    check_node("ConvTranspose", {"x": randn(2, 3, *[5, 4, 3][:dims])}, consts, **attrs)


def test_gemm_matmul() -> None:
    """Gemm's transA / transB / alpha / beta and C shapes; MatMul's 1-D and broadcast batch operands."""
    a, b = randn(4, 5), randn(5, 3)
    for ta in (0, 1):
        for tb in (0, 1):
            feeds = {"a": a.T.copy() if ta else a, "b": b.T.copy() if tb else b}
            check_node("Gemm", feeds, {"c": randn(3)}, transA=ta, transB=tb, alpha=0.5, beta=2.0)
    check_node("Gemm", {"a": a, "b": b})
    check_node("Gemm", {"a": a, "b": b}, {"c": randn(4, 1)}, beta=-1.0)
    check_node("Gemm", {"a": a, "b": b}, {"c": np.float32(0.3).reshape(())})
    check_node("MatMul", {"a": randn(2, 1, 4, 5), "b": randn(3, 5, 2)})
    check_node("MatMul", {"a": randn(5), "b": randn(2, 5, 3)})
    check_node("MatMul", {"a": randn(2, 4, 5), "b": randn(5)})


POOLS = [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, 2),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, 2),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 2),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1]}, 2),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2]}, 2),
    ("MaxPool", {"kernel_shape": [3, 3], "dilations": [2, 2]}, 2),
    ("MaxPool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, 2),
    ("MaxPool", {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, 1),
    ("MaxPool", {"kernel_shape": [2, 2, 2]}, 3),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, 2),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 2),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 2),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 2),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, 2),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1]}, 2),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1], "count_include_pad": 1}, 2),
    ("AveragePool", {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER", "strides": [2, 2]}, 2),
    ("AveragePool", {"kernel_shape": [3], "strides": [2]}, 1),
    ("AveragePool", {"kernel_shape": [2, 2, 2], "pads": [1, 1, 1, 1, 1, 1]}, 3),
]


@pytest.mark.parametrize("op_type, attrs, dims", POOLS, ids=[f"{p[0]}-{i}" for i, p in enumerate(POOLS)])
def test_pooling(op_type: str, attrs: dict, dims: int) -> None:
    """Pools with pads (symmetric, asymmetric, wide), auto_pad, ceil_mode, count_include_pad, dilations."""
    check_node(op_type, {"x": randn(2, 3, *[9, 8, 7][:dims])}, **attrs)


def test_global_pools_and_max_pool_indices() -> None:
    """GlobalAverage/MaxPool, and MaxPool's Indices output."""
    x = randn(2, 3, 6, 5)
    check_node("GlobalAveragePool", {"x": x})
    check_node("GlobalMaxPool", {"x": x})
    check_node("MaxPool", {"x": x}, outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    check_node("MaxPool", {"x": x}, outputs=2, kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def test_normalizations() -> None:
    """BatchNorm (opsets 9, 15), Instance/Layer (axes, Mean/InvStdDev outputs)/Group (18, 21)/Lp norms, LRN."""
    x = randn(2, 4, 5, 3)
    stats = {"scale": randn(4), "bias": randn(4), "mean": randn(4), "var": np.abs(randn(4)) + 0.5}
    for opset in (9, 15):
        check_node("BatchNormalization", {"x": x}, stats, opset=opset, epsilon=1e-3)
    check_node("BatchNormalization", {"x": randn(3, 4)}, stats)
    check_node("InstanceNormalization", {"x": x}, {"scale": randn(4), "bias": randn(4)}, epsilon=1e-4)
    check_node("LayerNormalization", {"x": x}, {"scale": randn(3), "bias": randn(3)}, outputs=3)
    check_node("LayerNormalization", {"x": x}, {"scale": randn(5, 3)}, axis=-2, epsilon=1e-3)
    check_node("LayerNormalization", {"x": x}, {"scale": randn(4, 5, 3), "bias": randn(4, 5, 3)}, axis=1, outputs=3)
    check_node("GroupNormalization", {"x": x}, {"scale": randn(4), "bias": randn(4)}, opset=21, num_groups=2)
    check_node("GroupNormalization", {"x": x}, {"scale": randn(2), "bias": randn(2)}, opset=18, num_groups=2)
    for p in (1, 2):
        check_node("LpNormalization", {"x": x}, p=p, axis=1)
    check_node("LRN", {"x": x}, size=3)
    check_node("LRN", {"x": x}, size=5, alpha=1e-3, beta=0.5, bias=2.0)
    check_node("MeanVarianceNormalization", {"x": x})


def test_shape_ops() -> None:
    """Shape (start/end), Size, Reshape (0, -1, allowzero), Flatten, Transpose, Squeeze / Unsqueeze by opset."""
    x = randn(2, 3, 4, 5)
    check_node("Shape", {"x": x})
    check_node("Shape", {"x": x}, opset=15, start=1, end=-1)
    check_node("Shape", {"x": x}, opset=15, start=-10)
    check_node("Size", {"x": x})
    check_node("Reshape", {"x": x}, {"s": i64(0, -1, 5)})
    check_node("Reshape", {"x": x}, {"s": i64(0, 0, 20)}, allowzero=0)
    check_node("Reshape", {"x": np.zeros((0, 3), np.float32)}, {"s": i64(3, 0)}, allowzero=1)
    for axis in (0, 2, -1):
        check_node("Flatten", {"x": x}, axis=axis)
    check_node("Transpose", {"x": x}, perm=[0, 2, 3, 1])
    check_node("Transpose", {"x": x})
    y = randn(2, 1, 4, 1)
    check_node("Squeeze", {"x": y}, opset=11, axes=[-1])
    check_node("Squeeze", {"x": y}, {"axes": i64(1, 3)}, opset=13)
    check_node("Squeeze", {"x": y}, opset=13)
    check_node("Unsqueeze", {"x": y}, opset=11, axes=[0, -1])
    check_node("Unsqueeze", {"x": y}, {"axes": i64(-1, 1)}, opset=13)


def test_concat_split_slice() -> None:
    """Concat; Split sizes as attribute / input / num_outputs / equal; Slice steps, negatives, clamping."""
    x = randn(4, 6, 5)
    check_node("Concat", {"a": x, "b": randn(4, 2, 5)}, axis=-2)
    check_node("Concat", {"a": i64(1, 2), "b": i64(3)}, axis=0)
    check_node("Split", {"x": x}, opset=11, outputs=2, axis=1, split=[2, 4])
    check_node("Split", {"x": x}, {"s": i64(1, 2, 3)}, opset=13, outputs=3, axis=1)
    check_node("Split", {"x": x}, opset=13, outputs=3, axis=1)
    check_node("Split", {"x": x}, opset=18, outputs=3, axis=-1, num_outputs=3)
    big = np.iinfo(np.int64).max
    for starts, ends, axes, steps in (((1,), (-1,), (1,), (2,)), ((-1, 0), (-big, 3), (2, 0), (-1, 1)),
                                      ((10,), (-10,), (-1,), (-2,)), ((0, 2), (big, 100), (0, 1), (3, 1)),
                                      ((4,), (1,), (1,), (1,))):
        consts = {"s": i64(*starts), "e": i64(*ends), "a": i64(*axes), "p": i64(*steps)}
        check_node("Slice", {"x": x}, consts, opset=13)
    check_node("Slice", {"x": x}, {"s": i64(1), "e": i64(3)}, opset=13)
    check_node("Slice", {"x": x}, opset=9, starts=[1, -3], ends=[3, big], axes=[0, 2])


def test_gather_scatter() -> None:
    """Gather (negative, scalar and 2-D indices), GatherElements, GatherND (batch_dims), ScatterND / Elements."""
    x = randn(4, 5, 3)
    check_node("Gather", {"x": x}, {"i": i64(0, -1, 2)}, axis=1)
    check_node("Gather", {"x": x}, {"i": i64(-2).reshape(())}, axis=0)
    check_node("Gather", {"x": x}, {"i": i64([0, 1], [-1, 2])}, axis=-1)
    check_node("Gather", {"x": i64(2, 3, 4)}, {"i": i64(-1)})
    check_node("GatherElements", {"x": x}, {"i": rng.integers(-5, 5, (4, 2, 3))}, axis=1)
    check_node("GatherND", {"x": x}, {"i": i64([0, 1], [-1, 4])})
    check_node("GatherND", {"x": x}, {"i": rng.integers(0, 3, (4, 2, 1))}, batch_dims=1)
    check_node("ScatterND", {"x": x}, {"i": i64([0, 1], [3, -1]), "u": randn(2, 3)})
    check_node("ScatterND", {"x": x}, {"i": i64([0, 1], [3, 4]), "u": randn(2, 3)}, opset=16, reduction="add")
    idx = rng.integers(0, 5, (4, 2, 3))
    check_node("ScatterElements", {"x": x}, {"i": idx, "u": randn(4, 2, 3)}, axis=1)
    check_node("ScatterElements", {"x": x}, {"i": idx, "u": randn(4, 2, 3)}, opset=18, axis=1, reduction="max")


def test_tensor_construction() -> None:
    """Expand (both ways), Tile, Range (int / float), ConstantOfShape, Constant spellings, NonZero, Where."""
    check_node("Expand", {"x": randn(3, 1)}, {"s": i64(2, 1, 4)})
    check_node("Expand", {"x": randn(2, 3, 4)}, {"s": i64(1, 1)})
    check_node("Tile", {"x": randn(2, 3)}, {"r": i64(2, 3)})
    check_node("Range", {}, {"a": i64(2).reshape(()), "b": i64(11).reshape(()), "c": i64(3).reshape(())})
    check_node("Range", {}, {"a": np.float32(1), "b": np.float32(-2), "c": np.float32(-0.7)})
    check_node("ConstantOfShape", {}, {"s": i64(2, 3)})
    check_node("ConstantOfShape", {}, {"s": i64(3)}, value=numpy_helper.from_array(i64(7)))
    check_node("Constant", {}, value=numpy_helper.from_array(randn(2, 3)))
    check_node("Constant", {}, value_ints=[1, 2, 3])
    check_node("Constant", {}, value_float=0.5)
    check_node("NonZero", {"x": (rng.random((3, 4)) > 0.5).astype(np.float32)})


def test_space_depth() -> None:
    """DepthToSpace (DCR, CRD) and SpaceToDepth."""
    x = randn(2, 8, 3, 4)
    for mode in ("DCR", "CRD"):
        check_node("DepthToSpace", {"x": x}, blocksize=2, mode=mode)
    check_node("SpaceToDepth", {"x": randn(2, 3, 4, 6)}, blocksize=2)


PADS = [
    (10, {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "value": 1.5}), (10, {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "reflect"}),
    (10, {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "edge"}), (11, {"pads": i64(0, 0, 1, 2, 0, 0, 2, 1)}),
    (11, {"pads": i64(0, 1, 1, 2, 0, 0, 2, 1), "value": np.float32(-2)}),
    (13, {"pads": i64(0, 0, 2, 1, 0, 0, 1, 3), "mode": "reflect"}),
    (13, {"pads": i64(0, 0, 2, 1, 0, 0, 1, 3), "mode": "edge"}),
    (13, {"pads": i64(0, 0, -1, 2, 0, 0, 1, -2)}), (18, {"pads": i64(1, 2, 2, 0), "axes": i64(-1, 2)}),
    (19, {"pads": i64(0, 0, 2, 1, 0, 0, 1, 3), "mode": "wrap"}),
]


@pytest.mark.parametrize("opset, spec", PADS, ids=[str(i) for i in range(len(PADS))])
def test_pad(opset: int, spec: dict) -> None:
    """Pad modes (constant / reflect / edge / wrap), pads and value as attributes or inputs, axes, crops."""
    spec = dict(spec)
    x = randn(2, 3, 5, 4)
    if opset < 11:
        check_node("Pad", {"x": x}, opset=opset, **spec)
        return
    mode = spec.pop("mode", "constant")
    consts = {"pads": spec["pads"]}
    order = ["x", "pads"]
    if "value" in spec or "axes" in spec:
        order.append("value" if "value" in spec else "")
        consts.update({"value": spec["value"]} if "value" in spec else {})
    if "axes" in spec:
        order.append("axes")
        consts["axes"] = spec["axes"]
    check_node("Pad", {"x": x}, consts, order=order, opset=opset, mode=mode)


TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [np.array([1, 1, 2, 2], np.float32), np.array([1, 1, 0.5, 0.6], np.float32),
          np.array([1, 1, 1.7, 2.5], np.float32)]


@pytest.mark.parametrize("scales", range(len(SCALES)))
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_resize_modes(transform: str, scales: int) -> None:
    """Resize (opset 13) nearest in every nearest_mode, linear and cubic, for each coordinate transformation."""
    x = randn(2, 3, 5, 6)
    consts = {"scales": SCALES[scales]}
    for nearest in NEAREST:
        check_node("Resize", {"x": x}, consts, order=["x", "", "scales"], opset=13, mode="nearest",
                   coordinate_transformation_mode=transform, nearest_mode=nearest)
    check_node("Resize", {"x": x}, consts, order=["x", "", "scales"], opset=13, mode="linear",
               coordinate_transformation_mode=transform)
    check_node("Resize", {"x": x}, consts, order=["x", "", "scales"], opset=13, mode="cubic",
               coordinate_transformation_mode=transform)


def test_resize_spellings() -> None:
    """Sizes input, roi input (opset 11), opset 10 and Upsample-9, cubic options, axes, aspect policies, 1-D/3-D."""
    x = randn(1, 2, 5, 6)
    roi = np.array([], np.float32)
    check_node("Resize", {"x": x}, {"roi": roi, "scales": np.array([], np.float32), "sizes": i64(1, 2, 9, 4)},
               opset=11, mode="linear")
    check_node("Resize", {"x": x}, {"roi": roi, "scales": SCALES[0]}, opset=11, mode="nearest",
               coordinate_transformation_mode="tf_half_pixel_for_nn")
    check_node("Resize", {"x": x}, {"sizes": i64(1, 2, 8, 11)}, order=["x", "", "", "sizes"], opset=13,
               mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    for scales in (SCALES[0], np.array([1, 1, 1.5, 3], np.float32)):  # onnxruntime: no downsampling here
        for mode in ("nearest", "linear"):
            check_node("Resize", {"x": x}, {"scales": scales}, opset=10, mode=mode)
            check_node("Upsample", {"x": x}, {"scales": scales}, opset=9, mode=mode)
    check_node("Resize", {"x": x}, {"scales": SCALES[2]}, order=["x", "", "scales"], opset=13, mode="cubic",
               cubic_coeff_a=-0.5, exclude_outside=1)
    check_node("Resize", {"x": x}, {"scales": np.array([2, 1.5], np.float32)}, order=["x", "", "scales"], opset=18,
               mode="linear", axes=[3, 2])
    for policy in ("not_larger", "not_smaller"):
        check_node("Resize", {"x": x}, {"sizes": i64(7, 7)}, order=["x", "", "", "sizes"], opset=18, mode="linear",
                   axes=[2, 3], keep_aspect_ratio_policy=policy)
    check_node("Resize", {"x": x}, {"scales": SCALES[2]}, order=["x", "", "scales"], opset=19, mode="linear",
               coordinate_transformation_mode="half_pixel_symmetric")
    check_node("Resize", {"x": randn(2, 3, 7)}, {"scales": np.array([1, 1, 2.5], np.float32)},
               order=["x", "", "scales"], opset=13, mode="linear")
    check_node("Resize", {"x": randn(1, 2, 3, 4, 5)}, {"scales": np.array([1, 1, 2, 1.5, 0.5], np.float32)},
               order=["x", "", "scales"], opset=13, mode="nearest")


ATTENTION = [
    ("4d", {}), ("4d causal", {"is_causal": 1}), ("4d scale", {"scale": 0.3}), ("4d softcap", {"softcap": 2.0}),
    ("4d bool mask", {"mask": "bool"}), ("4d float mask", {"mask": "float"}),
    ("4d causal mask", {"mask": "float", "is_causal": 1}),
    ("4d gqa", {"kv_heads": 2}), ("4d past", {"past": True}), ("4d past causal", {"past": True, "is_causal": 1}),
    ("3d", {"three_d": True}), ("3d gqa mask", {"three_d": True, "kv_heads": 2, "mask": "bool"}),
]


@pytest.mark.parametrize("case, spec", ATTENTION, ids=[c for c, _ in ATTENTION])
def test_attention_op23(case: str, spec: dict) -> None:
    """Attention-23: 3-D / 4-D inputs, bool / float masks, causal, scale, softcap, GQA, KV cache."""
    spec = dict(spec)
    b, heads, kv_heads, length, size = 2, 4, spec.pop("kv_heads", 4), 5, 8
    q, k, v = randn(b, heads, length, size), randn(b, kv_heads, length, size), randn(b, kv_heads, length, size)
    feeds, order = {"q": q, "k": k, "v": v}, ["q", "k", "v"]
    attrs, outputs = {}, 1
    if spec.pop("three_d", False):
        feeds = {n: t.transpose(0, 2, 1, 3).reshape(b, length, -1) for n, t in feeds.items()}
        attrs = {"q_num_heads": heads, "kv_num_heads": kv_heads}
    mask = spec.pop("mask", None)
    past = spec.pop("past", False)
    total = length + 3 * past
    if mask is not None:
        feeds["m"] = rng.random((length, total)) > 0.3 if mask == "bool" else randn(length, total)
        feeds["m"][:, 0] = True if mask == "bool" else 0.0  # no fully masked row
        order.append("m")
    if past:
        feeds.update({"pk": randn(b, kv_heads, 3, size), "pv": randn(b, kv_heads, 3, size)})
        order += [""] * (mask is None) + ["pk", "pv"]
        outputs = 3
    check_node("Attention", feeds, order=order, opset=23, outputs=outputs, **attrs, **spec)


# -- graph behaviour: training, write-back, partial runs, refusals -----------------
def conv_gemm_model() -> onnx.ModelProto:
    """Conv + BN + Relu -> GAP -> Flatten -> Gemm, with a scalar Mul constant (not a default weight)."""
    b = handmade.Builder(3)
    h = b.relu(b.bn(b.conv("x", 3, 6), 6))
    h = b.op("Mul", [h, b.scalar(0.5)])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    b.gemm(h, 6, 4, out="y")
    return b.model("conv_gemm", [2, 3, 8, 8])


def test_default_trainable_weights() -> None:
    """Conv weight/bias, BN scale/bias and Gemm weight/bias learn by default; BN statistics and scalars do not."""
    graph = TorchGraph(conv_gemm_model())
    assert set(graph.trainable()) == {"conv1.weight", "conv1.bias", "bn1.gamma", "bn1.beta", "gemm1.weight",
                                      "gemm1.bias"}
    assert not graph.parameter("bn1.mean").requires_grad and not graph.parameter("const1").requires_grad
    only = graph.trainable({"gemm1.bias"})
    assert list(only) == ["gemm1.bias"] and not graph.parameter("conv1.weight").requires_grad
    with pytest.raises(OnnxPruneError, match="not float initializers"):
        graph.trainable({"nope"})


def test_gradients_then_write_back() -> None:
    """A loss has non-zero gradients on the weights; after a step, write_back changes only initializer values."""
    model = conv_gemm_model()
    graph = TorchGraph(model)
    params = graph.trainable()
    x = torch.from_numpy(randn(2, 3, 8, 8))
    loss = graph({"x": x})["y"].pow(2).mean()
    loss.backward()
    for name in ("conv1.weight", "gemm1.weight", "bn1.gamma"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    torch.optim.Adam(params.values(), lr=1e-2).step()
    written = graph.write_back(model)
    assert [(n.name, n.op_type, list(n.input), list(n.output), n.attribute) for n in written.graph.node] == \
        [(n.name, n.op_type, list(n.input), list(n.output), n.attribute) for n in model.graph.node]
    assert written.graph.input == model.graph.input and written.graph.output == model.graph.output
    assert written.opset_import == model.opset_import and written.ir_version == model.ir_version
    before = {t.name: t for t in model.graph.initializer}
    assert [t.name for t in written.graph.initializer] == list(before)
    changed = set()
    for t in written.graph.initializer:
        old = before[t.name]
        assert (t.data_type, list(t.dims)) == (old.data_type, list(old.dims))
        if not np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(old)):
            changed.add(t.name)
    assert changed == set(params)
    with torch.no_grad():
        want = graph({"x": x})["y"].numpy()
    assert error(session(written).run(None, {"x": x.numpy()})[0], want) <= TOL


def test_write_back_keeps_16_and_64_bit_initializers() -> None:
    """float16 weights train as float32 masters and go back as float16; float64 stays float64."""
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["xh", "wh"], ["yh"]),
             helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE),
             helper.make_node("MatMul", ["xd", "wd"], ["yd"])]
    consts = {"wh": randn(4, 3).astype(np.float16), "wd": randn(4, 3).astype(np.float64)}
    x = randn(2, 4)
    model = make_model(nodes, {"x": x}, ["yh", "yd"], consts)
    graph = TorchGraph(model)
    assert graph.parameter("wh").dtype == torch.float32 and graph.parameter("wd").dtype == torch.float64
    got = run_torch(model, {"x": x})
    for (name, g), w in zip(got.items(), session(model, optimize=False).run(None, {"x": x})):
        assert error(g, w) <= 1e-3, name
    with torch.no_grad():
        graph.parameter("wh").add_(1.0)
    written = {t.name: numpy_helper.to_array(t) for t in graph.write_back(model).graph.initializer}
    assert written["wh"].dtype == np.float16 and np.array_equal(written["wh"], (consts["wh"].astype(np.float32) + 1)
                                                                .astype(np.float16))
    assert written["wd"].dtype == np.float64 and np.array_equal(written["wd"], consts["wd"])


@pytest.mark.parametrize("name, cut", [("torchvision/resnet18_ts_bnkeep.onnx", 0.5),
                                       ("transformers/bert_dynamo.onnx", 0.6)])
def test_feeding_an_intermediate_tensor(name: str, cut: float) -> None:
    """Downstream of a fed block boundary, the result equals the run from the graph inputs."""
    model = onnx.load(str(ROOT / "models" / name))
    feeds = model_feeds(model, Path(name))
    graph = TorchGraph(model)
    adds = {t for n in graph.nodes if n.op_type == "Add" for t in n.outputs}
    node = next(n for n in graph.nodes[int(cut * len(graph.nodes)):]  # a residual block's end
                if n.op_type in ("Relu", "LayerNormalization") and n.inputs[0] in adds)
    boundary = node.outputs[0]
    torch_feeds = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        full = graph(torch_feeds, [boundary, *graph.graph_outputs])
        rest = {k: v for k, v in torch_feeds.items() if k == "attention_mask"}  # bert's mask feeds later nodes
        resumed = graph({boundary: full[boundary], **rest})
    for out in graph.graph_outputs:
        assert torch.equal(resumed[out], full[out])
    with torch.no_grad():
        doubled = graph({boundary: full[boundary] * 2, **rest})
    assert not torch.equal(doubled[graph.graph_outputs[0]], full[graph.graph_outputs[0]])


def test_unfed_graph_input_is_named() -> None:
    """A needed node reading an unfed graph input (a Shape of it, here) raises naming that input."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Reshape", ["h", "s"], ["y"])]
    model = make_model(nodes, {"x": randn(2, 3)}, ["y"])
    graph = TorchGraph(model)
    with pytest.raises(OnnxPruneError, match="needs graph input 'x', which was not fed"):
        graph({"h": torch.zeros(2, 3)})
    assert graph({"x": torch.ones(2, 3)}, ["h"])["h"].shape == (2, 3)
    with pytest.raises(OnnxPruneError, match="'z' is no tensor of the graph"):
        graph({"x": torch.ones(2, 3)}, ["z"])
    with pytest.raises(OnnxPruneError, match="the feed 'typo' is no tensor of the graph"):
        graph({"x": torch.ones(2, 3), "typo": torch.ones(1)})


def test_only_needed_nodes_run() -> None:
    """Asking for an early tensor runs only its producers (a broken later node is never evaluated)."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Reshape", ["h", "bad"], ["y"])]
    model = make_model(nodes, {"x": randn(2, 3)}, ["y"], {"bad": i64(7, 7)})
    graph = TorchGraph(model)
    assert graph({"x": torch.ones(2, 3)}, ["h"])["h"].shape == (2, 3)
    with pytest.raises(OnnxPruneError, match=r"node '#1' \(Reshape\) failed in PyTorch"):
        graph({"x": torch.ones(2, 3)})


def test_initializer_that_is_also_an_input() -> None:
    """A tensor both initializer and graph input (Paddle exports) is a default: a feed replaces it."""
    nodes = [helper.make_node("Mul", ["x", "s"], ["y"])]
    model = make_model(nodes, {"x": randn(2, 3)}, ["y"], {"s": np.float32(2.0).reshape(1)})
    model.graph.input.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [1]))
    graph = TorchGraph(model)
    x = torch.ones(2, 3)
    assert torch.equal(graph({"x": x})["y"], x * 2)
    assert torch.equal(graph({"x": x, "s": torch.tensor([5.0])})["y"], x * 5)
    assert graph.graph_inputs == ["x"]


def test_unsorted_graph_is_sorted() -> None:
    """Nodes stored out of order run in a topological order."""
    model = handmade.conv_bn_relu_chain(0)
    feeds = {"x": randn(1, 3, 16, 16)}
    want = run_torch(model, feeds)["y"]
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    assert np.array_equal(run_torch(model, feeds)["y"], want)


def test_constant_nodes_are_constants() -> None:
    """Constant node values are buffers, not Parameters (Paddle-style weights are not trained)."""
    graph = TorchGraph(handmade.paddle_constants(0))
    assert not list(graph.parameters()) and graph.trainable() == {}


def test_unsupported_op_refused_up_front() -> None:
    """An op without a function, or a control-flow node, is refused at construction with one line."""
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="r"),
             helper.make_node("FusedThing", ["h"], ["y"], name="odd", domain="com.example")]
    model = make_model(nodes, {"x": randn(2)}, ["y"])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(OnnxPruneError) as info:
        TorchGraph(model)
    assert str(info.value) == "recovery cannot run com.example.FusedThing (node 'odd') in PyTorch"
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("ReduceMax", ["x"], ["c"], keepdims=0),
             helper.make_node("Cast", ["c"], ["cb"], to=TensorProto.BOOL),
             helper.make_node("If", ["cb"], ["y"], name="choose", then_branch=branch, else_branch=branch)]
    with pytest.raises(OnnxPruneError, match=r"^recovery cannot run If \(node 'choose'\) in PyTorch$"):
        TorchGraph(make_model(nodes, {"x": randn(2)}, ["y"]))


def test_without_torch_the_error_says_how_to_install() -> None:
    """With torch missing, importing onnxprune works and constructing a TorchGraph raises OnnxPruneError."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import onnxprune, onnx\n"
            "from onnxprune.errors import OnnxPruneError\n"
            "from onnxprune.recovery.torch_graph import TorchGraph\n"
            "try:\n    TorchGraph(onnx.ModelProto())\n"
            "except OnnxPruneError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "recovery needs PyTorch: pip install 'onnxprune[recover]'", done.stderr
