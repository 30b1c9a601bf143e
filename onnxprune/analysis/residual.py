"""Residual blocks: Adds of the form x + f(x) whose branch f can be removed exactly (depth pruning).

A block is an Add (or a two-input Sum) with one input x and the other the output y of a branch: the
nodes on data paths from x to y. The branch may also read constants and tensors that do not depend
on x (an attention mask), or depend on x only through its shape. It is removable when no branch
tensor is read outside the branch (nor is a graph output) and the sum has x's static shape. Adds
that look residual but are not x + f(x) (a projection shortcut) are listed too, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..graph.shapes import Shape, check_given_dims, probe_shapes
from ..loading import ModelSource, Prepared, prepare

SHAPE_ONLY = {"Shape", "Size"}  # their output depends on the input's shape, not its values
WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "Attention"}
MAX_SHORTCUT = 4  # nodes on a projection shortcut (Conv, BN, pooling) before it meets the branch's input


@dataclass
class ResidualBlock:
    """One residual Add: removable when `reason` is None."""

    id: str
    add: str  # the Add node's name
    x: str  # the input kept when the branch is removed
    branch_output: str
    nodes: list[str]  # the branch's nodes, in graph order
    initializers: list[str]  # constants only the branch reads
    params: int
    kind: str  # attention, mlp, conv or other
    reason: str | None = None
    inner: list[str] = field(default_factory=list)  # ids of the blocks inside this one's branch

    @property
    def removable(self) -> bool:
        """Nothing refuses the block."""
        return self.reason is None


@dataclass
class Found:
    """A block and the graph objects it stands for (in the Prepared graph it was found in)."""

    block: ResidualBlock
    add: gs.Node
    x_index: int  # which input of the Add is x
    branch: list[gs.Node]


def find_blocks(model: ModelSource, input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[ResidualBlock]:
    """Every residual block of a model (a path or a ModelProto), removable or not, in graph order."""
    return graph_blocks(prepare(model), input_shapes)


def graph_blocks(prep: Prepared, input_dims: dict[str, tuple[int, ...]] | None = None) -> list[ResidualBlock]:
    """Every residual block of a prepared graph, in graph order."""
    return [f.block for f in scan(prep, input_dims)]


def scan(prep: Prepared, input_dims: dict[str, tuple[int, ...]] | None = None) -> list[Found]:
    """The residual blocks of a prepared graph with their graph objects, in graph order."""
    graph = prep.graph
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    names = {id(n): prep.names.get(id(n)) or n.name or f"{n.op}#{i}" for i, n in enumerate(graph.nodes)}
    pending = [c for n in graph.nodes if (c := _candidate(n, pos)) is not None]
    if not pending:
        return []
    check_given_dims([(t.name, t.shape) for t in graph.inputs], input_dims or {})
    shapes = probe_shapes(graph, list(prep.template.opset_import), input_dims)
    ctx = _Context(graph, names, shapes)
    found = [f for c in pending if (f := ctx.describe(*c)) is not None]
    _unique_ids(found)
    _nest(found)
    return found


def _candidate(node: gs.Node, pos: dict[int, int]) -> tuple[gs.Node, int, list[gs.Node], str | None] | None:
    """(Add, index of x, branch, None) for x + f(x); (Add, index of the shortcut, branch, why) for a
    projection shortcut; None for anything else (bias Adds, sums of unrelated tensors)."""
    if not _is_sum(node):
        return None
    a, b = node.inputs
    for i, (x, y) in enumerate(((a, b), (b, a))):
        branch = _branch(x, y, pos)
        if branch and branch[-1] is y.inputs[0]:
            return (node, i, branch, None) if _weighted(branch) else None
    return _projection(node, pos)


def _is_sum(node: gs.Node) -> bool:
    """An Add or two-input Sum of two distinct computed tensors."""
    if node.op not in ("Add", "Sum") or len(node.inputs) != 2 or len(node.outputs) != 1:
        return False
    a, b = node.inputs
    return a is not b and not any(isinstance(t, gs.Constant) for t in (a, b)) and _from_input(a) and _from_input(b)


def _from_input(t: gs.Tensor) -> bool:
    """Some graph input's values reach t (not a constant subgraph, nor shape arithmetic only)."""
    return any(not cur.inputs for cur in _value_tensors(t).values())


