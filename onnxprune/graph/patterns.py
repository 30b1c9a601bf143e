"""Small graph patterns that several stages recognise the same way."""
from __future__ import annotations

import onnx_graphsurgeon as gs


def matmul_bias(node: gs.Node) -> tuple[gs.Node, int] | None:
    """The Add holding a MatMul's bias (nn.Linear as exported: MatMul, then Add of an [N] constant), and
    the Add's input index of that constant; None when the MatMul's output goes anywhere else."""
    out = node.outputs[0]
    if node.op != "MatMul" or len(out.outputs) != 1 or not isinstance(node.inputs[1], gs.Constant):
        return None
    add = out.outputs[0]
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    i = 1 if add.inputs[0] is out else 0
    bias, n = add.inputs[i], node.inputs[1].values.shape[-1]
    ok = isinstance(bias, gs.Constant) and bias.values.size == n and bias.values.shape[-1:] == (n,)
    return (add, i) if ok else None
