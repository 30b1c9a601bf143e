"""Shape inference over a weight-free skeleton of the graph, so big models are not copied."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from ..errors import OnnxPruneError
from .contrib_shapes import stand_in

Dim = int | str | None
Shape = tuple[Dim, ...]
SMALL_BYTES = 4096  # constants this small keep their values: shape inference reads Reshape targets etc.


def _skeleton(graph: gs.Graph, opset_imports, input_dims: dict[str, tuple[int, ...]] | None) -> onnx.ModelProto:
    """A model with the graph's nodes, big constants turned into typed inputs, inputs optionally fixed."""
    inputs, inits = [], []
    for t in graph.tensors().values():
        if not isinstance(t, gs.Constant):
            continue
        if t.values.nbytes <= SMALL_BYTES:
            inits.append(onnx.numpy_helper.from_array(t.values, t.name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(t.values.dtype)
            inputs.append(helper.make_tensor_value_info(t.name, elem, t.values.shape))
    for t in graph.inputs:
        dims = (input_dims or {}).get(t.name, t.shape)
        elem = helper.np_dtype_to_tensor_dtype(t.dtype) if t.dtype is not None else onnx.TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info(t.name, elem, dims))
    nodes = [p for n in graph.nodes for p in stand_in(n, graph.opset) or [_node_proto(n)]]
    outputs = [helper.make_empty_tensor_value_info(t.name) for t in graph.outputs]
    g = helper.make_graph(nodes, "skeleton", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=opset_imports)


def _node_proto(node: gs.Node) -> onnx.NodeProto:
    """A NodeProto for shape inference (subgraph attributes exported by graphsurgeon)."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    return OnnxExporter.export_node(node)


def probe_shapes(graph: gs.Graph, opset_imports, fixed: dict[str, tuple[int, ...]] | None = None) -> dict[str, Shape]:
    """Shapes at two different concrete input sizes: dims that agree are static, the others dynamic.

    A dynamic dim becomes a token naming its two probe values, so two dims that follow the same
    input dim still compare equal, and a dynamic dim is never mistaken for a broadcast 1. Input
    dims the caller fixes are used in both probes, except a symbolic batch dim, which always varies.
    """
    symbolic = infer_shapes(graph, opset_imports)
    probes = [infer_shapes(graph, opset_imports, probe_dims(graph, k, fixed or {})) for k in (0, 1)]
    merged = dict(symbolic)
    for name, a in probes[0].items():
        b = probes[1].get(name)
        old = symbolic.get(name)
        if b is None or len(a) != len(b) or (old is not None and len(old) != len(a)):
            continue
        dims = [x if x == y else f"~{x},{y}" if isinstance(x, int) and isinstance(y, int) else None
                for x, y in zip(a, b)]
        merged[name] = tuple(o if isinstance(o, int) else d for o, d in zip(old or dims, dims))
    return merged


InputSpec = tuple[str, "Shape | None"]  # an input's name and declared shape (ints, names or None per dim)


def probe_dims(graph: gs.Graph, k: int, fixed: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Probe k's input shapes: model-static dims kept; the rest from `fixed` or the defaults; batch 1 / 2.

    Probe 0 is the model's concrete input shape everywhere (MAC counts, check runs).
    """
    return concrete_dims([(t.name, t.shape) for t in graph.inputs], k, fixed)


SEQUENCE_WORDS = ("seq", "length", "token", "position")  # a dynamic dim so named is a sequence length
DEFAULT_DIM, DEFAULT_SEQUENCE = (224, 256), (128, 160)  # probe 0 (the one counted and run), probe 1


def default_dim(name, k: int) -> int:
    """The value probe k gives a dynamic non-batch dim nobody fixed: 128 for a sequence, else 224."""
    sequence = isinstance(name, str) and any(w in name.lower() for w in SEQUENCE_WORDS)
    return (DEFAULT_SEQUENCE if sequence else DEFAULT_DIM)[k]


def concrete_dims(inputs: list[InputSpec], k: int, fixed: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """probe_dims over (name, declared shape) pairs, e.g. an onnxruntime session's inputs.

    A named dynamic dim fixed through one input takes the same value in every input that names it
    (input_ids and attention_mask share their sequence length).
    """
    named = {d: given[i] for name, declared in inputs if (given := fixed.get(name)) and declared
             for i, d in enumerate(declared) if isinstance(d, str) and i < len(given)}
    dims = {}
    for name, declared in inputs:
        if declared is None:
            continue
        given = fixed.get(name)
        shape = []
        for i, d in enumerate(declared):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 0:
                shape.append((given[0] if given else named.get(d, 1)) + k)
            elif given:
                shape.append(given[i])
            else:
                shape.append(named[d] if d in named else default_dim(d, k))
        dims[name] = tuple(shape)
    return dims


def check_given_dims(inputs: list[InputSpec], given: dict[str, tuple[int, ...]]) -> None:
    """Given input shapes must name real inputs, match their rank and agree with static dims."""
    declared = dict(inputs)
    for name, dims in given.items():
        if name not in declared:
            raise OnnxPruneError(f"input shape given for '{name}', which is not a model input "
                                 f"({', '.join(sorted(declared))})")
        shape = declared[name]
        if shape is not None and len(shape) != len(dims):
            raise OnnxPruneError(f"input '{name}' has rank {len(shape)}, the given shape {list(dims)} has {len(dims)}")
        fixed = [(i, d, g) for i, (d, g) in enumerate(zip(shape or (), dims)) if isinstance(d, int) and 0 < d != g]
        if fixed:
            i, d, g = fixed[0]
            raise OnnxPruneError(f"input '{name}' has a static dim {i} of {d}; the given shape {list(dims)} asks for {g}")


def infer_shapes(graph: gs.Graph, opset_imports, input_dims: dict[str, tuple[int, ...]] | None = None) -> dict[str, Shape]:
    """Tensor name -> inferred shape (ints, symbolic names or None per dim); rank-unknown tensors absent."""
    skeleton = _skeleton(graph, opset_imports, input_dims)
    shapes = _run_inference(skeleton, graph)
    for _ in range(4 if input_dims else 0):  # concrete sizes: resolve runtime Reshape targets, re-infer
        if not _pin_reshape_targets(skeleton, graph, shapes):
            break
        shapes = _run_inference(skeleton, graph)
    if input_dims and _unresolved(graph, shapes) and _pin_runtime_values(skeleton, graph, input_dims):
        shapes = _run_inference(skeleton, graph)
    return shapes


def _unresolved(graph: gs.Graph, shapes: dict[str, Shape]) -> bool:
    """Some node output has no fully concrete shape."""
    return any(not all(isinstance(d, int) for d in shapes.get(t.name, (None,)))
               for n in graph.nodes for t in n.outputs if t.name)


def _pin_runtime_values(skeleton: onnx.ModelProto, graph: gs.Graph, input_dims: dict[str, tuple[int, ...]]) -> bool:
    """In the skeleton only: replace computed 1-D int64 tensors (shape arithmetic that onnx's inference
    cannot follow: attention masks, rotary tables) by their values, computed in onnxruntime at these sizes.

    Shape ops of tensors whose shapes are known become constants first, so the shape arithmetic is cut
    off from the weights: onnxruntime runs only that small integer graph (no weights are loaded), and
    the values it gives let onnx infer further; a few rounds. Without onnxruntime nothing changes.
    """
    from importlib.util import find_spec

    if find_spec("onnxruntime") is None:  # an optional runtime: without it the unknown shapes stay unknown
        return False
    pinned = False
    for _ in range(4):
        values = _shape_arithmetic(skeleton, input_dims)
        read = {i for n in skeleton.graph.node for i in n.input}
        values = {k: v for k, v in values.items() if k in read}
        if not values:
            break
        _pin(skeleton, values)
        pinned = True
    return pinned


def _shape_arithmetic(skeleton: onnx.ModelProto, input_dims: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Values of the skeleton's computed 1-D int64 tensors that depend on no weight, by onnxruntime."""
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    known = {vi.name: vi.type.tensor_type for vi in [*inferred.graph.input, *inferred.graph.value_info]}
    concrete = {n: [d.dim_value for d in tt.shape.dim] for n, tt in known.items()
                if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)}
    probe = onnx.ModelProto()
    probe.CopyFrom(skeleton)
    nodes, constants = [], []
    for node in probe.graph.node:
        if node.op_type == "Shape" and node.input[0] in concrete:  # a known shape: a constant
            dims = concrete[node.input[0]]
            attrs = {a.name: a.i for a in node.attribute}
            part = dims[slice(attrs.get("start", 0), attrs.get("end", len(dims)))]
            constants.append(onnx.numpy_helper.from_array(np.array(part, np.int64), node.output[0]))
        else:
            nodes.append(node)
    weights = {i.name for i in probe.graph.input} - set(input_dims)
    heavy = set(weights)
    for node in nodes:
        if any(i in heavy for i in node.input):
            heavy.update(node.output)
    done = {t.name for t in probe.graph.initializer}
    wanted = [n for n, tt in known.items() if tt.elem_type == onnx.TensorProto.INT64 and tt.HasField("shape")
              and len(tt.shape.dim) <= 1 and n not in heavy and n not in done and not n.endswith("__runtime")
              and n not in {c.name for c in constants}]
    shape_values = {c.name: onnx.numpy_helper.to_array(c) for c in constants}
    if not wanted:
        return shape_values
    del probe.graph.node[:]
    probe.graph.node.extend(nodes)
    probe.graph.initializer.extend(constants)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in wanted)
    _keep_needed(probe)
    feeds = {vi.name: np.zeros(input_dims[vi.name], helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
             for vi in probe.graph.input}
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return {**shape_values, **dict(zip(wanted, session.run(wanted, feeds)))}
    except Exception:  # noqa: BLE001 - a graph onnxruntime cannot run keeps its unknown shapes
        return shape_values


def _keep_needed(model: onnx.ModelProto) -> None:
    """Drop the nodes and graph inputs the outputs do not need (so no weight input is left to feed)."""
    need = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(o in need for o in node.output):
            kept.append(node)
            need.update(node.input)
            for a in node.attribute:  # names a subgraph reads from outside
                for g in ([a.g] if a.HasField("g") else list(a.graphs)):
                    need.update(i for n in g.node for i in n.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    inputs = [i for i in model.graph.input if i.name in need]
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def _pin(skeleton: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    """Every read of these tensors reads a constant of their value instead."""
    replace = {name: f"{name}__runtime" for name in values}
    for name, value in values.items():
        skeleton.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value, np.int64), replace[name]))
    for proto in skeleton.graph.node:
        for i, name in enumerate(proto.input):
            if name in replace:
                proto.input[i] = replace[name]


def _run_inference(skeleton: onnx.ModelProto, graph: gs.Graph) -> dict[str, Shape]:
    try:
        model = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception:  # noqa: BLE001 - partial inference is still useful; unknown shapes freeze
        model = skeleton
    shapes: dict[str, Shape] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(_dim(d) for d in tt.shape.dim)
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant):
            shapes[t.name] = tuple(t.values.shape)
    return shapes


