"""Block discovery for recovery: cut the pruned graph where every live tensor matches the original's.

Walking the pruned model's nodes in order, the live set after a node holds the non-constant tensors
computed so far that a later node or a graph output still reads. Where each of them exists in the
original with the same shape, the original's values can serve as targets: that position is a cut.
A block starts at each stretch between cuts that holds pruned tensors and trainable weights; the
stretches without them join the block before (or the first block).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxPruneError
from ..graph.shapes import concrete_dims
from .torch_graph import TorchGraph, sorted_nodes, torch

FLOAT_TYPES = ("float32", "float64", "float16", "bfloat16")
SHAPE_OPS = ("Shape", "Size")  # their values follow shapes, never weights


@dataclass
class Block:
    """A stretch of the pruned graph, trained so its outputs match the original's at its end cut."""

    name: str
    inputs: list[str]  # the live tensors at the start cut, fed to it
    outputs: list[str]  # the float tensors at the end cut it computes: its targets
    params: list[str]  # the initializers it trains
    nodes: int
    fixed: list[str] = field(default_factory=list)  # inputs computed from graph inputs alone (recomputed, not stored)


@dataclass
class Layout:
    """The blocks and how samples may be grouped to run them."""

    blocks: list[Block]
    batched: bool  # the batch dim may vary: any samples run together (else `group` at a time)
    group: int  # samples per run when not batched (the static batch)
    trainable: list[str]  # every weight recovery may tune (end to end)


@dataclass
class _Segment:
    """The nodes between two consecutive cuts."""

    start: int  # cut index it starts from
    end: int  # cut index it ends at
    nodes: list[onnx.NodeProto]
    params: set[str]
    pruned: bool

    @property
    def anchor(self) -> bool:
        """A segment that starts a block: it holds pruned tensors and trainable weights."""
        return self.pruned and bool(self.params)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers."""
    static = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in static]


def static_batch(model: onnx.ModelProto) -> int | None:
    """The batch size an input fixes in its first dim, if one does."""
    for v in graph_inputs(model):
        dims = v.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return dims[0].dim_value
    return None


def synthetic_sample(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """One batch of made-up inputs at the model's concrete shapes (normal floats, integer ones)."""
    specs = [(v.name, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or None
                            for d in v.type.tensor_type.shape.dim)) for v in graph_inputs(model)]
    dims = concrete_dims(specs, 0, {})
    rng = np.random.default_rng(0)
    out = {}
    for v in graph_inputs(model):
        dtype = helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
        shape = dims.get(v.name, ())
        out[v.name] = (rng.standard_normal(shape) if np.issubdtype(dtype, np.floating) else np.ones(shape)).astype(dtype)
    return out


def _probe(graph: TorchGraph, sample: dict[str, np.ndarray], names: list[str]) -> dict[str, tuple]:
    """(shape, dtype name) of each named tensor on one run of the sample."""
    feeds = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sample.items() if k in graph.graph_inputs}
    with torch.no_grad():
        values = graph(feeds, names)
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in values.items()}


def _read(nodes: list[onnx.NodeProto], outputs: list[str]) -> set[str]:
    """Tensors some node or a graph output reads."""
    return {t for n in nodes for t in n.input if t} | set(outputs)


