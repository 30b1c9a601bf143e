"""Export small random-weight Keras models to ONNX with tf2onnx (NHWC graphs) for the onnxprune tests.

    python3 -m venv /work/venv-tf
    /work/venv-tf/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx onnxruntime
    /work/venv-tf/bin/python tools/export_keras.py

Models (weights=None, seeded, random non-identity BatchNormalization statistics and affines):

- MobileNetV2 (keras.applications, alpha=0.35) at 96x96x3, 10 classes.
- EfficientNetB0's block layout (keras' EfficientNet constructor: all 16 MBConv blocks with SE
  and swish, depth 1.0) at width coefficient 0.25, 64x64x3, 10 classes.
- A keyword-spotting Conv1D net of our own on [batch, 98, 40] MFCC frames: Conv1D + BN + ReLU
  blocks, a residual Add, a SeparableConv1D, a DepthwiseConv1D, GlobalAveragePooling1D,
  Dense -> Dense (12 classes).

Each is converted by ``tf2onnx.convert.from_keras`` with its defaults (apart from the opset,
OPSET): NHWC graphs, so every Conv sits between Transposes, BN is a Mul + Add, Dense a MatMul +
Add, and Conv1D is a Conv2D between Reshape/Squeeze. The batch dim stays dynamic, as keras
gives it. Every file is checked (full onnx.checker, onnxruntime on CPU against keras) and
models/keras/README.md is rewritten.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import warnings
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # same numerics on every CPU
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
import tf2onnx.optimizer  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402
from keras.src.applications import efficientnet  # noqa: E402
from model_readme import write_model_readme  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "models" / "keras"
SEED = 0
OPSET = 15  # tf2onnx's default (PREFERRED_OPSET)
NUM_CLASSES = 10
SUMMARY_OPS = ("Conv", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Mul", "Add", "MatMul", "Relu", "Clip",
               "Sigmoid", "GlobalAveragePool", "ReduceMean", "Softmax", "Pad")


def build_mobilenet_v2() -> keras.Model:
    """keras.applications.MobileNetV2, alpha 0.35, 96x96."""
    return keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=NUM_CLASSES)


def build_efficientnet_b0() -> keras.Model:
    """EfficientNetB0's 16 MBConv blocks (SE, swish) at width coefficient 0.25, 64x64."""
    return efficientnet.EfficientNet(0.25, 1.0, 64, dropout_rate=0.2, name="efficientnetb0_w025", weights=None,
                                     input_shape=(64, 64, 3), classes=NUM_CLASSES)


def conv_bn_relu(x, filters: int, kernel: int, name: str, strides: int = 1):
    """Conv1D (no bias) + BatchNormalization + ReLU."""
    x = layers.Conv1D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_kws_conv1d() -> keras.Model:
    """Keyword spotting on 98 MFCC frames x 40 coefficients, 12 classes."""
    inputs = keras.Input((98, 40), name="mfcc")
    x = conv_bn_relu(inputs, 32, 5, "stem")
    shortcut = x
    x = conv_bn_relu(x, 32, 3, "res1a")
    x = layers.Conv1D(32, 3, padding="same", use_bias=False, name="res1b_conv")(x)
    x = layers.BatchNormalization(name="res1b_bn")(x)
    x = layers.Add(name="res1_add")([x, shortcut])
    x = layers.ReLU(name="res1_relu")(x)
    x = layers.SeparableConv1D(48, 3, strides=2, padding="same", use_bias=False, name="sep2")(x)
    x = layers.BatchNormalization(name="sep2_bn")(x)
    x = layers.ReLU(name="sep2_relu")(x)
    x = layers.DepthwiseConv1D(3, padding="same", use_bias=False, name="dw3")(x)
    x = layers.BatchNormalization(name="dw3_bn")(x)
    x = layers.ReLU(name="dw3_relu")(x)
    x = conv_bn_relu(x, 64, 1, "pw3")
    x = conv_bn_relu(x, 64, 3, "conv4", strides=2)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    outputs = layers.Dense(12, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="kws_conv1d")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """How to build one model and what it shows."""

    builder: Callable[[], keras.Model]
    file: str
    blocks: str
    skip_optimizers: tuple[str, ...] = ()  # tf2onnx optimizers left out (none: its defaults)


