"""onnxruntime's fused transformer ops (domain com.microsoft), as its optimizer writes them.

Element-wise fusions (Gelu, QuickGelu, FastGelu, BiasGelu, BiasAdd) pass channels through and slice
their bias with them. The fused norms (SkipLayerNormalization, SkipSimplifiedLayerNormalization,
EmbedLayerNormalization) normalise the hidden size, which stays, as at a LayerNormalization. The
attention ops (Attention with packed QKV weights, MultiHeadAttention, GroupQueryAttention) carry
heads as units, like the ONNX Attention op; what they hold that nobody could slice (a KV cache, a
bias per head, rotary inside the packed op) freezes the heads, with the reason.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import CONSUMER, PASS, PRODUCER, Builder, Layout
from . import RewriteContext, Rule, register
from .common import passthrough

MS = "com.microsoft"


def _ms(*ops: str) -> tuple[str, ...]:
    """Registry keys of com.microsoft ops."""
    return tuple(f"{MS}.{op}" for op in ops)


def _used(node: gs.Node, b: Builder, first: int) -> bool:
    """Some output from index `first` on is read by a node or is a graph output."""
    return any(o.name and (o.outputs or o in b.graph.outputs) for o in node.outputs[first:])


def _present(node: gs.Node, b: Builder, indices) -> bool:
    """Some of these optional inputs is given."""
    return any(b.input(node, i) is not None for i in indices)


def _per_head(b: Builder, t: gs.Tensor | None) -> bool:
    """An attention bias [B or 1, N or 1, S, T] that differs per head (or of unknown shape)."""
    if t is None:
        return False
    shape = b.shape(t)
    return shape is None or len(shape) != 4 or shape[1] != 1


def _bias(node: gs.Node, b: Builder, index: int, lay: Layout, kind: str = "addend") -> None:
    """A 1-D bias on the last axis: sliced with channels there; over channels elsewhere it broadcasts."""
    t = b.input(node, index)
    rank = b.rank(node.inputs[0])
    if t is None or (rank is not None and lay.axis != rank - 1):
        return
    name = f"{node.op} '{b.name(node)}'"
    other = b.layout(t)
    if rank is None:
        b.freeze(lay.elements, f"{name}: an input of unknown rank")
    elif other is not None and other.axis == 0 and len(other.elements) == len(lay.elements):
        b.couple(lay.elements, other.elements)
    elif other is not None or b.const(t) is None:
        b.freeze(lay.elements, f"{name}: its bias '{t.name}' is computed and carries channels nobody slices")
    else:
        b.param(node, index, 0, lay.elements, PASS, kind)


@register(*_ms("Gelu", "QuickGelu"))
class ContribUnaryRule(Rule):
    """Acts on each element alone (QuickGelu's alpha is a scalar attribute)."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is not None:
            passthrough(node, b, lay.axis, lay.elements)


@register(*_ms("FastGelu", "BiasGelu"))
class BiasActivationRule(Rule):
    """Y = gelu(X + bias), bias [C] along X's last axis (optional for FastGelu)."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        lay = b.layout(node.inputs[0])
        if lay is None:
            return
        _bias(node, b, 1, lay)
        passthrough(node, b, lay.axis, lay.elements)


@register(*_ms("BiasAdd"))
class BiasAddRule(Rule):
    """Y = X + bias + skip: X and skip [N, S, C] are coupled like a residual Add, bias [C] sliced with them."""

    def analyze(self, node: gs.Node, b: Builder) -> None:
        x, skip = node.inputs[0], b.input(node, 2)
        lx, ls = b.layout(x), b.layout(skip)
        if lx is None and ls is None:
            return
        name = f"BiasAdd '{b.name(node)}'"
        ref = lx or ls
        if lx is not None and ls is not None:
            if lx.axis != ls.axis or len(lx.elements) != len(ls.elements):
                b.freeze_inputs(node, f"{name} adds channels on different axes")
                return
            b.couple(lx.elements, ls.elements)
        else:
            other = 2 if lx is not None else 0
            if b.const(node.inputs[other]) is None:
                b.freeze(ref.elements, f"{name}: operand '{node.inputs[other].name}' may carry channels nobody slices")
                return
            b.param(node, other, ref.axis, ref.elements, PASS, "addend")
        _bias(node, b, 1, ref)
        passthrough(node, b, ref.axis, ref.elements)


@register(*_ms("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "EmbedLayerNormalization"))
class FusedNormRule(Rule):
    """(input + skip + bias) or the embeddings' sum, normalised over the hidden size: that size stays.

    None of the outputs (the normalised tensor, mean, inv_std_var, input_skip_bias_sum, mask_index,
    embedding_sum) carries channels, as after a LayerNormalization.
    """

    def analyze(self, node: gs.Node, b: Builder) -> None:
        b.freeze_inputs(node, f"{node.op} '{b.name(node)}' mixes values across the channel axis "
                              "(it normalises the hidden size: the residual width stays)")


def _head_problem(sizes: tuple[int, int, int], heads: int, kv_heads: int) -> str | None:
    """Why Q, K and V of these hidden sizes do not split into heads, or None."""
    q, k, v = sizes
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        return f"{heads} query heads and {kv_heads} key/value heads"
    if q % heads or k % kv_heads or v % kv_heads or q // heads != k // kv_heads:
        return f"hidden sizes {list(sizes)} do not split into {heads} query and {kv_heads} key/value heads"
    return None


def _couple_heads(b: Builder, q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """Each K/V head and the Q heads reading it (Q head i reads K/V head i // (heads / kv_heads)) are one
    unit; returns the output's channel elements: Q head i's block holds V head i // group's channels."""
    units = [q.reshape(heads, -1), k.reshape(kv_heads, -1), v.reshape(kv_heads, -1)]
    for part, unit in zip((q, k, v), units):
        b.couple_blocks(part, unit.shape[1])
    kv_of_q = np.arange(heads) // (heads // kv_heads)
    b.couple(units[0][:, 0], units[1][kv_of_q, 0])
    b.couple(units[1][:, 0], units[2][:, 0])
    return units[2][kv_of_q].reshape(-1)


def _rewrite_heads(node: gs.Node, rw: RewriteContext, attrs: tuple[str, ...]) -> None:
    """Set each head-count attribute from the kept channels it counts (noted as elements, head size)."""
    note = rw.note(node)
    for attr in attrs:
        elements, size = note[attr]
        node.attrs[attr] = int(rw.kept(elements).sum()) // size


@register(*_ms("Attention"))
class PackedAttentionRule(Rule):
    """Y = attention(X @ W + bias) with W [hidden_in, q + k + v] packing Q | K | V, each num_heads heads.

    W's columns and the bias are produced channels: head h is its block in each of Q, K and V, and
    the output [B, S, v] carries V's heads to the output projection. W's rows consume X's channels.
    """

    def analyze(self, node: gs.Node, b: Builder) -> None:
        name = f"Attention '{b.name(node)}'"
        lay, rank = b.layout(node.inputs[0]), b.rank(node.inputs[0])
        if lay is not None and (rank is None or lay.axis != rank - 1):
            b.freeze(lay.elements, f"{name} expects the hidden channels on the last axis")
            lay = None
        w = b.const(b.input(node, 1))
        if w is None or w.ndim != 2:
            b.freeze_inputs(node, f"{name}: the packed weights are not a constant matrix")
            return
        if lay is not None:
            b.param(node, 1, 0, lay.elements, CONSUMER, "weight")
        out = b.produce(node, w.shape[1])
        b.param(node, 1, 1, out, PRODUCER, "weight")
        if b.input(node, 2) is not None:
            b.param(node, 2, 0, out, PRODUCER, "bias")
        sizes = tuple(int(s) for s in node.attrs.get("qkv_hidden_sizes", [w.shape[1] // 3] * 3))
        heads = int(node.attrs.get("num_heads", 0))
        problem = self._problem(node, b, sizes, heads, w.shape[1])
        if problem:
            b.freeze(out, f"{name}: {problem}")
            return
        q, k, v = np.split(out, np.cumsum(sizes)[:2])
        y = _couple_heads(b, q, k, v, heads, heads)
        b.note(node, num_heads=(q, sizes[0] // heads), sizes=(q, k, v))
        passthrough(node, b, 2, y, outputs=1)

    @staticmethod
    def _problem(node: gs.Node, b: Builder, sizes, heads: int, width: int) -> str | None:
        """Why the heads cannot be removed, or None."""
        if len(sizes) != 3 or sum(sizes) != width:
            return f"qkv_hidden_sizes {list(sizes)} do not add up to the weights' {width} columns"
        if int(node.attrs.get("do_rotary", 0)):
            return "rotary embedding inside the op (do_rotary) is not handled"
        if _present(node, b, (4, 6)):
            return "the past state input carries heads nobody slices"
        if _used(node, b, 1):
            return "its present state output is used"
        if _per_head(b, b.input(node, 5)):
            return "attention_bias differs per head"
        return _head_problem(sizes, heads, heads)

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        _rewrite_heads(node, rw, ("num_heads",))
        if "qkv_hidden_sizes" in node.attrs:
            node.attrs["qkv_hidden_sizes"] = [int(rw.kept(e).sum()) for e in rw.note(node)["sizes"]]


def _separate(node: gs.Node, b: Builder) -> tuple[list[Layout] | None, str | None]:
    """Layouts of separate 3-D Q, K, V with channels on the last axis, or why they are not that."""
    lays = [b.layout(b.input(node, i)) for i in range(3)]
    if not all(lays):
        return None, "Q, K and V do not all carry sliceable heads (packed or cached key/value, or one nobody slices)"
    if any(b.rank(node.inputs[i]) != 3 or lay.axis != 2 for i, lay in enumerate(lays)):
        return None, "Q, K and V are not all [batch, sequence, hidden] with the heads on the last axis"
    return lays, None


@register(*_ms("MultiHeadAttention"))
class MultiHeadAttentionRule(Rule):
    """Separate Q [B, S, q], K [B, L, q], V [B, L, v], num_heads each; bias [q + q + v] sliced with them.

    Packed QKV or KV inputs, and K/V in the cache layout [B, N, L, H], freeze the heads.
    """

    def analyze(self, node: gs.Node, b: Builder) -> None:
        if not any(b.layout(b.input(node, i)) for i in range(3)):
            return
        name = f"MultiHeadAttention '{b.name(node)}'"
        lays, problem = _separate(node, b)
        heads = int(node.attrs.get("num_heads", 0))
        if lays is not None:
            problem = self._problem(node, b, tuple(len(lay.elements) for lay in lays), heads)
        if problem:
            b.freeze_inputs(node, f"{name}: {problem}")
            return
        q, k, v = (lay.elements for lay in lays)
        y = _couple_heads(b, q, k, v, heads, heads)
        for i in range(3):
            b.member(node, node.inputs[i])
        if b.input(node, 3) is not None:
            b.param(node, 3, 0, np.concatenate([q, k, v]), PASS, "addend")
        b.note(node, num_heads=(q, len(q) // heads))
        passthrough(node, b, 2, y, outputs=1)

    @staticmethod
    def _problem(node: gs.Node, b: Builder, sizes, heads: int) -> str | None:
        """Why the heads cannot be removed, or None."""
        if _present(node, b, (6, 7, 8, 9)):
            return "past key/value inputs carry heads nobody slices"
        if _used(node, b, 1):
            return "present key/value or qk outputs are used"
        if _per_head(b, b.input(node, 5)):
            return "attention_bias differs per head"
        return _head_problem(sizes, heads, heads)

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        _rewrite_heads(node, rw, ("num_heads",))


GQA_UNHANDLED = (  # optional inputs by index, and why the heads freeze when one is given
    (11, "head_sink (one value per head) is not sliced"),
    (12, "a quantized KV cache (k_scale) is not handled"),
    (13, "a quantized KV cache (v_scale) is not handled"),
    (14, "per-head Q/K normalisation weights are not handled"),
    (15, "per-head Q/K normalisation weights are not handled"),
)


@register(*_ms("GroupQueryAttention"))
class GroupQueryAttentionRule(Rule):
    """Q [B, S, N*H] and K, V [B, S, KV*H] (or all three packed in Q); Q head i reads K/V head i // (N / KV).

    A K/V head and its group of Q heads are one unit: removing it removes all of them.
    """

    def analyze(self, node: gs.Node, b: Builder) -> None:
        packed = not _present(node, b, (1, 2))
        if not any(b.layout(b.input(node, i)) for i in range(3)):
            return
        name = f"GroupQueryAttention '{b.name(node)}'"
        heads, kv_heads = int(node.attrs.get("num_heads", 0)), int(node.attrs.get("kv_num_heads", 0))
        parts, problem = self._parts(node, b, packed, heads, kv_heads)
        problem = problem or self._problem(node, b, tuple(len(p) for p in parts), heads, kv_heads)
        if problem:
            b.freeze_inputs(node, f"{name}: {problem}")
            return
        q, k, v = parts
        y = _couple_heads(b, q, k, v, heads, kv_heads)
        for i in range(1 if packed else 3):
            b.member(node, node.inputs[i])
        size = len(q) // heads
        b.note(node, num_heads=(q, size), kv_num_heads=(k, size))
        passthrough(node, b, 2, y, outputs=1)

    @staticmethod
    def _parts(node: gs.Node, b: Builder, packed: bool, heads: int, kv_heads: int):
        """Q, K and V channel elements (split from the packed query when K and V are absent), or why not."""
        if not packed:
            lays, problem = _separate(node, b)
            return ([lay.elements for lay in lays] if lays else []), problem
        lay = b.layout(node.inputs[0])
        if b.rank(node.inputs[0]) != 3 or lay.axis != 2:
            return [], "the packed QKV input does not carry its channels on the last axis"
        if heads <= 0 or kv_heads <= 0 or len(lay.elements) % (heads + 2 * kv_heads):
            return [], f"{len(lay.elements)} packed channels do not split into {heads} + 2 x {kv_heads} heads"
        size = len(lay.elements) // (heads + 2 * kv_heads)
        return np.split(lay.elements, [heads * size, (heads + kv_heads) * size]), None

    @staticmethod
    def _problem(node: gs.Node, b: Builder, sizes, heads: int, kv_heads: int) -> str | None:
        """Why the heads cannot be removed, or None."""
        if _present(node, b, (3, 4)):
            return "past key/value inputs carry heads nobody slices"
        if _used(node, b, 1):
            return "present key/value or output_qk outputs are used"
        if _per_head(b, b.input(node, 10)):
            return "attention_bias differs per head"
        for index, why in GQA_UNHANDLED:
            if b.input(node, index) is not None:
                return why
        return _head_problem(sizes, heads, kv_heads)

    def rewrite(self, node: gs.Node, rw: RewriteContext) -> None:
        _rewrite_heads(node, rw, ("num_heads", "kv_num_heads"))