class _Walk:
    """The pruned graph's active nodes in order, with what each tensor depends on."""

    def __init__(self, model: onnx.ModelProto, trainable: set[str]) -> None:
        """Classify tensors: constants (and the trainable weights they carry), parameter-dependent, fixed."""
        graph = model.graph
        self.inputs = [v.name for v in graph_inputs(model)]
        self.outputs = [v.name for v in graph.output]
        self.roots: dict[str, set[str]] = {t.name: ({t.name} & trainable) for t in graph.initializer}
        self.dependent: set[str] = set()  # tensors whose value moves with a trainable weight
        self.input_only: set[str] = set(self.inputs)  # computed from graph inputs and constants alone
        self.nodes: list[onnx.NodeProto] = []
        for node in sorted_nodes(graph):
            self._classify(node)
        read = _read(self.nodes, self.outputs)
        self.order = {t: i for i, t in enumerate(self.inputs)}
        self.order.update({t: len(self.order) + i for i, t in enumerate(self.produced(self.nodes, read))})
        self.last = {t: i for i, n in enumerate(self.nodes) for t in n.input if t in self.order}
        self.read = read

    def _classify(self, node: onnx.NodeProto) -> None:
        """Constant when every input is constant (its weights recorded); else active."""
        inputs = [t for t in node.input if t]
        if all(t in self.roots for t in inputs):
            carried = set().union(*(self.roots[t] for t in inputs))
            for t in node.output:
                self.roots[t] = carried
            return
        self.nodes.append(node)
        outputs = [t for t in node.output if t]
        if node.op_type not in SHAPE_OPS and any(t in self.dependent or self.roots.get(t) for t in inputs):
            self.dependent.update(outputs)
        elif all(t in self.roots or t in self.input_only for t in inputs):
            self.input_only.update(outputs)

    def fixed(self, t: str) -> bool:
        """Computed from graph inputs and frozen constants alone: recomputed where needed, never stored."""
        return t in self.input_only and t not in self.dependent

    @staticmethod
    def produced(nodes: list[onnx.NodeProto], read: set[str]) -> list[str]:
        """The outputs of the nodes that something reads, in order."""
        return [t for n in nodes for t in n.output if t and t in read]

    def params(self, nodes: list[onnx.NodeProto]) -> set[str]:
        """The trainable weights the nodes read, directly or through constant ops (Identity, Transpose)."""
        return set().union(*(self.roots.get(t, set()) for n in nodes for t in n.input))

    def lives(self) -> list[list[str]]:
        """The live set at each boundary: before node 0, after each node."""
        live = {t for t in self.inputs if t in self.read}
        out = [sorted(live, key=self.order.get)]
        for i, node in enumerate(self.nodes):
            live |= {t for t in node.output if t in self.order}
            live = {t for t in live if self.last.get(t, -1) > i or t in self.outputs}
            out.append(sorted(live, key=self.order.get))
        return out


def _is_cut(live: list[str], walk: _Walk, shapes: _Shapes) -> bool:
    """Every live tensor that moves with the weights in the original at the same shape (its target);
    every stored one batch-major when batches vary. Fixed tensors (masks, positions) only get fed,
    so the pruner's own shape computations may be among them."""
    for t in live:
        if t in walk.dependent and shapes.original.get(t) != shapes.pruned[t]:
            return False
        if shapes.doubled is not None and not walk.fixed(t) and \
                not _scales(shapes.pruned[t][0], shapes.doubled[t][0]):
            return False
    return True


def _segments(walk: _Walk, cuts: list[int], pruned: dict, original: dict) -> list[_Segment]:
    """The stretches between consecutive cuts (boundary indices), with their weights and pruned flag."""
    out = []
    for k, (a, b) in enumerate(pairwise(cuts)):
        nodes = walk.nodes[a:b]
        made = walk.produced(nodes, walk.read)
        pruned_here = any(original.get(t) != pruned[t] for t in made if t in walk.dependent)
        out.append(_Segment(k, k + 1, nodes, walk.params(nodes), pruned_here))
    return out


def _group(segments: list[_Segment]) -> list[list[_Segment]]:
    """Each anchor starts a block; other segments join the block before (those before any, the first)."""
    groups: list[list[_Segment]] = []
    for seg in segments:
        if not groups or (seg.anchor and any(s.anchor for s in groups[-1])):
            groups.append([seg])
        else:
            groups[-1].append(seg)
    return groups if any(s.params for s in segments) else []  # every group holds an anchor, or is the only one


def _targets(group: list[_Segment], end_live: list[str], walk: _Walk, pruned: dict) -> list[str]:
    """The float tensors live at the end cut that the group computes from trainable weights."""
    made = set(walk.produced([n for s in group for n in s.nodes], walk.read))
    return [t for t in end_live if t in made and t in walk.dependent and pruned[t][1] in FLOAT_TYPES]


