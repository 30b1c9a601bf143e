"""An ONNX graph run in PyTorch, its float weights trainable Parameters bound to the initializer names.

TorchGraph evaluates the nodes one by one with the functions of the op registry (torch_ops_*), so
it computes what onnxruntime computes while gradients flow to the weights; `write_back` puts the
trained values into the same initializers of the model. Like all of onnxprune.recovery it needs
PyTorch (`pip install 'onnxprune[recover]'`): this module imports without it, and constructing a
TorchGraph then raises OnnxPruneError; the torch_ops_* modules import torch at their top.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxPruneError

try:
    import torch
except ModuleNotFoundError as exc:  # only a missing torch is tolerated; other import errors are bugs
    if exc.name != "torch":
        raise
    torch = None

if torch is not None:
    from . import torch_ops_math, torch_ops_nn, torch_ops_norm, torch_ops_resize, torch_ops_shape  # noqa: F401
    from .torch_registry import REGISTRY, Node, parse_attribute, to_torch
    _Module = torch.nn.Module
else:
    REGISTRY = {}
    _Module = object

NO_TORCH = "recovery needs PyTorch: pip install 'onnxprune[recover]'"
DEFAULT_DOMAINS = ("", "ai.onnx")
FLOATS = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
# which inputs of which ops hold the weights recovery tunes by default
WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
                 "BatchNormalization": (1, 2), "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2),
                 "GroupNormalization": (1, 2), "Add": (0, 1), "Mul": (0, 1)}
BIAS_OPS = ("Add", "Mul")


def _op_name(node: onnx.NodeProto) -> str:
    """The op type, qualified by its domain outside the default one."""
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


def check_supported(graph: onnx.GraphProto) -> None:
    """Raise OnnxPruneError for the first node (subgraphs included) the interpreter has no function for."""
    for node in graph.node:
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in REGISTRY:
            raise OnnxPruneError(f"recovery cannot run {_op_name(node)} (node '{node.name}') in PyTorch")
        for attribute in node.attribute:
            for sub in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                check_supported(sub)


def _default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return entry.version
    raise OnnxPruneError("the model imports no version of the default ONNX domain")


def sorted_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in an order where producers come first (the stored order when it already is one)."""
    nodes = list(graph.node)
    pending = {t for n in nodes for t in n.output if t}
    ordered: list[onnx.NodeProto] = []
    while nodes:
        waiting = []
        for node in nodes:
            if any(t in pending for t in node.input):
                waiting.append(node)
            else:
                ordered.append(node)
                pending.difference_update(node.output)
        if len(waiting) == len(nodes):
            raise OnnxPruneError(f"the graph has a cycle through node '{nodes[0].name}'")
        nodes = waiting
    return ordered


def _key(name: str, taken: set[str]) -> str:
    """A unique Module-attribute-safe key for a tensor name."""
    base = "t_" + re.sub(r"\W", "_", name)
    key, i = base, 1
    while key in taken:
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


def _bias_like(shape: Iterable[int]) -> bool:
    """A per-channel constant: more than one element, all along a single axis."""
    shape = list(shape)
    return int(np.prod(shape)) > 1 and sum(d != 1 for d in shape) == 1