def _pin_reshape_targets(skeleton: onnx.ModelProto, graph: gs.Graph, shapes: dict[str, Shape]) -> bool:
    """In the skeleton only: replace traceable runtime Reshape targets by their concrete values."""
    from .shape_values import entry_value, trace

    ranks = {k: len(v) for k, v in shapes.items()}
    tensors = graph.tensors()
    pinned = False
    for proto in skeleton.graph.node:
        if proto.op_type != "Reshape" or proto.output[0] in shapes or proto.input[1] not in tensors:
            continue
        entries = trace(tensors[proto.input[1]], ranks)
        if entries is None:
            continue
        values = [entry_value(e, shapes) for e in entries]
        if all(isinstance(v, int) for v in values):
            name = f"{proto.input[1]}__pinned"
            skeleton.graph.initializer.append(onnx.numpy_helper.from_array(np.array(values, np.int64), name))
            proto.input[1] = name
            pinned = True
    return pinned


def _dim(d) -> Dim:
    if d.HasField("dim_value"):
        return d.dim_value
    return d.dim_param or None


def skeleton_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with big initializers declared as typed inputs: cheap to check and shape-infer."""
    g = model.graph
    skel = onnx.ModelProto(ir_version=model.ir_version)
    skel.opset_import.extend(model.opset_import)
    skel.functions.extend(model.functions)
    sg = skel.graph
    sg.name = g.name
    sg.node.extend(g.node)
    sg.input.extend(g.input)
    sg.output.extend(g.output)
    sg.value_info.extend(g.value_info)
    declared = {i.name for i in g.input}
    for t in g.initializer:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if int(np.prod(t.dims)) * itemsize <= SMALL_BYTES or t.data_type == onnx.TensorProto.STRING:
            sg.initializer.append(t)
        elif t.name not in declared:
            sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return skel