def _merge_targetless(groups: list[list[_Segment]], lives: list[list[str]], walk: _Walk, pruned: dict,
                      cuts: list[int]) -> list[list[_Segment]]:
    """Fold a group with nothing to match at its end into the next one (the last into the one before)."""
    out: list[list[_Segment]] = []
    carry: list[_Segment] = []
    for group in groups:
        group = carry + group
        carry = []
        if _targets(group, lives[cuts[group[-1].end]], walk, pruned):
            out.append(group)
        else:
            carry = group
    if carry and out:
        out[-1] = out[-1] + carry
    return out


def _name(nodes: list[onnx.NodeProto], scopes: dict[str, list[str]]) -> str:
    """The common module path of the nodes (`/bert/encoder/layer.0/attention`), else `first..last` node."""
    paths = [p for p in (scopes.get(n.name) or n.name.split("/")[:-1] for n in nodes) if len(p) > 1]
    common: list[str] = []
    for parts in zip(*paths) if paths else []:
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if any(common):
        return "/".join(common)
    names = [n.name or n.op_type for n in nodes]
    return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


def _block(group: list[_Segment], lives: list[list[str]], cuts: list[int], walk: _Walk, pruned: dict,
           shared: set[str], scopes: dict[str, list[str]]) -> Block:
    """The Block of a group of segments."""
    nodes = [n for s in group for n in s.nodes]
    anchor = next((s.nodes for s in group if s.anchor), nodes)
    anchor = [n for n in anchor if any(t in walk.dependent for t in n.output)] or anchor
    inputs = lives[cuts[group[0].start]]
    params = sorted(set().union(*(s.params for s in group)) - shared)
    return Block(_name(anchor, scopes), inputs, _targets(group, lives[cuts[group[-1].end]], walk, pruned), params,
                 len(nodes), [t for t in inputs if walk.fixed(t)])


def _shared(groups: list[list[_Segment]]) -> set[str]:
    """Weights read in more than one group: no single block may train them."""
    seen: dict[str, int] = {}
    shared = set()
    for i, group in enumerate(groups):
        for p in set().union(*(s.params for s in group)):
            if seen.setdefault(p, i) != i:
                shared.add(p)
    return shared


def _first_group(sample: dict[str, np.ndarray], group: int) -> dict[str, np.ndarray]:
    """The first `group` samples of each array."""
    return {k: np.asarray(v)[:group] for k, v in sample.items()}


def _doubled_probe(graph: TorchGraph, sample: dict[str, np.ndarray], names: list[str]) -> dict | None:
    """Shapes with the sample twice in the batch, or None when the model cannot run a batch of two."""
    twice = {k: np.concatenate([v, v]) for k, v in sample.items()}
    try:
        return _probe(graph, twice, names)
    except OnnxPruneError:
        return None


@dataclass
class _Shapes:
    """(shape, dtype) of the tensors: pruned and original on the sample, pruned on it twice over."""

    pruned: dict[str, tuple]
    original: dict[str, tuple]
    doubled: dict[str, tuple] | None  # None: the batch cannot vary


def _shapes(teacher: TorchGraph, student: TorchGraph, walk: _Walk, sample: dict[str, np.ndarray],
            static: bool) -> _Shapes:
    """Probe both models on the sample (and the pruned one on a batch of two when the batch may vary)."""
    names = list(walk.order)
    given = {t: (tuple(sample[t].shape), str(sample[t].dtype)) for t in walk.inputs if t in sample}
    pruned = {**_probe(student, sample, [t for t in names if t not in walk.inputs]), **given}
    known = {t for n in teacher.nodes for t in n.outputs if t}
    original = {**_probe(teacher, sample, [t for t in names if t in known]),
                **{t: given[t] for t in teacher.graph_inputs if t in given}}
    doubled = None if static else _doubled_probe(student, sample, names)
    if doubled is not None:
        doubled.update({t: ((2 * shape[0], *shape[1:]), dtype) for t, (shape, dtype) in given.items()})
    return _Shapes(pruned, original, doubled)


