"""Load, normalise and save ONNX models without touching the caller's object or file."""
from __future__ import annotations

import gc
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from .analysis.shapes import skeleton_model
from .errors import OnnxPruneError

MIN_OPSET, MAX_OPSET = 9, 23
TWO_GB = 2**31 - 1
BIG_WEIGHTS = 2**24  # above this, memory held by garbage is worth a collection
QUANTIZED_OPS = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QGemm",
}
ModelSource = str | os.PathLike | onnx.ModelProto

from onnx_graphsurgeon.logger import G_LOGGER  # noqa: E402

G_LOGGER.severity = G_LOGGER.ERROR


@dataclass
class Prepared:
    """A normalised copy of a model: its graphsurgeon graph plus what is needed to export it again."""

    graph: gs.Graph
    sha256: str
    opset: int
    template: onnx.ModelProto  # the original model without its graph: metadata, opsets, producer
    source: str = "<ModelProto>"
    names: dict[int, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # the model file, then its external data files

    @property
    def external_data(self) -> bool:
        return len(self.files) > 1


def copy_proto(message):
    """A detached copy of a protobuf message (a reference would keep the whole parsed model alive)."""
    out = type(message)()
    out.CopyFrom(message)
    return out


def read_model(src: ModelSource) -> tuple[onnx.ModelProto, str, list[Path]]:
    """A private copy of the model, its description, and the files it was read from (external data after)."""
    if isinstance(src, onnx.ModelProto):
        return copy_proto(src), "<ModelProto>", []
    path = Path(src)
    if not path.is_file():
        raise OnnxPruneError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        locations = sorted({d.value for t in model.graph.initializer if _uses_external_data(t)
                            for d in t.external_data if d.key == "location"})
        missing = [loc for loc in locations if not (path.parent / loc).is_file()]
        if missing:
            raise OnnxPruneError(f"{path}: its external data file {path.parent / missing[0]} is missing "
                                 "(keep the .data file next to the model)")
        if locations:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (DecodeError, RuntimeError, ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise OnnxPruneError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    return model, str(path), [path, *(path.parent / loc for loc in locations)]


def _uses_external_data(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def take_weights(model: onnx.ModelProto) -> tuple[str, dict[str, np.ndarray]]:
    """(content hash, initializer values by name), removing the initializers from the model.

    The hash is the same for one model whether its weights are raw, typed or external data: the
    proto without initializers, then each initializer's name, type, dims and values. The values are
    read into numpy once, here, so the parsed proto can be dropped and its memory freed.
    """
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    dtypes = [(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer]
    model.graph.ClearField("initializer")
    digest = hashlib.sha256(model.SerializeToString(deterministic=True))
    for name, data_type, dims in dtypes:
        digest.update(f"{name}|{data_type}|{dims}|".encode())
        digest.update(values[name].tobytes())
    return digest.hexdigest(), values


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise OnnxPruneError("model imports no version of the default ONNX operator set")


def check_supported(model: onnx.ModelProto, source: str) -> int:
    """Refuse what the tool does not understand; return the default-domain opset."""
    if not model.HasField("graph") or not model.graph.node or not model.ir_version:
        raise OnnxPruneError(f"{source}: not an ONNX model (no graph, no nodes or no IR version)")
    opset = default_opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise OnnxPruneError(f"{source}: opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})")
    quantized = sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)
    if quantized:
        raise OnnxPruneError(f"{source}: quantized models are not supported (found {', '.join(quantized)})")
    try:  # on the skeleton: the checker would serialise every weight otherwise
        onnx.checker.check_model(skeleton_model(model))
    except onnx.checker.ValidationError as exc:
        raise OnnxPruneError(f"{source}: invalid ONNX model ({_first_line(exc)})") from None
    return opset


def prepare(src: ModelSource) -> Prepared:
    """Read a model and normalise it: Constant nodes and constant subgraphs become initializers.

    Weights are held once, as numpy arrays in the graph; the parsed proto is released.
    """
    model, source, files = read_model(src)
    opset = check_supported(model, source)
    sha, values = take_weights(model)
    graph = gs.import_onnx(model)  # weights are unresolved names here; they become constants below
    graph.import_domains = [copy_proto(d) for d in model.opset_import]  # no reference into the model
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.name in values:
            t.to_constant(values[t.name])
    # exporters that keep initializers as inputs (older PyTorch, IR < 4 habits) list weights as graph
    # inputs: they are weights, not inputs to feed or shape (IR >= 4 needs no such listing)
    graph.inputs = [t for t in graph.inputs if not isinstance(t, gs.Constant)]
    if model.ir_version < 4:
        model.ir_version = 4
    if any(all(isinstance(t, gs.Constant) for t in node.inputs) for node in graph.nodes):
        graph.fold_constants(fold_shapes=False, recurse_subgraphs=False, error_ok=True)
        if sum(v.nbytes for v in values.values()) > BIG_WEIGHTS:
            gc.collect()  # folding leaves a cyclic copy of the graph that holds the weights until collected
    graph.cleanup(remove_unused_graph_inputs=False)
    model.graph.Clear()
    template = copy_proto(model)
    names = {id(node): node.name or f"{node.op}#{i}" for i, node in enumerate(graph.nodes)}
    return Prepared(graph, sha, opset, template, source, names, files)


def export(prep: Prepared, graph: gs.Graph | None = None) -> onnx.ModelProto:
    """Export a (possibly rewritten) graph with the original model's metadata, opsets and names."""
    out = gs.export_onnx(graph or prep.graph, do_type_check=False,
                         opset_imports=list(prep.template.opset_import))
    t = prep.template
    out.ir_version = t.ir_version
    out.producer_name, out.producer_version = t.producer_name, t.producer_version
    out.domain, out.model_version, out.doc_string = t.domain, t.model_version, t.doc_string
    del out.metadata_props[:]
    out.metadata_props.extend(t.metadata_props)
    del out.functions[:]
    out.functions.extend(t.functions)
    return out


def _over_two_gb(model: onnx.ModelProto) -> bool:
    """Over protobuf's limit? Sized exactly only when the weights alone come near it (ByteSize is slow)."""
    weights = sum(math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                  for t in model.graph.initializer)
    return weights > TWO_GB // 2 and model.ByteSize() > TWO_GB


def save_model(model: onnx.ModelProto, path: str | os.PathLike, external_data: bool | None = None,
               verify: Callable[[Path], None] | None = None) -> list[str]:
    """Write a model atomically; `verify` sees the written file before it is moved into place.

    Nothing is left at `path` when writing or verifying fails. Returns the paths written.
    """
    path = Path(path)
    external = bool(external_data) or _over_two_gb(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:  # onnx moves tensor data out of the proto it saves: keep the caller's intact
        model = copy_proto(model)
    tmpdir = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=path.parent))
    try:
        data_name = path.name + ".data"
        onnx.save_model(model, str(tmpdir / path.name), save_as_external_data=external,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        if verify is not None:
            verify(tmpdir / path.name)
        written = []
        for name in [data_name, path.name] if external else [path.name]:
            os.replace(tmpdir / name, path.parent / name)
            written.append(str(path.parent / name))
        return written
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