ARCHS: dict[str, ArchSpec] = {
    "mobilenet_v2": ArchSpec(build_mobilenet_v2, "mobilenet_v2_a0.35_96",
                             "keras.applications.MobileNetV2 (alpha 0.35): inverted residuals, ReLU6, depthwise"),
    # tf2onnx's transpose optimizer pushes the NHWC<->NCHW Transposes of a 2D CNN out to the input; without
    # it every Conv keeps its Transpose sandwich and every BN / activation / Add runs channels-last.
    "mobilenet_v2_notransposeopt": ArchSpec(build_mobilenet_v2, "mobilenet_v2_a0.35_96_notransposeopt",
                                            "the same MobileNetV2, converted without tf2onnx's transpose optimizer",
                                            skip_optimizers=("optimize_transpose",)),
    "efficientnet_b0": ArchSpec(build_efficientnet_b0, "efficientnet_b0_w0.25_64",
                                "EfficientNet constructor, B0 blocks at width 0.25: MBConv, SE, swish, "
                                "Rescaling + Normalization stem"),
    "kws_conv1d": ArchSpec(build_kws_conv1d, "kws_conv1d_98x40",
                           "own: Conv1D+BN+ReLU, residual Add, SeparableConv1D, DepthwiseConv1D, GAP1D, Dense->Dense"),
}