def _scales(one: tuple, two: tuple) -> bool:
    """A tensor's first dim follows the batch (shapes at batch 1 and 2)."""
    return bool(one) and two[0] == 2 * one[0] and two[1:] == one[1:]


def _per_sample(walk: _Walk, trainable: set[str], shapes: _Shapes) -> set[str]:
    """The weights that act on per-sample data: those that only compute batch-independent tensors
    (rotary frequencies, position tables) are left alone, like the masks and positions they make."""
    if shapes.doubled is None:
        return trainable
    acting: set[str] = set()
    for node in walk.nodes:
        made = [t for t in node.output if t in shapes.pruned and t in shapes.doubled]
        if any(_scales(shapes.pruned[t][0], shapes.doubled[t][0]) for t in made):
            acting |= walk.params([node])
    return trainable & acting


def _scopes(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Node name -> module path, from the name scopes the dynamo exporter records (TorchScript names carry it)."""
    out = {}
    for node in model.graph.node:
        entry = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        try:
            scopes = ast.literal_eval(entry) if entry else None
        except (ValueError, SyntaxError):
            scopes = None
        if isinstance(scopes, list) and len(scopes) > 1:
            parts = [b[len(a) + 1:] if a and b.startswith(a + ".") else b for a, b in pairwise(scopes[:-1])]
            out[node.name] = ["", *parts]
    return out


def layout(original: onnx.ModelProto, pruned: onnx.ModelProto, sample: dict[str, Any] | None = None,
           graphs: tuple[TorchGraph, TorchGraph] | None = None) -> Layout:
    """The blocks of the pruned model (see the module doc) and how samples may be batched through them.

    `graphs`: the (original, pruned) models as TorchGraphs, when the caller has them already.
    """
    static = static_batch(pruned)
    group = static or 1
    sample = _first_group(sample if sample is not None else synthetic_sample(pruned), group)
    teacher, student = graphs or (TorchGraph(original), TorchGraph(pruned))
    walk = _Walk(pruned, set(student.default_trainable()))
    shapes = _shapes(teacher, student, walk, sample, static is not None)
    trainable = _per_sample(walk, set(student.default_trainable()), shapes)
    walk = _Walk(pruned, trainable)
    lives = walk.lives()
    cuts = [i for i, live in enumerate(lives) if _is_cut(live, walk, shapes)]
    if cuts[-1] != len(lives) - 1 and shapes.doubled is not None:  # outputs not batch-major: one sample a run
        shapes = replace(shapes, doubled=None)
        cuts = [i for i, live in enumerate(lives) if _is_cut(live, walk, shapes)]
    if cuts[-1] != len(lives) - 1:
        differ = [t for t in lives[-1] if shapes.original.get(t) != shapes.pruned[t]]
        raise OnnxPruneError("recovery needs the pruned model's outputs at the original's shapes: "
                             f"{', '.join(differ) or 'they'} differ")
    if cuts[0] != 0:
        cuts.insert(0, 0)
    groups = _merge_targetless(_group(_segments(walk, cuts, shapes.pruned, shapes.original)), lives, walk,
                               shapes.pruned, cuts)
    shared = _shared(groups)
    scopes = _scopes(original)
    blocks = [_block(g, lives, cuts, walk, shapes.pruned, shared, scopes) for g in groups]
    batched = shapes.doubled is not None
    return Layout(blocks, batched, 1 if batched else group, sorted(trainable))


def find_blocks(original: onnx.ModelProto, pruned: onnx.ModelProto,
                sample: dict[str, np.ndarray] | None = None) -> list[Block]:
    """The pruned model's recovery blocks, shapes checked on `sample` (default: made-up inputs)."""
    return layout(original, pruned, sample).blocks
