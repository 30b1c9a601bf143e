"""Per-op channel rules: one rule per op type, registered by op name.

A rule's `analyze(node, b)` reads the input layouts from the Builder and declares output layouts,
couplings, sliced parameters and freezes. Its optional `rewrite(node, rw)` updates attributes and
shape constants once the plan is known (group counts, split sizes, slice bounds, reshape targets).
Adding an op means adding one rule class here or in a sibling module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from ..builder import Builder


class RewriteContext(Protocol):
    """What a rule's rewrite hook may ask of the rewriter (rewrite.Rewriter implements it)."""

    opset: int

    def kept(self, elements: np.ndarray) -> np.ndarray:
        """True at each position whose channel stays."""

    def note(self, node: gs.Node) -> dict[str, Any]:
        """What the rule noted about this node during analysis."""

    def set_input(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        """Give this node alone a new constant input."""

    def set_entry(self, node: gs.Node, index: int, position: int, value: int) -> None:
        """Replace one entry of a 1-D int input (a shape)."""


class Rule:
    """How the channel axis flows through one op type."""

    def analyze(self, node: gs.Node, b: "Builder") -> None:
        """Declare the node's output layouts, couplings, sliced parameters and freezes in the builder."""
        raise NotImplementedError

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        """Update attributes or shape constants after slicing; most ops need nothing."""


RULES: dict[str, Rule] = {}


def register(*op_types: str) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: one instance of the rule serves every listed op type ('domain.op' off the ONNX domain)."""
    def deco(cls: type[Rule]) -> type[Rule]:
        inst = cls()
        for op in op_types:
            if op in RULES:
                raise ValueError(f"two rules for {op}")
            RULES[op] = inst
        return cls
    return deco


def rule_for(node: gs.Node) -> Rule | None:
    """The rule for a node: by op name in the default ONNX domain, by 'domain.op' in any other."""
    if node.domain not in (None, "", "ai.onnx"):
        return RULES.get(f"{node.domain}.{node.op}")
    return RULES.get(node.op)


from . import conv, linear, elementwise, normalization, pooling, reshaping, concat_split, spatial, attention, quantize, contrib, qlinear  # noqa: E402,F401,E501
