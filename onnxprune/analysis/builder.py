"""The context per-op rules write into: channel layouts, couplings, sliced parameters, freezes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from ..graph.shapes import Shape

PRODUCER, CONSUMER, PASS = "producer", "consumer", "pass-through"


@dataclass(frozen=True)
class Layout:
    """Where a tensor's channels live: one axis, one channel-element id per position on it."""

    axis: int
    elements: np.ndarray


@dataclass
class Member:
    """One place a channel axis appears: a sliced parameter (input index set) or an activation."""

    node: str
    op_type: str
    role: str
    tensor: str
    axis: int
    elements: np.ndarray
    kind: str | None = None  # parameter kind: weight, bias, scale, shift, mean, var, addend, factor, divisor
    input_index: int | None = None


@dataclass
class Atom:
    """A block of fresh channel elements created by one node (a producer's output channels)."""

    start: int
    size: int
    node: str
    frozen: str | None = None


@dataclass
class Part:
    """Channels one node reads as a tensor of their own (a Slice, one Split output): never all removed."""

    node: str
    op_type: str
    elements: np.ndarray


class Builder:
    """Collects what the rules declare, in graph order; `resolve` turns it into groups."""

    def __init__(self, graph: gs.Graph, shapes: dict[str, Shape], names: dict[int, str]):
        self.graph = graph
        self.shapes = shapes
        self.names = names
        self.layouts: dict[str, Layout] = {}
        self.atoms: list[Atom] = []
        self.size = 0
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.members: list[Member] = []
        self.freezes: list[tuple[np.ndarray, str]] = []
        self.parts: list[Part] = []
        self.notes: dict[str, dict[str, Any]] = {}

    # -- reading the graph ---------------------------------------------------------------
    def name(self, node: gs.Node) -> str:
        """The node's name, or a stable stand-in for an unnamed node."""
        return self.names[id(node)]

    def layout(self, tensor: gs.Tensor | None) -> Layout | None:
        """The channel layout of a tensor, if it carries channels."""
        return None if tensor is None else self.layouts.get(tensor.name)

    def shape(self, tensor: gs.Tensor | None) -> Shape | None:
        """Inferred shape (dims are ints, symbols or None), or None when the rank is unknown."""
        return None if tensor is None else self.shapes.get(tensor.name)

    def rank(self, tensor: gs.Tensor) -> int | None:
        """The tensor's rank, None where its shape is unknown."""
        s = self.shape(tensor)
        return None if s is None else len(s)

    @staticmethod
    def const(tensor: gs.Tensor | None) -> np.ndarray | None:
        """The values of a constant input, or None for a computed one (or a missing optional one)."""
        return tensor.values if isinstance(tensor, gs.Constant) else None

    @staticmethod
    def input(node: gs.Node, i: int) -> gs.Tensor | None:
        """The i-th input, None when absent or an empty optional name."""
        if i >= len(node.inputs):
            return None
        t = node.inputs[i]
        return None if (isinstance(t, gs.Variable) and not t.name) else t

    def reads_count(self, entry, elements: np.ndarray) -> bool:
        """A traced shape entry (tensor, axis) read at runtime from a tensor carrying these channels there."""
        if not isinstance(entry, tuple):
            return False
        lay = self.layouts.get(entry[0])
        return lay is not None and lay.axis == entry[1] and np.array_equal(lay.elements, elements)

    # -- declaring ---------------------------------------------------------------------
    def produce(self, node: gs.Node, size: int) -> np.ndarray:
        """Fresh channel elements for a node's new output channels."""
        atom = Atom(self.size, size, self.name(node))
        self.atoms.append(atom)
        self.size += size
        return np.arange(atom.start, atom.start + size, dtype=np.int64)

    def opaque(self, node: gs.Node, size: int, reason: str) -> np.ndarray:
        """Elements for channels nobody can slice (a constant or unknown tensor in a concat)."""
        elements = self.produce(node, size)
        self.atoms[-1].frozen = reason
        return elements

    def set(self, tensor: gs.Tensor, axis: int, elements: np.ndarray) -> None:
        """Give a tensor a channel layout."""
        self.layouts[tensor.name] = Layout(axis, np.asarray(elements, dtype=np.int64))

    def couple(self, a: np.ndarray, b: np.ndarray) -> None:
        """Declare a[i] and b[i] the same channel: they are removed together."""
        if len(a) != len(b):
            raise ValueError(f"coupling {len(a)} channels with {len(b)}")
        self.edges.append((np.asarray(a, np.int64), np.asarray(b, np.int64)))

    def couple_blocks(self, elements: np.ndarray, block: int) -> None:
        """Couple consecutive blocks of `block` channels into units removed as a whole."""
        if block > 1:
            units = elements.reshape(-1, block)
            self.couple(np.repeat(units[:, 0], block - 1), units[:, 1:].reshape(-1))

    def param(self, node: gs.Node, index: int, axis: int, elements: np.ndarray, role: str, kind: str) -> bool:
        """Declare that input `index` (a constant) is sliced on `axis`; freeze if its shape disagrees."""
        value = self.const(self.input(node, index))
        if value is None or axis >= value.ndim or value.shape[axis] != len(elements):
            got = "not a constant" if value is None else f"shape {list(value.shape)}"
            self.freeze(elements, f"{node.op} '{self.name(node)}': input {index} ({got}) does not "
                                  f"match {len(elements)} channels on axis {axis}")
            return False
        tensor = node.inputs[index].name
        self.members.append(Member(self.name(node), node.op, role, tensor, axis, elements, kind, index))
        if role == CONSUMER and kind == "weight":  # the activation it reads: data-driven criteria measure it
            self.member(node, node.inputs[0], CONSUMER)
        return True

    def member(self, node: gs.Node, tensor: gs.Tensor, role: str = PASS) -> None:
        """Record an activation tensor the channels flow through (for the report)."""
        lay = self.layout(tensor)
        if lay is not None:
            self.members.append(Member(self.name(node), node.op, role, tensor.name, lay.axis, lay.elements))

    def keep_some(self, node: gs.Node, elements: np.ndarray) -> None:
        """Declare channels that must not all go: removing them all would leave a zero-width tensor."""
        if len(elements):
            self.parts.append(Part(self.name(node), node.op, np.asarray(elements, np.int64)))

    def freeze(self, elements: np.ndarray | None, reason: str) -> None:
        """Mark the groups these channels belong to as not prunable, with the reason."""
        if elements is not None and len(elements):
            self.freezes.append((np.asarray(elements, np.int64), reason))

    def freeze_inputs(self, node: gs.Node, reason: str) -> None:
        """Freeze every channel-carrying input of a node."""
        for t in node.inputs:
            lay = self.layout(t)
            if lay is not None:
                self.freeze(lay.elements, reason)

    def note(self, node: gs.Node, **values: Any) -> None:
        """Keep analysis-time facts a rule needs again at rewrite time."""
        self.notes.setdefault(self.name(node), {}).update(values)
