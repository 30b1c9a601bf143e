"""Recovery losses: how far the pruned model's tensor is from the original's, padding positions left out.

Each loss returns a sum and a count, so that mini-batches split over several forward passes average
exactly. `mse` is the plain mean squared error; `normalized` divides each feature's squared error by
the original's variance of that feature (over the training samples' real positions), so that a few
large outlier features (the residual stream of a trained transformer) do not outweigh the rest;
`cosine` is 1 - the cosine of the two vectors at each position (each row of a [N, D] output).
"""
from __future__ import annotations

from .torch_graph import torch

LOSSES = ("mse", "normalized", "cosine")
FLOOR = 1e-6  # a feature's variance is floored at this share of the mean variance (a constant feature)


def feature_axis(t: torch.Tensor, masked: bool) -> int:
    """The axis that holds features: the last of a masked [N, T, ...] tensor or of a 2-D/3-D one, else 1 (NCHW)."""
    return t.dim() - 1 if masked or t.dim() <= 3 else 1


def masks(pred: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether a [N, T] mask applies to the tensor (its first two dims are the mask's)."""
    return mask is not None and pred.dim() >= 2 and tuple(pred.shape[:2]) == tuple(mask.shape)


def _keep(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The mask's real positions broadcast over a tensor whose first two dims are the mask's."""
    return (mask != 0).reshape(*mask.shape, *[1] * (like.dim() - 2)).expand_as(like)


def _shaped(weight: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """A per-feature weight shaped to broadcast along `axis` of `like`."""
    shape = [1] * like.dim()
    shape[axis] = -1
    return weight.to(like.device, like.dtype).reshape(shape)


def masked_sse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
               weight: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Sum of squared errors (each feature's times `weight`, if given) and the element count, leaving out
    positions where a [N, T] mask is 0. Only a tensor whose first two dims are the mask's is masked;
    others count whole."""
    _same(pred, target)
    error = (pred.float() - target.float()) ** 2
    masked = masks(pred, mask)
    if weight is not None:
        error = error * _shaped(weight, error, feature_axis(error, masked))
    if not masked:
        return error.sum(), error.numel()
    keep = _keep(mask, error)
    # where, not a product: a padded position may hold inf or NaN
    return torch.where(keep, error, torch.zeros((), dtype=error.dtype, device=error.device)).sum(), int(keep.sum())


def cosine_sum(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Sum of 1 - cosine between the two tensors' feature vectors at each position, and the position count
    (padding positions left out)."""
    _same(pred, target)
    masked = masks(pred, mask)
    axis = feature_axis(pred, masked)
    p, t = pred.float(), target.float()
    if masked:
        keep = _keep(mask, p)
        zero = torch.zeros((), dtype=p.dtype, device=p.device)
        p, t = torch.where(keep, p, zero), torch.where(keep, t, zero)
    gap = 1 - torch.nn.functional.cosine_similarity(p, t, dim=axis, eps=1e-8)
    if not masked:
        return gap.sum(), gap.numel()
    real = (mask != 0).reshape(*mask.shape, *[1] * (gap.dim() - 2)).expand_as(gap)
    return torch.where(real, gap, torch.zeros((), dtype=gap.dtype, device=gap.device)).sum(), int(real.sum())


def feature_moments(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[count, sum, sum of squares] of each feature of a tensor (as the model computes it) over its real
    positions, in float64: shape [3, features]."""
    masked = masks(value, mask)
    v = value.detach().double().movedim(feature_axis(value, masked), -1)
    if masked:
        v = v[(mask != 0).reshape(*mask.shape, *[1] * (v.dim() - 3)).expand(v.shape[:-1])]
    v = v.reshape(-1, v.shape[-1])
    return torch.stack([torch.full_like(v[0], len(v)), v.sum(0), (v * v).sum(0)])


def feature_weights(moments: torch.Tensor) -> torch.Tensor:
    """1 / each feature's variance from summed feature_moments, floored at FLOOR x the mean variance so
    that a constant feature cannot explode (all ones when there is no spread at all)."""
    count, total, squares = moments
    count = count.clamp(min=1)
    var = (squares / count - (total / count) ** 2).clamp(min=0)
    if not float(var.mean()) > 0:
        return torch.ones_like(var).float()
    return (1 / var.clamp(min=float(var.mean()) * FLOOR)).float()


def loss_sum(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
             weight: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """The loss `kind` (LOSSES) of one tensor as (sum, count)."""
    if kind == "cosine":
        return cosine_sum(pred, target, mask)
    return masked_sse(pred, target, mask, weight if kind == "normalized" else None)


def _same(pred: torch.Tensor, target: torch.Tensor) -> None:
    """One line when the target's shape is not what the pruned model computes."""
    if pred.shape != target.shape:
        from ..errors import OnnxPruneError
        raise OnnxPruneError(f"recovery target has shape {list(target.shape)}, the pruned model computes "
                             f"{list(pred.shape)}")