def _data_sources(t: gs.Tensor) -> set[str]:
    """Names of the tensors t is computed from by value (not through Shape), t included."""
    return set(_value_tensors(t))


def _value_tensors(t: gs.Tensor) -> dict[str, gs.Tensor]:
    """The non-constant tensors t is computed from by value (not through Shape), t included, by name."""
    seen: dict[str, gs.Tensor] = {}
    stack = [t]
    while stack:
        cur = stack.pop()
        if isinstance(cur, gs.Constant) or cur.name in seen:
            continue
        seen[cur.name] = cur
        if cur.inputs and cur.inputs[0].op not in SHAPE_ONLY:
            stack.extend(cur.inputs[0].inputs)
    return seen


def _ancestors(t: gs.Tensor, floor: int, pos: dict[int, int]) -> set[int]:
    """Ids of the nodes t is computed from (through any edge) that come after graph position `floor`."""
    seen: set[int] = set()
    stack = [t]
    while stack:
        cur = stack.pop()
        p = cur.inputs[0] if cur.inputs else None
        if p is None or id(p) in seen or pos[id(p)] <= floor:
            continue
        seen.add(id(p))
        stack.extend(p.inputs)
    return seen


def _branch(x: gs.Tensor, y: gs.Tensor, pos: dict[int, int]) -> list[gs.Node]:
    """The nodes on data paths from x to y, in graph order (a node reading x only via Shape is not one)."""
    floor = pos[id(x.inputs[0])] if x.inputs else -1
    anc = _ancestors(y, floor, pos)
    found: dict[int, gs.Node] = {}
    stack = [n for n in x.outputs if n.op not in SHAPE_ONLY and id(n) in anc]
    while stack:
        n = stack.pop()
        if id(n) not in found:
            found[id(n)] = n
            stack.extend(c for o in n.outputs for c in o.outputs if id(c) in anc)
    return sorted(found.values(), key=lambda n: pos[id(n)])


def _weighted(nodes: list[gs.Node]) -> bool:
    """Some node is a Conv, Gemm, MatMul...: a block, not an elementwise formula such as x + 0.04 x^3."""
    return any(n.op in WEIGHTED for n in nodes)


def _projection(add: gs.Node, pos: dict[int, int]) -> tuple[gs.Node, int, list[gs.Node], str] | None:
    """A shortcut through a few nodes with a weight (Conv, BN...) from a tensor z the other input's
    weighted branch starts at: (Add, index of the shortcut, the other branch, the reason)."""
    options = []
    for i, (a, b) in enumerate(((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0]))):
        chain = _shortcut(a, _data_sources(b))
        if chain is not None:
            options.append((len(chain[0]), i, chain, b))
    if not options:
        return None
    _, i, (path, z), b = min(options, key=lambda o: o[0])
    branch = _branch(z, b, pos)
    if not _weighted(branch):
        return None
    via = next(n for n in path if n.op in WEIGHTED)
    where = f"{via.op} '{via.name or via.outputs[0].name}'"
    return add, i, branch, f"projection shortcut: the other input is not the block's input (it goes through {where})"


def _shortcut(a: gs.Tensor, sources: set[str]) -> tuple[list[gs.Node], gs.Tensor] | None:
    """(nodes, z): a short single-input chain with a weighted node from z (one of `sources`) to a."""
    path, t = [], a
    for _ in range(MAX_SHORTCUT):
        p = t.inputs[0] if t.inputs else None
        live = [i for i in p.inputs if not isinstance(i, gs.Constant)] if p is not None else []
        if len(live) != 1 or p.op in SHAPE_ONLY:
            return None
        path.append(p)
        t = live[0]
        if t.name in sources:
            return (path, t) if _weighted(path) else None
    return None