def randomize_norms(model: keras.Model, rng: np.random.Generator) -> None:
    """Random non-identity BatchNormalization gamma, beta, moving mean and variance."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, n).astype(np.float32),
                (0.1 * rng.standard_normal(n)).astype(np.float32),
                rng.standard_normal(n).astype(np.float32),
                rng.uniform(0.5, 2.0, n).astype(np.float32),
            ])


def randomize_biases(model: keras.Model, rng: np.random.Generator) -> None:
    """Small random biases: keras starts them at zero, and tf2onnx drops an Add of zeros (Dense -> bare MatMul)."""
    for layer in model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None and not isinstance(layer, layers.BatchNormalization):
            bias.assign((0.1 * rng.standard_normal(bias.shape)).astype(np.float32))


def make_model(arch: str) -> keras.Model:
    """Build ``arch`` deterministically with random weights."""
    keras.backend.clear_session()  # layer-name counters
    keras.utils.set_random_seed(SEED)
    model = ARCHS[arch].builder()
    rng = np.random.default_rng(SEED)
    randomize_norms(model, rng)
    randomize_biases(model, rng)
    return model


def make_input(model: keras.Model) -> np.ndarray:
    """Deterministic random batch-1 input for ``model``."""
    shape = (1, *model.input_shape[1:])
    return np.random.default_rng(SEED + 1).standard_normal(shape).astype(np.float32)


GENERATED = re.compile(r"^(?P<base>.*?)(?:__\d+)+(?P<port>:\d+)?$")


def canonical_names(proto: onnx.ModelProto) -> None:
    """Make names and initializer order independent of the run; the graph itself is left as tf2onnx wrote it.

    tf2onnx numbers the names it makes from a process-wide counter (``Conv__339``, ``unk__655``) and its
    optimizers visit nodes in an order that changes from run to run (sets of objects), so the numbers, the
    name a deduplicated constant keeps, and the initializer order vary while the graph and the values do
    not. Here every generated ``__N`` suffix (nodes, tensors, initializers, symbolic dims) is renumbered in
    graph order, an initializer shared by several consumers is named ``shared_const__N``, and initializers
    are stored in order of first use. Keras-derived names without a counter suffix are kept.
    """
    graph = proto.graph
    uses = collections.Counter(name for node in graph.node for name in node.input)
    inits = {t.name for t in graph.initializer}
    mapping: dict[str, str] = {}

    def canon(name: str) -> str:
        if not name or name in mapping:
            return mapping.get(name, name)
        match = GENERATED.match(name)
        if name in inits and uses[name] > 1:
            mapping[name] = f"shared_const__{len(mapping)}"
        elif match:
            stem = name[: match.start("port")] if match.group("port") else name
            if stem not in mapping:
                mapping[stem] = f"{match.group('base')}__{len(mapping)}"
            mapping[name] = mapping[stem] + (match.group("port") or "")
        else:
            mapping[name] = name
        return mapping[name]

    def canon_dims(value: onnx.ValueInfoProto) -> None:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = canon(dim.dim_param)

    for value in graph.input:
        value.name = canon(value.name)
        canon_dims(value)
    first_use: dict[str, tuple[int, int]] = {}
    for i, node in enumerate(graph.node):
        node.name = canon(node.name)
        for j, name in enumerate(node.input):
            first_use.setdefault(name, (i, j))
        node.input[:] = [canon(name) for name in node.input]
        node.output[:] = [canon(name) for name in node.output]
    for value in [*graph.output, *graph.value_info]:
        value.name = canon(value.name)
        canon_dims(value)
    tensors = sorted(graph.initializer, key=lambda t: first_use.get(t.name, (len(graph.node), 0)))
    for tensor in tensors:
        tensor.name = canon(tensor.name)
    assert len({t.name for t in tensors}) == len(tensors), "initializer names collide"
    graph.ClearField("initializer")
    graph.initializer.extend(tensors)


def export(model: keras.Model, path: pathlib.Path, skip_optimizers: tuple[str, ...] = ()) -> None:
    """tf2onnx.convert.from_keras with its defaults at OPSET (less ``skip_optimizers``), one input 'input'
    with a dynamic batch."""
    optimizers = None
    if skip_optimizers:
        optimizers = collections.OrderedDict(
            (name, opt) for name, opt in tf2onnx.optimizer._get_optimizers().items() if name not in skip_optimizers)
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)
    tf2onnx.utils.INTERNAL_NAME = 1  # tf2onnx's process-wide node-name counter: same names whatever ran before
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, optimizers=optimizers)
    canonical_names(proto)
    onnx.save(proto, str(path))


# --------------------------------------------------------------------------- checks


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """Facts about one exported and checked file."""

    name: str
    arch: str
    params: int
    size: int
    opset: int
    input_shape: str
    ops: collections.Counter
    rel_diff: float
    sha256: str


def dims(value: onnx.ValueInfoProto) -> str:
    """'Nx96x96x3' style shape of a graph input (N: a symbolic dim)."""
    return "x".join("N" if d.dim_param else str(d.dim_value) if d.dim_value else "?"
                    for d in value.type.tensor_type.shape.dim)


def check_file(path: pathlib.Path, arch: str, model: keras.Model, x: np.ndarray, ref: np.ndarray) -> FileInfo:
    """Full checker, one input / one output, embedded weights, onnxruntime == keras."""
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert len(proto.graph.input) == 1 and len(proto.graph.output) == 1, "expected one input and one output"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = session.run(None, {proto.graph.input[0].name: x})[0]
    assert out.shape == ref.shape, f"{path.name}: output shape {out.shape} != {ref.shape}"
    rel_diff = float(np.abs(out - ref).max()) / max(float(np.abs(ref).max()), 1e-6)
    assert rel_diff < 1e-3, f"{path.name}: onnxruntime/keras mismatch, rel diff {rel_diff:.2e}"
    return FileInfo(
        name=path.name, arch=arch, params=model.count_params(), size=path.stat().st_size,
        opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        input_shape=f"`{proto.graph.input[0].name}` {dims(proto.graph.input[0])}",
        ops=collections.Counter(n.op_type for n in proto.graph.node), rel_diff=rel_diff,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def summary_line(info: FileInfo) -> str:
    """One-line human summary of a checked file."""
    ops = " ".join(f"{op}={info.ops[op]}" for op in SUMMARY_OPS if info.ops.get(op))
    return (f"{info.name:34s} {info.size / 1024:7.1f} KB  nodes={sum(info.ops.values()):3d}  {ops}  "
            f"rel_diff={info.rel_diff:.1e}  sha256={info.sha256[:12]}")


# --------------------------------------------------------------------------- readme


def readme_row(info: FileInfo) -> str:
    """One markdown table row of the README."""
    return (f"| `{info.name}` | {ARCHS[info.arch].blocks} | tf2onnx {tf2onnx.__version__} (opset {info.opset}) "
            f"| {info.input_shape} | {info.params:,} | {info.size / 1024:.1f} KB |")


def write_readme(infos: list[FileInfo]) -> None:
    """Write models/keras/README.md."""
    rows = [readme_row(info) for info in infos]
    text = f"""# Keras / TensorFlow test models (tf2onnx, NHWC)

These ONNX files are small random-weight Keras models (weights=None, seeded, random non-identity
BatchNormalization gamma/beta/moving mean/moving variance, small random biases) converted by
tf2onnx, made by `tools/export_keras.py` for the onnxprune tests. They are here for the graph
patterns tf2onnx writes for channels-last (NHWC) models, which PyTorch exports never show:

