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

from .graph.dynamic_int8 import IntegerOp, fold_integer_ops, restore_integer_ops
from .graph.nbits import NBitsOp, fold_nbits, restore_nbits
from .graph.qoperator import HANDLED as QOPERATOR_OPS, QLinearOp, fold_qoperator, restore_qoperator
from .graph.quantized import QuantizedWeight, Requantized, fold_weights, restore_weights
from .graph.shapes import skeleton_model
from .errors import OnnxPruneError

MIN_OPSET, MAX_OPSET = 9, 23
TWO_GB = 2**31 - 1
BIG_WEIGHTS = 2**24  # above this, memory held by garbage is worth a collection
# quantized formats not handled: integer kernels and onnxruntime's packed-weight ops (QDQ is handled; QLinear ops
# but those of graph.qoperator are refused too)
UNSUPPORTED_QUANTIZED = {
    "QAttention", "MatMulBnb4",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "GatherBlockQuantized", "QOrderedMatMul", "QOrderedAttention",
    "DequantizeBFP", "QuantizeBFP",
}
ModelSource = str | os.PathLike | onnx.ModelProto
Quantized = QuantizedWeight | IntegerOp | NBitsOp | QLinearOp

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
    quantized: list[Quantized] = field(default_factory=list)  # QDQ weights, dynamic int8 and MatMulNBits ops
    # folded to float (graph.quantized, graph.dynamic_int8, graph.nbits)
    requantized: Requantized | None = None  # what the last export that put them back did

    @property
    def external_data(self) -> bool:
        """The model keeps its weights in external data files."""
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
        for t in model.graph.initializer:  # small external tensors join the proto; big ones are read later
            if _uses_external_data(t) and _external_bytes(t) <= SMALL_EXTERNAL:
                onnx.external_data_helper.load_external_data_for_tensor(t, str(path.parent))
                t.data_location = onnx.TensorProto.DEFAULT
                del t.external_data[:]
    except (DecodeError, RuntimeError, ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise OnnxPruneError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    return model, str(path), [path, *(path.parent / loc for loc in locations)]


def _uses_external_data(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


SMALL_EXTERNAL = 4096  # external tensors this small are loaded into the proto (checks read them there)


def _external_bytes(tensor: onnx.TensorProto) -> int:
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return math.prod(tensor.dims) * itemsize


def _read_external(tensor: onnx.TensorProto, base: Path) -> np.ndarray:
    """An external tensor's values straight from its file into numpy (never through the proto)."""
    info = onnx.external_data_helper.ExternalDataInfo(tensor)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    count = math.prod(tensor.dims)
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.BFLOAT16) or dtype.kind == "c":
        onnx.external_data_helper.load_external_data_for_tensor(tensor, str(base))
        return onnx.numpy_helper.to_array(tensor)
    with open(base / info.location, "rb") as f:
        values = np.fromfile(f, dtype=dtype.newbyteorder("<"), count=count, offset=info.offset or 0)
    if values.size != count:
        raise OnnxPruneError(f"external data of '{tensor.name}' in {base / info.location} is truncated")
    return values.astype(dtype, copy=False).reshape(tuple(tensor.dims))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def take_weights(model: onnx.ModelProto, base: Path | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """(content hash, initializer values by name), removing the initializers from the model.

    The hash is the same for one model whether its weights are raw, typed or external data: the
    proto without initializers, then each initializer's name, type, dims and values. The values are
    read into numpy once, here, so the parsed proto can be dropped and its memory freed.
    """
    values = {t.name: _read_external(t, base) if _uses_external_data(t) else onnx.numpy_helper.to_array(t)
              for t in model.graph.initializer}
    dtypes = [(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer]
    model.graph.ClearField("initializer")
    digest = hashlib.sha256(model.SerializeToString(deterministic=True))
    for name, data_type, dims in dtypes:
        digest.update(f"{name}|{data_type}|{dims}|".encode())
        v = values[name]
        digest.update(v.tobytes() if v.dtype.kind == "O" else np.ascontiguousarray(v).reshape(-1).view(np.uint8))
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
    quantized = sorted({n.op_type for n in model.graph.node
                        if n.op_type in UNSUPPORTED_QUANTIZED or
                        (n.op_type.startswith("QLinear") and n.op_type not in QOPERATOR_OPS)})
    if quantized:
        raise OnnxPruneError(f"{source}: this quantized format is not supported (found {', '.join(quantized)}; "
                             "QDQ, QOperator, dynamic int8 and MatMulNBits models are)")
    try:  # on the skeleton: the checker would serialise every weight otherwise
        onnx.checker.check_model(skeleton_model(model))
    except onnx.checker.ValidationError as exc:
        raise OnnxPruneError(f"{source}: invalid ONNX model ({_first_line(exc)})") from None
    return opset


def _return_freed_memory() -> None:
    """glibc: serve blocks over 4 MB by mmap for good, so a freed weight-sized buffer goes back to the
    system; its default threshold grows with use, and freed weight copies then stay in the heap
    (seen: 1.2 GB held after exporting a 1.8 GB model). Nothing happens elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def prepare(src: ModelSource) -> Prepared:
    """Read a model and normalise it: Constant nodes and constant subgraphs become initializers.

    Weights are held once, as numpy arrays in the graph; the parsed proto is released.
    """
    model, source, files = read_model(src)
    opset = check_supported(model, source)
    sha, values = take_weights(model, files[0].parent if files else None)
    # a fresh proto of what is left: the parsed one keeps every weight's bytes in its arena while any
    # part of it is referenced, however its fields are cleared
    model = onnx.ModelProto.FromString(model.SerializeToString())
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
    if sum(v.nbytes for v in values.values()) > BIG_WEIGHTS:
        _return_freed_memory()
    # before constant folding
    quantized = fold_weights(graph) + fold_integer_ops(graph) + fold_nbits(graph) + fold_qoperator(graph)
    if any(all(isinstance(t, gs.Constant) for t in node.inputs) for node in graph.nodes):
        graph.fold_constants(fold_shapes=False, recurse_subgraphs=False, error_ok=True)
        if sum(v.nbytes for v in values.values()) > BIG_WEIGHTS:
            gc.collect()  # folding leaves a cyclic copy of the graph that holds the weights until collected
    graph.cleanup(remove_unused_graph_inputs=False)
    model.graph.Clear()
    template = copy_proto(model)
    names = {id(node): node.name or f"{node.op}#{i}" for i, node in enumerate(graph.nodes)}
    return Prepared(graph, sha, opset, template, source, names, files, quantized)


RAW_KINDS = "fiub"  # numpy kinds whose bytes are their ONNX raw_data (little-endian)


# by tensor (QDQ) or node (dynamic int8, MatMulNBits), with the channels kept on the quantization axis (MatMulNBits:
# {axis: kept} for both axes)
Targets = dict[str, tuple[Quantized, np.ndarray | dict[int, np.ndarray] | None]]


def target_key(record: Quantized) -> str:
    """What names a folded weight in `Targets`: a QDQ weight's tensor, a folded op's node."""
    return record.out if isinstance(record, QuantizedWeight) else record.node


def whole_weights(prep: Prepared) -> Targets:
    """Every folded quantized weight as it was folded (no channel removed): what `export(requantize=...)` restores."""
    return {target_key(w): (w, {} if isinstance(w, NBitsOp) else None) for w in prep.quantized}


def export(prep: Prepared, graph: gs.Graph | None = None, requantize: Targets | None = None) -> onnx.ModelProto:
    """Export a (possibly rewritten) graph with the original model's metadata, opsets and names.

    Big weights are exported as empty stand-ins and their bytes then written into the model one at
    a time, so the export holds one copy of the weights besides the graph's, never two. Folded QDQ
    weights stay float unless `requantize` names them (a model to write): then they go back behind
    their DequantizeLinear (graph.quantized), and prep.requantized says how that went.
    """
    graph = graph or prep.graph
    big = {t.name: (t, t.values) for t in graph.tensors().values() if isinstance(t, gs.Constant)
           and isinstance(t.values, np.ndarray) and t.values.nbytes > 4096 and t.values.dtype.kind in RAW_KINDS}
    for t, values in big.values():
        t.values = np.zeros(0, values.dtype)
    try:
        out = gs.export_onnx(graph, do_type_check=False, opset_imports=list(prep.template.opset_import))
    finally:
        for t, values in big.values():
            t.values = values
    for init in out.graph.initializer:
        if init.name in big:
            values = big[init.name][1]
            del init.dims[:]
            init.dims.extend(values.shape)
            init.raw_data = values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
    t = prep.template
    out.ir_version = t.ir_version
    out.producer_name, out.producer_version = t.producer_name, t.producer_version
    out.domain, out.model_version, out.doc_string = t.domain, t.model_version, t.doc_string
    del out.metadata_props[:]
    out.metadata_props.extend(t.metadata_props)
    del out.functions[:]
    out.functions.extend(t.functions)
    if requantize:
        ops = {k: v for k, v in requantize.items() if isinstance(v[0], IntegerOp)}
        nbits = {k: v for k, v in requantize.items() if isinstance(v[0], NBitsOp)}
        qop = {k: v for k, v in requantize.items() if isinstance(v[0], QLinearOp)}
        q_done, q_per_channel, q_clipped = restore_qoperator(out, qop) if qop else (0, 0, 0)
        done, per_channel, clipped = restore_integer_ops(out, ops) if ops else (0, 0, 0)
        packed, clipped_bits = restore_nbits(out, nbits) if nbits else (0, 0)
        stats = restore_weights(out, {k: v for k, v in requantize.items() if k not in ops and k not in nbits
                                      and k not in qop})
        prep.requantized = Requantized(stats.weights + done + packed + q_done,
                                       stats.clipped + clipped + clipped_bits + q_clipped,
                                       stats.per_channel + per_channel + packed + q_per_channel, done, packed)
    return out


def _save_external(model: onnx.ModelProto, path: Path, data_name: str, threshold: int = 1024) -> None:
    """Write the model with its tensors over `threshold` bytes in one data file beside it.

    One tensor's bytes at a time go to the file, and the proto written is a light copy that only
    names them, so the caller's model is left as it is and no second copy of the weights is made.
    """
    light, graph = onnx.ModelProto(), model.graph
    for desc, value in model.ListFields():
        if desc.name != "graph":
            _copy_field(light, desc, value)
    for desc, value in graph.ListFields():
        if desc.name != "initializer":
            _copy_field(light.graph, desc, value)
    with open(path.parent / data_name, "wb") as data:
        for t in graph.initializer:
            raw = t.raw_data if t.HasField("raw_data") else None
            if raw is None and t.data_type != onnx.TensorProto.STRING:
                raw = onnx.numpy_helper.to_array(t).astype(
                    onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<").tobytes()
            if raw is None or len(raw) <= threshold:
                light.graph.initializer.append(t)
                continue
            entry = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims,
                                     data_location=onnx.TensorProto.EXTERNAL)
            entry.doc_string = t.doc_string
            offset = data.tell()
            data.write(raw)
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry.external_data.add(key=key, value=value)
            light.graph.initializer.append(entry)
            del raw
    onnx.save_model(light, str(path))


def _copy_field(dst, field, value) -> None:
    """Copy one set field of a message into another of its type."""
    if hasattr(value, "extend") and not isinstance(value, (str, bytes)):  # a repeated field
        getattr(dst, field.name).extend(value)
    elif hasattr(value, "ListFields"):
        getattr(dst, field.name).CopyFrom(value)
    else:
        setattr(dst, field.name, value)


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
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=path.parent))
    except OSError as exc:
        raise OnnxPruneError(f"cannot write in folder {path.parent} ({exc.strerror})") from None
    try:
        data_name = path.name + ".data"
        if external:
            _save_external(model, tmpdir / path.name, data_name)
        else:
            onnx.save_model(model, str(tmpdir / path.name))
        if verify is not None:
            verify(tmpdir / path.name)
        written = []
        for name in [data_name, path.name] if external else [path.name]:
            os.replace(tmpdir / name, path.parent / name)
            written.append(str(path.parent / name))
        return written
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
