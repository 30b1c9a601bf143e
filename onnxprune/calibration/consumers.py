"""A consumer as a linear map: rows of its input at sampled output positions times a weight matrix.

Conv (group 1, any number of spatial dims), Gemm and MatMul with a constant weight all compute
y[row] = W x[row] + b, where a row is one output position's receptive field (c x k x k values for a
conv) and W is [outputs, features]. Reconstruction sees every consumer through this view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.builder import Member
from ..graph.patterns import matmul_bias


@dataclass
class LinearView:
    """One consumer node seen as y = W x + b over rows of `features` values."""

    node: gs.Node
    member: Member  # the consumer weight member (its axis holds the input channels)
    kernel: int  # features per input position: the kernel volume of a conv, 1 otherwise

    @property
    def data(self) -> str:
        """The activation the consumer reads."""
        return self.node.inputs[0].name

    @property
    def features(self) -> int:
        """Columns of the consumer's input rows: channels x kernel positions."""
        return len(self.member.elements) * self.kernel

    def feature_positions(self) -> np.ndarray:
        """The input-channel position of each feature (conv features are channel-major)."""
        return np.repeat(np.arange(len(self.member.elements)), self.kernel)

    def matrix(self, values: np.ndarray | None = None) -> np.ndarray:
        """The weight (or `values` in its layout) as [outputs, features] in float64, scaled as the op applies it."""
        w = np.asarray(self.node.inputs[1].values if values is None else values, np.float64)
        if self.node.op == "Conv":
            return w.reshape(w.shape[0], -1)
        if self.node.op == "Gemm":
            alpha = float(self.node.attrs.get("alpha", 1.0))
            return alpha * (w if self.node.attrs.get("transB", 0) else w.T)
        return w.T  # MatMul

    def set_matrix(self, m: np.ndarray) -> None:
        """Store an [outputs, features] matrix back in the weight's own layout and type."""
        w = self.node.inputs[1]
        dtype, shape = w.values.dtype, w.values.shape
        if self.node.op == "Conv":
            values = m.reshape(shape)
        elif self.node.op == "Gemm":
            alpha = float(self.node.attrs.get("alpha", 1.0))
            values = (m if self.node.attrs.get("transB", 0) else m.T) / alpha
        else:
            values = m.T
        w.values = np.ascontiguousarray(values, dtype=dtype)

    def takes_bias(self) -> bool:
        """Whether a per-output constant can be added (Conv; Gemm with a constant or missing C and beta != 0)."""
        if self.node.op == "MatMul":
            return matmul_bias(self.node) is not None
        bias = self.node.inputs[2] if len(self.node.inputs) > 2 else None
        if self.node.op == "Gemm" and float(self.node.attrs.get("beta", 1.0)) == 0:
            return False
        outputs = self.node.inputs[1].values.shape[0 if self.node.op == "Conv" else
                                                   (0 if self.node.attrs.get("transB", 0) else 1)]
        return bias is None or not bias.name or (isinstance(bias, gs.Constant) and bias.values.size in (1, outputs))

    def grid(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output positions per sample for an input of this shape (one row per sample for Gemm)."""
        if self.node.op == "Conv":
            return tuple(_conv_geometry(self.node, shape[2:], self._kernel_shape())[1])
        if self.node.op == "MatMul":
            return tuple(shape[1:-1])
        return ()

    def sample(self, shape: tuple[int, ...], samples: int, points: int, rng: np.random.Generator) -> np.ndarray:
        """[samples, points] flat output positions, drawn without replacement per sample."""
        volume = math.prod(self.grid(shape))
        take = min(points, volume)
        return np.stack([rng.choice(volume, take, replace=False) for _ in range(samples)]).astype(np.int64)

    def sample_valid(self, valid: np.ndarray, points: int | None, rng: np.random.Generator) -> np.ndarray:
        """[samples, points] positions among each sample's real ones (`valid`: [N, T], 0 = padding) of a
        sequence read as [N, T, features]: `points` of them (default: T, so every real position of a full
        sample), drawn without replacement while a sample has enough, its own positions again after that
        (each sample weighs the same). A sample with no real position reads its first one."""
        take = points or valid.shape[1]
        out = np.empty((len(valid), take), np.int64)
        for i, row in enumerate(valid):
            real = np.flatnonzero(row) if row.any() else np.zeros(1, np.int64)
            first = rng.choice(real, min(take, len(real)), replace=False)
            out[i] = np.r_[first, rng.choice(real, take - len(first), replace=True)]
        return out

    def reads_sequence(self, shape: tuple[int, ...], valid: np.ndarray | None) -> bool:
        """The input is a [N, T, features] sequence whose [N, T] the padding mask `valid` covers."""
        return valid is not None and self.node.op == "MatMul" and len(shape) == 3 and tuple(shape[:2]) == valid.shape

    def rows(self, x: np.ndarray, where: np.ndarray) -> np.ndarray:
        """[samples * points, features]: the input values each sampled output position reads."""
        if self.node.op == "Gemm":
            return x.reshape(x.shape[0], -1)
        if self.node.op == "MatMul":
            flat = x.reshape(x.shape[0], -1, x.shape[-1])
            return flat[np.arange(len(x))[:, None], where].reshape(-1, x.shape[-1])
        return self._patches(x, where)

    def _kernel_shape(self) -> tuple[int, ...]:
        return tuple(self.node.inputs[1].values.shape[2:])

    def _patches(self, x: np.ndarray, where: np.ndarray) -> np.ndarray:
        kshape = self._kernel_shape()
        pads, grid = _conv_geometry(self.node, x.shape[2:], kshape)
        d = len(kshape)
        strides = self.node.attrs.get("strides", [1] * d)
        dilations = self.node.attrs.get("dilations", [1] * d)
        xp = np.pad(x, [(0, 0), (0, 0)] + [(b, e) for b, e in zip(pads[:d], pads[d:])])
        out = np.stack(np.unravel_index(where, grid), axis=-1)  # [n, p, d]
        offsets = np.stack(np.unravel_index(np.arange(math.prod(kshape)), kshape), axis=-1)  # [k, d]
        coords = out[:, :, None, :] * np.asarray(strides) + offsets[None, None] * np.asarray(dilations)  # [n, p, k, d]
        batch = np.arange(len(x))[:, None, None]
        patch = xp[(batch, slice(None), *(coords[..., i] for i in range(d)))]  # [n, p, k, c]
        return np.moveaxis(patch, -1, 2).reshape(-1, x.shape[1] * len(offsets))


def _conv_geometry(node: gs.Node, spatial: tuple[int, ...], kshape: tuple[int, ...]):
    """(pads [begins..., ends...], output spatial dims) of a Conv for this input size."""
    d = len(kshape)
    strides = node.attrs.get("strides", [1] * d)
    dilations = node.attrs.get("dilations", [1] * d)
    auto = node.attrs.get("auto_pad", "NOTSET")
    extent = [(k - 1) * dl + 1 for k, dl in zip(kshape, dilations)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        grid = [-(-n // s) for n, s in zip(spatial, strides)]
        total = [max(0, (o - 1) * s + e - n) for o, s, e, n in zip(grid, strides, extent, spatial)]
        small = [t // 2 for t in total]
        begin = small if auto == "SAME_UPPER" else [t - h for t, h in zip(total, small)]
        return begin + [t - b for t, b in zip(total, begin)], grid
    pads = list(node.attrs.get("pads", [0] * 2 * d)) if auto == "NOTSET" else [0] * 2 * d
    grid = [(n + pads[i] + pads[i + d] - e) // s + 1 for i, (n, e, s) in enumerate(zip(spatial, extent, strides))]
    return pads, grid


def linear_view(node: gs.Node, member: Member) -> LinearView | str:
    """The view of a consumer, or why it has none."""
    if node.op == "Conv" and int(node.attrs.get("group", 1)) == 1 and member.axis == 1:
        return LinearView(node, member, math.prod(node.inputs[1].values.shape[2:]))
    if node.op == "Gemm" and not node.attrs.get("transA", 0):
        return LinearView(node, member, 1)
    if node.op == "MatMul" and member.axis == 0:
        return LinearView(node, member, 1)
    return f"no linear view of {node.op} consumers"