- tf2onnx converts each NHWC Conv2D as Transpose(perm 0,3,1,2) -> Conv -> Transpose(perm
  0,2,3,1). With its defaults (the transpose optimizer on), those Transposes of a 2D CNN are
  pushed out until a single one is left at the input and the rest of the graph is NCHW
  (`mobilenet_v2_a0.35_96.onnx`, `efficientnet_b0_w0.25_64.onnx`).
  `mobilenet_v2_a0.35_96_notransposeopt.onnx` is the same model converted with every default
  optimizer but that one: each of its 52 Convs keeps its Transpose sandwich, and the BN Mul/Add,
  Clip (ReLU6), residual Add, Pad (8 NHWC pads) and ReduceMean (GlobalAveragePooling2D) run
  channels-last on [C] vectors.
- BatchNormalization after a plain Conv2D has its scale folded into the kernel by TensorFlow's
  graph optimization (`merged_input`) and its shift (`sub`) becomes the Conv bias once the
  transposes are gone (without the transpose optimizer it stays an Add after the Transpose);
  after a DepthwiseConv2D or a Conv1D it stays Mul + Add with a [1, C, 1, 1] / [1, C, 1] (NCHW)
  or [C] (NHWC) constant.
- Dense is MatMul + Add, and the classifiers end in Softmax (keras' default); the SE blocks are GlobalAveragePool -> Squeeze -> Reshape -> 1x1 Conv.
  EfficientNet's stem is Rescaling + Normalization (Mul, Add, Mul on the NHWC input).
- Conv1D is Unsqueeze (or ExpandDims) -> [Transpose] -> Conv with a 1xK kernel -> Squeeze, the
  channel axis moving between 3-D [N, T, C] / [N, C, T] and 4-D tensors; the residual Add of
  `kws_conv1d_98x40.onnx` is taken channels-last, between Transposes with perm 0,2,1.
- The batch dim is dynamic (`unk__N`), as keras gives it.

Converted with `tf2onnx.convert.from_keras` and its defaults at opset {OPSET} (tf2onnx's own
default), by tensorflow-cpu {tf.__version__} / keras {keras.__version__} / tf2onnx {tf2onnx.__version__}, one
process per model. tf2onnx numbers the names it makes from a process-wide counter, and its
optimizers visit nodes in an order that changes from run to run, so the script renumbers the
generated `__N` name suffixes in graph order, names constants shared by several nodes
`shared_const__N` and stores initializers in order of first use (the graph is left as tf2onnx
wrote it); reruns then give the same bytes.

The parameter count is keras' `count_params()`. Regenerate them in a virtualenv outside the
repo:

```
python3 -m venv /work/venv-tf
/work/venv-tf/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx onnxruntime
/work/venv-tf/bin/python tools/export_keras.py
```

"""
    columns = ["file", "architecture", "exporter", "input", "parameters", "size"]
    write_model_readme(OUT_DIR, text, columns, rows, [info.size for info in infos])


# --------------------------------------------------------------------------- main


def export_arch(arch: str) -> FileInfo:
    """Build, export and check ``arch``."""
    model = make_model(arch)
    x = make_input(model)
    ref = model(x, training=False).numpy()
    path = OUT_DIR / f"{ARCHS[arch].file}.onnx"
    export(model, path, ARCHS[arch].skip_optimizers)
    info = check_file(path, arch, model, x, ref)
    print(summary_line(info), flush=True)
    return info


def export_in_subprocess(arch: str) -> FileInfo:
    """Run ``--one arch`` in a fresh interpreter: tf2onnx's node-name counters and TF's graph names depend on
    what the process converted before, so one process per model makes each file's bytes independent of order."""
    result = subprocess.run([sys.executable, __file__, "--one", arch], check=True, stdout=subprocess.PIPE, text=True)
    *lines, last = result.stdout.strip().splitlines()
    print("\n".join(lines), flush=True)
    fields = json.loads(last)
    fields["ops"] = collections.Counter(fields["ops"])
    return FileInfo(**fields)


def main() -> None:
    """Export every model in ARCHS (or those given), one process each, and write the README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHS), help="only these (README not rewritten)")
    parser.add_argument("--one", choices=sorted(ARCHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if args.one:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        tf2onnx.logging.set_level(logging.ERROR)
        warnings.filterwarnings("ignore")
        info = export_arch(args.one)
        print(json.dumps({**vars(info), "ops": dict(info.ops)}))
        return
    infos = [export_in_subprocess(arch) for arch in args.arch or ARCHS]
    print(f"total {sum(i.size for i in infos) / 1024 / 1024:.2f} MB in {len(infos)} files")
    if not args.arch:
        write_readme(infos)


if __name__ == "__main__":
    sys.exit(main())
