"""Depth pruning: remove residual blocks (x + f(x) becomes x), and zero a branch for the exactness oracle."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.residual import Found, scan
from ..errors import OnnxPruneError
from ..loading import ModelSource, Prepared, export, prepare, whole_weights

Dims = dict[str, tuple[int, ...]] | None
# ops whose output is zero wherever their (first) input is zero
ZERO_KEEPING = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Tanh", "Gelu", "HardSwish", "Softsign", "Neg",
                "Identity", "Dropout", "Cast", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
                "Expand", "Tile", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Div"}
NORMS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
         "RMSNormalization", "SimplifiedLayerNormalization"}


def remove_blocks(model: ModelSource, block_ids: list[str], input_shapes: Dims = None) -> onnx.ModelProto:
    """A copy of the model without these blocks' branches: each sum is replaced by the block's input x."""
    prep = prepare(model)
    gone: set[int] = set()
    for f in _chosen(prep, block_ids, input_shapes, removable=True):
        if id(f.add) not in gone:  # else it lies in a branch already removed
            gone |= _bypass(prep.graph, f)
    prep.graph.nodes = [n for n in prep.graph.nodes if id(n) not in gone]
    prep.graph.cleanup(remove_unused_graph_inputs=False)
    return export(prep, requantize=whole_weights(prep))


def zero_branch(model: ModelSource, block_id: str, input_shapes: Dims = None) -> onnx.ModelProto:
    """A copy of the model whose block's branch outputs exact zeros (its last weights and biases zeroed)."""
    return zero_branches(model, [block_id], input_shapes)


def zero_branches(model: ModelSource, block_ids: list[str], input_shapes: Dims = None) -> onnx.ModelProto:
    """zero_branch for several blocks at once."""
    prep = prepare(model)
    for f in _chosen(prep, block_ids, input_shapes, removable=False):
        inside = {id(n) for n in f.branch}
        y = f.add.inputs[1 - f.x_index]
        edits = _zero_edits(y, inside)
        if edits is None:
            last = y.inputs[0]
            raise OnnxPruneError(f"block '{f.block.id}': its branch does not end in weights that can be zeroed "
                                 f"({last.op} '{prep.names.get(id(last), last.name)}')")
        for node, i in edits:
            _zero_input(node, i, inside)
    return export(prep, requantize=whole_weights(prep))


def _chosen(prep: Prepared, block_ids: list[str], input_shapes: Dims, removable: bool) -> list[Found]:
    """The blocks with these ids (each once); refuse unknown ids and, if asked, blocks that cannot go."""
    found = {f.block.id: f for f in scan(prep, input_shapes)}
    for bid in block_ids:
        if bid not in found:
            known = ", ".join(list(found)[:5]) + (", ..." if len(found) > 5 else "")
            raise OnnxPruneError(f"no residual block '{bid}' in the model (blocks: {known or 'none'})")
        if removable and found[bid].block.reason:
            raise OnnxPruneError(f"block '{bid}' cannot be removed: {found[bid].block.reason}")
    return [found[b] for b in dict.fromkeys(block_ids)]


def _bypass(graph: gs.Graph, f: Found) -> set[int]:
    """Make every reader of the sum read x and disconnect the branch; the ids of the nodes to drop."""
    add = f.add
    x, s = add.inputs[f.x_index], add.outputs[0]
    for reader in list(s.outputs):
        for i, t in enumerate(reader.inputs):
            if t is s:
                reader.inputs[i] = x
    drop = list(f.branch)
    if any(o is s for o in graph.outputs):  # the output keeps its name: Identity(x) -> s
        add.op, add.attrs = "Identity", {}
        add.inputs.clear()
        add.inputs.append(x)
    else:
        drop.append(add)
    for n in drop:
        n.inputs.clear()
        n.outputs.clear()
    return {id(n) for n in drop}


def _zero_edits(t: gs.Tensor, inside: set[int]) -> list[tuple[gs.Node, int]] | None:
    """(node, input index) of constants in the branch whose zeroing makes t exactly zero; None if none found."""
    node = t.inputs[0] if t.inputs else None
    if node is None or id(node) not in inside:
        return None
    consts = [i for i, v in enumerate(node.inputs) if isinstance(v, gs.Constant)]
    op = node.op
    if op in ("Conv", "ConvTranspose") and 1 in consts:
        return [(node, i) for i in consts if i in (1, 2)]
    if op == "Gemm" and consts and consts[0] in (0, 1):
        return [(node, i) for i in consts]
    if op in NORMS and 1 in consts and (len(node.inputs) < 3 or 2 in consts):
        return [(node, i) for i in consts if i in (1, 2)]
    if op in ("Mul", "MatMul") and consts:
        return [(node, consts[0])]
    if op in ("Mul", "MatMul"):  # a product of activations: zero either factor
        return next((e for v in node.inputs if (e := _zero_edits(v, inside)) is not None), None)
    if op in ("Add", "Sub", "Concat"):  # every term must be zero
        edits = [(node, i) for i in consts]
        for v in node.inputs:
            if not isinstance(v, gs.Constant):
                sub = _zero_edits(v, inside)
                if sub is None:
                    return None
                edits += sub
        return edits
    if op in ZERO_KEEPING and node.inputs:
        if isinstance(node.inputs[0], gs.Constant):
            return [(node, 0)]
        return _zero_edits(node.inputs[0], inside)
    return None


def _zero_input(node: gs.Node, i: int, inside: set[int]) -> None:
    """Zero a constant input; one also read outside the branch is replaced for this node only."""
    const = node.inputs[i]
    zeros = np.zeros_like(np.asarray(const.values))
    if all(id(r) in inside for r in const.outputs):
        const.values = zeros
    else:
        node.inputs[i] = gs.Constant(f"{const.name}__zero_for_{node.name or node.outputs[0].name}", zeros)
