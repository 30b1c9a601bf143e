"""The op registry of the PyTorch interpreter: parsed nodes, the @op decorator, dtype maps, helpers.

Like every onnxprune.recovery.torch_* module it imports torch at the top: only the recovery
package needs PyTorch (`pip install 'onnxprune[recover]'`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxPruneError

OpFunction = Callable[..., Any]
REGISTRY: dict[str, OpFunction] = {}

TORCH_TYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16, TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT8: torch.int8, TensorProto.INT16: torch.int16, TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64, TensorProto.UINT8: torch.uint8, TensorProto.UINT16: torch.uint16,
    TensorProto.UINT32: torch.uint32, TensorProto.UINT64: torch.uint64, TensorProto.BOOL: torch.bool,
}


def op(*op_types: str) -> Callable[[OpFunction], OpFunction]:
    """Register a function as the implementation of the given ONNX op types."""
    def register(fn: OpFunction) -> OpFunction:
        """Enter `fn` under each op type and hand it back unchanged."""
        for op_type in op_types:
            REGISTRY[op_type] = fn
        return fn
    return register


@dataclass
class Node:
    """One ONNX node as the interpreter runs it: names, parsed attributes and the opset it was written for."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    opset: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def attr(self, key: str, default: Any = None) -> Any:
        """An attribute's value, or `default` when the node does not set it."""
        return self.attrs.get(key, default)

    def fail(self, what: str) -> OnnxPruneError:
        """An error naming this node, for attribute variants the interpreter does not run."""
        return OnnxPruneError(f"recovery cannot run {self.op_type} (node '{self.name}') in PyTorch: {what}")


def parse_attribute(attribute: onnx.AttributeProto) -> Any:
    """A Python value for an attribute: strings decoded, tensors as torch tensors."""
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if isinstance(value, TensorProto):
        return to_torch(value)
    return value


def to_torch(tensor: TensorProto) -> torch.Tensor:
    """A TensorProto as a torch tensor of the matching dtype."""
    if tensor.data_type not in TORCH_TYPES:
        raise OnnxPruneError(f"recovery cannot hold tensor '{tensor.name}' of type "
                             f"{TensorProto.DataType.Name(tensor.data_type)} in PyTorch")
    array = numpy_helper.to_array(tensor)
    if tensor.data_type == TensorProto.BFLOAT16:  # numpy has no bfloat16 torch can read
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def ints(value: torch.Tensor | None) -> list[int]:
    """A 1-D integer tensor (shape, axes, pads ...) as a list of Python ints."""
    return [] if value is None else [int(v) for v in value.reshape(-1).tolist()]


def axis_of(axis: int, rank: int) -> int:
    """A possibly negative axis as its non-negative index."""
    return axis + rank if axis < 0 else axis


def axes_of(node: Node, value: torch.Tensor | None, rank: int, input_from: int) -> list[int] | None:
    """Axes from the attribute (opsets below `input_from`) or the input (from it); None when absent."""
    axes = node.attr("axes") if node.opset < input_from else (None if value is None else ints(value))
    return None if axes is None else [axis_of(a, rank) for a in axes]


def scalar(value: torch.Tensor | None, default: float | int | None = None) -> Any:
    """The Python value of a one-element tensor, or `default` when the input is absent."""
    return default if value is None else value.reshape(-1)[0].item()