class _Context:
    """What describing a candidate needs: graph outputs, subgraph reads, names and shapes."""

    def __init__(self, graph: gs.Graph, names: dict[int, str], shapes: dict[str, Shape]):
        from .analyze import _subgraph_tensors

        self.outputs = {t.name for t in graph.outputs}
        self.subgraph_reads = set().union(*(_subgraph_tensors(n) for n in graph.nodes))
        self.names = names
        self.shapes = shapes

    def describe(self, add: gs.Node, index: int, branch: list[gs.Node], refused: str | None) -> Found | None:
        """The block record of one candidate; None when it is no residual after all."""
        x, y = add.inputs[index], add.inputs[1 - index]
        leak, change = self.leak(add, y, branch), self.shape_change(x, add.outputs[0])
        if leak and change and change.startswith("stride"):
            return None  # x broadcast into a sum that feeds on it far upstream: an attention mask, say
        inits = _own_constants(branch)
        reason = refused or leak or change
        block = ResidualBlock(
            id=add.name or add.outputs[0].name, add=self.names[id(add)], x=x.name, branch_output=y.name,
            nodes=[self.names[id(n)] for n in branch], initializers=[c.name for c in inits],
            params=int(sum(np.asarray(c.values).size for c in inits)), kind=_kind({n.op for n in branch}),
            reason=reason)
        return Found(block, add, index, branch)

    def leak(self, add: gs.Node, y: gs.Tensor, branch: list[gs.Node]) -> str | None:
        """Why a branch tensor (or the sum) is needed beyond the block, if it is."""
        inside = {id(n) for n in branch}
        if add.outputs[0].name in self.subgraph_reads:
            return f"the sum '{add.outputs[0].name}' is read inside a subgraph"
        for n in branch:
            for o in n.outputs:
                if o.name in self.outputs:
                    return f"branch output also read elsewhere: '{o.name}' is a graph output"
                if o.name in self.subgraph_reads:
                    return f"branch output also read elsewhere: '{o.name}' is read inside a subgraph"
                for c in o.outputs:
                    if id(c) not in inside and not (c is add and o is y):
                        return f"branch output also read elsewhere: '{o.name}' is read by {c.op} '{self.names[id(c)]}'"
        return None

    def shape_change(self, x: gs.Tensor, out: gs.Tensor) -> str | None:
        """Why the sum may not have x's shape (broadcasting, unknown dims), if so."""
        sx, so = self.shapes.get(x.name), self.shapes.get(out.name)
        if sx is None or so is None or any(d is None for d in (*sx, *so)):
            return f"shape unknown: x {_show(sx)}, the sum {_show(so)}"
        if sx != so:
            return f"stride/shape change: x is {_show(sx)}, the sum {_show(so)} (x would be broadcast)"
        return None


def _show(shape: Shape | None) -> str:
    return "of unknown rank" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _own_constants(branch: list[gs.Node]) -> list[gs.Constant]:
    """The constants only branch nodes read, in order of first use."""
    inside = {id(n) for n in branch}
    seen: dict[str, gs.Constant] = {}
    for n in branch:
        for t in n.inputs:
            if isinstance(t, gs.Constant) and t.name not in seen and all(id(c) in inside for c in t.outputs):
                seen[t.name] = t
    return list(seen.values())


def _kind(ops: set[str]) -> str:
    """A guess at what the branch is, from its op types."""
    if ops & {"Softmax", "Attention"}:
        return "attention"
    if ops & {"Conv", "ConvTranspose"}:
        return "conv"
    if ops & {"MatMul", "Gemm", "Einsum"}:
        return "mlp"
    return "other"


def _unique_ids(found: list[Found]) -> None:
    """Suffix repeated ids (models with duplicate node names) with #2, #3..."""
    count: dict[str, int] = {}
    for f in found:
        count[f.block.id] = count.get(f.block.id, 0) + 1
        if count[f.block.id] > 1:
            f.block.id = f"{f.block.id}#{count[f.block.id]}"


def _nest(found: list[Found]) -> None:
    """Record, in each block, the blocks whose Add lies in its branch."""
    for outer in found:
        inside = {id(n) for n in outer.branch}
        outer.block.inner = [f.block.id for f in found if id(f.add) in inside]
