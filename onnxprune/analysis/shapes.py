"""Shape inference over a weight-free skeleton of the graph, so big models are not copied."""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx import helper

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
    nodes = [_node_proto(n) for n in graph.nodes]
    outputs = [helper.make_empty_tensor_value_info(t.name) for t in graph.outputs]
    g = helper.make_graph(nodes, "skeleton", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=opset_imports)


def _node_proto(node: gs.Node) -> onnx.NodeProto:
    """A NodeProto for shape inference (subgraph attributes exported by graphsurgeon)."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    return OnnxExporter.export_node(node)


def infer_shapes(graph: gs.Graph, opset_imports, input_dims: dict[str, tuple[int, ...]] | None = None) -> dict[str, Shape]:
    """Tensor name -> inferred shape (ints, symbolic names or None per dim); rank-unknown tensors absent."""
    model = _skeleton(graph, opset_imports, input_dims)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - partial inference is still useful; unknown shapes freeze
        pass
    shapes: dict[str, Shape] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(_dim(d) for d in tt.shape.dim)
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant):
            shapes[t.name] = tuple(t.values.shape)
    return shapes


def _dim(d) -> Dim:
    if d.HasField("dim_value"):
        return d.dim_value
    return d.dim_param or None