class TorchGraph(_Module):
    """An ONNX model as a torch Module: float initializers are Parameters (frozen until `trainable`)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        """Parse and check every node; bind initializers to Parameters / buffers and fold Constant nodes."""
        if torch is None:
            raise OnnxPruneError(NO_TORCH)
        super().__init__()
        graph = model.graph
        check_supported(graph)
        opset = _default_opset(model)
        self.nodes = [self._parse(n, opset, i) for i, n in enumerate(sorted_nodes(graph))]
        self.weights = torch.nn.ParameterDict()
        self.constants = torch.nn.Module()
        self.keys: dict[str, str] = {}  # initializer name -> key in self.weights
        self.dtypes: dict[str, torch.dtype] = {}  # initializer name -> its type in the model
        self.constant_keys: dict[str, str] = {}  # other initializers and Constant outputs -> buffer key
        taken: set[str] = set()
        self._load_initializers(graph.initializer, taken)
        self._fold_constants(taken)
        static = set(self.keys) | set(self.constant_keys)
        self.graph_inputs = [v.name for v in graph.input if v.name not in static]
        self.graph_outputs = [v.name for v in graph.output]
        self.producer = {t: i for i, n in enumerate(self.nodes) for t in n.outputs if t}
        self._plans: dict[tuple, tuple[list[int], list[list[str]]]] = {}

    @staticmethod
    def _parse(node: onnx.NodeProto, opset: int, index: int) -> Node:
        """The interpreter's view of one node."""
        attrs = {a.name: parse_attribute(a) for a in node.attribute}
        return Node(node.op_type, node.name or f"#{index}", list(node.input), list(node.output), opset, attrs)

    def _load_initializers(self, initializers: Iterable[TensorProto], taken: set[str]) -> None:
        """Float initializers become Parameters (float32 masters for 16-bit ones); others buffers."""
        for tensor in initializers:
            value = to_torch(tensor)
            key = _key(tensor.name, taken)
            if tensor.data_type in FLOATS:
                self.dtypes[tensor.name] = value.dtype
                master = value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
                self.weights[key] = torch.nn.Parameter(master, requires_grad=False)
                self.keys[tensor.name] = key
            else:
                self.constants.register_buffer(key, value, persistent=False)
                self.constant_keys[tensor.name] = key

    def _fold_constants(self, taken: set[str]) -> None:
        """Evaluate Constant nodes once and keep their values as buffers (never trained)."""
        for node in [n for n in self.nodes if n.op_type == "Constant"]:
            key = _key(node.outputs[0], taken)
            self.constants.register_buffer(key, REGISTRY["Constant"](node), persistent=False)
            self.constant_keys[node.outputs[0]] = key
        self.nodes = [n for n in self.nodes if n.op_type != "Constant"]

    # -- evaluation ---------------------------------------------------------
    def parameter(self, name: str) -> torch.nn.Parameter:
        """The Parameter bound to a float initializer."""
        if name not in self.keys:
            raise OnnxPruneError(f"'{name}' is not a float initializer of the model")
        return self.weights[self.keys[name]]

    def _static(self, name: str) -> torch.Tensor:
        """An initializer's or Constant's value, in the model's dtype."""
        key = self.keys.get(name)
        if key is not None:
            value = self.weights[key]
            dtype = self.dtypes[name]
            return value if value.dtype == dtype else value.to(dtype)
        return getattr(self.constants, self.constant_keys[name])

    def _plan(self, outputs: tuple[str, ...], fed: frozenset[str]) -> tuple[list[int], list[list[str]]]:
        """The nodes needed for `outputs` given the fed tensors, and what each step may drop after it."""
        cache_key = (outputs, fed)
        if cache_key not in self._plans:
            needed = self._needed(outputs, fed)
            last: dict[str, int] = {}
            for step, index in enumerate(needed):
                for t in self.nodes[index].inputs:
                    last[t] = step
            drops: list[list[str]] = [[] for _ in needed]
            for t, step in last.items():
                if t and t not in outputs and t in self.producer and t not in fed:
                    drops[step].append(t)
            self._plans[cache_key] = (needed, drops)
        return self._plans[cache_key]

    def _known(self, name: str) -> bool:
        """Whether the graph has a tensor of this name."""
        return name in self.producer or name in self.keys or name in self.constant_keys or name in self.graph_inputs

    def _needed(self, outputs: tuple[str, ...], fed: frozenset[str]) -> list[int]:
        """Indices (in graph order) of the nodes that must run to compute `outputs` from the fed tensors."""
        needed: set[int] = set()
        stack, seen = list(outputs), set()
        while stack:
            t = stack.pop()
            if not t or t in seen or t in fed or t in self.keys or t in self.constant_keys:
                continue
            seen.add(t)
            if t in self.producer:
                needed.add(self.producer[t])
                stack.extend(self.nodes[self.producer[t]].inputs)
            elif t in self.graph_inputs:
                raise OnnxPruneError(f"computing {', '.join(outputs)} needs graph input '{t}', which was not fed")
            else:
                raise OnnxPruneError(f"'{t}' is no tensor of the graph")
        return sorted(needed)

    def forward(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Tensors `outputs` (default: graph outputs) from feeds: graph inputs, intermediates or initializers."""
        names = tuple(self.graph_outputs if outputs is None else outputs)
        env = {name: torch.as_tensor(value) for name, value in feeds.items()}
        for name in env:
            if not self._known(name):
                raise OnnxPruneError(f"the feed '{name}' is no tensor of the graph")
        needed, drops = self._plan(names, frozenset(env))
        for index, drop in zip(needed, drops):
            node = self.nodes[index]
            args = [None if not t else env[t] if t in env else self._static(t) for t in node.inputs]
            result = self._run(node, args)
            for name, value in zip(node.outputs, result):
                if name:
                    env[name] = value
            for t in drop:
                env.pop(t, None)
        return {name: env[name] if name in env else self._static(name) for name in names}

    @staticmethod
    def _run(node: Node, args: list) -> tuple:
        """One node's outputs; failures inside PyTorch name the node."""
        try:
            result = REGISTRY[node.op_type](node, *args)
        except OnnxPruneError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise OnnxPruneError(f"node '{node.name}' ({node.op_type}) failed in PyTorch: {first}") from exc
        return (result,) if isinstance(result, torch.Tensor) else tuple(result)

    # -- training and write-back ----------------------------------------------
    def default_trainable(self) -> list[str]:
        """Initializers recovery tunes by default: weights, biases and scales of the layers that carry them."""
        identity = {n.outputs[0]: n.inputs[0] for n in self.nodes if n.op_type == "Identity"}
        chosen: set[str] = set()
        for node in self.nodes:
            for position in WEIGHT_INPUTS.get(node.op_type, ()):
                if position >= len(node.inputs):
                    continue
                name = node.inputs[position]
                while name in identity:  # weights a TorchScript export shares through Identity
                    name = identity[name]
                if name in self.keys and (node.op_type not in BIAS_OPS or _bias_like(self.parameter(name).shape)):
                    chosen.add(name)
        return [name for name in self.keys if name in chosen]

    def trainable(self, names: Iterable[str] | None = None) -> dict[str, torch.nn.Parameter]:
        """Unfreeze the Parameters of these initializers (default: `default_trainable`), freeze the rest."""
        chosen = set(self.default_trainable() if names is None else names)
        unknown = sorted(chosen - set(self.keys))
        if unknown:
            raise OnnxPruneError(f"not float initializers of the model: {', '.join(unknown[:5])}")
        for name, key in self.keys.items():
            self.weights[key].requires_grad_(name in chosen)
        return {name: self.weights[key] for name, key in self.keys.items() if name in chosen}

    def write_back(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of `model` with every Parameter's value in its same-named initializer, all else unchanged."""
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for tensor in out.graph.initializer:
            if tensor.name not in self.keys:
                continue
            value = self.parameter(tensor.name).detach().cpu()
            if list(value.shape) != list(tensor.dims):
                raise OnnxPruneError(f"initializer '{tensor.name}' has shape {list(tensor.dims)} in the model, "
                                     f"{list(value.shape)} in the TorchGraph: not the model it was built from")
            target = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            fresh = numpy_helper.from_array(value.numpy().astype(target), tensor.name)
            fresh.doc_string = tensor.doc_string
            tensor.CopyFrom(fresh)
        return out
