"""Normalization and attention ops of the PyTorch interpreter (needs torch)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .torch_registry import TORCH_TYPES, Node, axis_of, op

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _channel(t: torch.Tensor, rank: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over axis 1 of a rank-`rank` tensor."""
    return t.reshape(1, -1, *[1] * (rank - 2))


def _normalize(x: torch.Tensor, dims: list[int], eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x - mean) / sqrt(var + eps) over `dims`, with the mean and the inverse deviation."""
    mean = x.mean(dims, keepdim=True)
    centered = x - mean
    inv = torch.rsqrt((centered * centered).mean(dims, keepdim=True) + eps)
    return centered * inv, mean, inv


@op("BatchNormalization")
def batch_norm(node: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
               var: torch.Tensor) -> torch.Tensor:
    """Inference batch normalization with the stored statistics."""
    if node.attr("training_mode", 0):
        raise node.fail("training_mode=1")
    r = x.dim()
    inv = torch.rsqrt(_channel(var, r) + node.attr("epsilon", 1e-5))
    return (x - _channel(mean, r)) * (inv * _channel(scale, r)) + _channel(bias, r)


@op("InstanceNormalization")
def instance_norm(node: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Normalization over each sample's and channel's spatial axes, then a per-channel affine."""
    y, _, _ = _normalize(x, list(range(2, x.dim())), node.attr("epsilon", 1e-5))
    return y * _channel(scale, x.dim()) + _channel(bias, x.dim())


@op("LayerNormalization")
def layer_norm(node: Node, x: torch.Tensor, scale: torch.Tensor,
               bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalization over the axes from `axis` on; also the Mean and InvStdDev outputs."""
    axis = axis_of(node.attr("axis", -1), x.dim())
    wide = x.float() if x.dtype in LOW_PRECISION and node.attr("stash_type", 1) == 1 else x
    y, mean, inv = _normalize(wide, list(range(axis, x.dim())), node.attr("epsilon", 1e-5))
    y = y.to(x.dtype) * scale
    return (y if bias is None else y + bias), mean, inv


@op("GroupNormalization")
def group_norm(node: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Normalization over channel groups; the affine is per group (opset 18) or per channel (21)."""
    groups = node.attr("num_groups")
    grouped = x.reshape(x.shape[0], groups, -1)
    y, _, _ = _normalize(grouped, [2], node.attr("epsilon", 1e-5))
    if node.opset < 21:
        y = y * scale.reshape(1, groups, 1) + bias.reshape(1, groups, 1)
        return y.reshape(x.shape)
    return y.reshape(x.shape) * _channel(scale, x.dim()) + _channel(bias, x.dim())


@op("LpNormalization")
def lp_norm(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x divided by its L1 or L2 norm along an axis."""
    axis = axis_of(node.attr("axis", -1), x.dim())
    p = node.attr("p", 2)
    norm = x.abs().sum(axis, keepdim=True) if p == 1 else torch.sqrt((x * x).sum(axis, keepdim=True))
    return x / norm


@op("MeanVarianceNormalization")
def mean_variance_norm(node: Node, x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the given axes (default N, H, W)."""
    dims = [axis_of(a, x.dim()) for a in node.attr("axes", [0, 2, 3])]
    mean = x.mean(dims, keepdim=True)
    std = torch.sqrt((x * x).mean(dims, keepdim=True) - mean * mean)
    return (x - mean) / (std + 1e-9)


@op("LRN")
def lrn(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Local response normalization across channels."""
    size = node.attr("size")
    alpha, beta, bias = node.attr("alpha", 1e-4), node.attr("beta", 0.75), node.attr("bias", 1.0)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = F.pad(x * x, [0, 0] * (x.dim() - 2) + [before, after])
    window = sum(padded[:, i:i + x.shape[1]] for i in range(size))
    return x / (bias + alpha / size * window) ** beta


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, seq, heads * size] -> [batch, heads, seq, size]."""
    return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def _attention_bias(node: Node, mask: torch.Tensor | None, q: torch.Tensor, length: int,
                    past: int) -> torch.Tensor | None:
    """The additive bias of the scores: the mask (bool or float) and the causal frontier, or None."""
    bias = None
    if mask is not None:
        short = length - mask.shape[-1]
        if short > 0:
            mask = F.pad(mask, [0, short], value=False if mask.dtype == torch.bool else -math.inf)
        bias = torch.where(mask, 0.0, -math.inf).to(q.dtype) if mask.dtype == torch.bool else mask.to(q.dtype)
    if node.attr("is_causal", 0):
        rows = torch.arange(q.shape[2], device=q.device).reshape(-1, 1)
        allowed = torch.arange(length, device=q.device).reshape(1, -1) <= rows + past
        causal = torch.where(allowed, 0.0, -math.inf).to(q.dtype)
        bias = causal if bias is None else bias + causal
    return bias


@op("Attention")
def attention(node: Node, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              past_k: torch.Tensor | None = None, past_v: torch.Tensor | None = None,
              nonpad: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Scaled dot-product attention (opset 23): 3-D or 4-D inputs, masks, causal, KV cache, GQA, softcap."""
    if nonpad is not None:
        raise node.fail("nonpad_kv_seqlen")
    three_d = q.dim() == 3
    if three_d:
        q = _split_heads(q, node.attr("q_num_heads"))
        k, v = _split_heads(k, node.attr("kv_num_heads")), _split_heads(v, node.attr("kv_num_heads"))
    past = 0 if past_k is None else past_k.shape[2]
    if past_k is not None:
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
    present_k, present_v = k, v
    if q.shape[1] != k.shape[1]:  # grouped-query attention: each KV head serves consecutive Q heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], 1)
    scale = node.attr("scale")
    root = math.sqrt(1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    raw = scores = (q * root) @ (k * root).transpose(-1, -2)
    softcap = node.attr("softcap", 0.0)
    if softcap > 0:  # before the mask, so masked scores stay -inf
        scores = softcap * torch.tanh(scores / softcap)
    capped = scores
    bias = _attention_bias(node, mask, q, k.shape[2], past)
    dead = None
    if bias is not None:
        scores = scores + bias
        dead = torch.isneginf(bias.amax(-1, keepdim=True))  # rows with nothing to attend give 0
        scores = torch.where(dead, 0.0, scores)
    precision = node.attr("softmax_precision")
    probs = F.softmax(scores if precision is None else scores.to(TORCH_TYPES[precision]), -1)
    if dead is not None:
        probs = torch.where(dead, 0.0, probs)
    y = probs.to(q.dtype) @ v
    if three_d:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    masked = capped if bias is None else capped + bias
    qk = {0: raw, 1: masked, 2: capped, 3: probs}[node.attr("qk_matmul_output_mode", 0)]
    return y, present_k, present_v, qk.to(q.dtype)
