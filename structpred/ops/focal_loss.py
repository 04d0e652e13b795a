"""Sigmoid focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"), drop-in for
``torchvision.ops.sigmoid_focal_loss``; and the loss reduction the ops' losses share.

Shape shorthand:
    ``*``: any shape, the same for ``inputs`` and ``targets`` (e.g. ``(B, H*W*A, K)`` logits).

Convention: ``inputs`` are logits x, ``targets`` t in [0, 1] (hard 0/1 labels, or soft ones);
``p = sigmoid(x)``, ``p_t = p t + (1 - p)(1 - t)``, ``CE = -t log p - (1 - t) log(1 - p)``
computed from the logits (``t softplus(-x) + (1 - t) softplus(x)``, stable for any x),
``1 - p_t = t sigmoid(-x) + (1 - t) sigmoid(x)`` (no cancellation for easy examples) and
``FL = alpha_t (1 - p_t)^gamma CE`` with ``alpha_t = alpha t + (1 - alpha)(1 - t)``;
``alpha = -1`` turns the weighting off (torchvision's value; any other alpha outside [0, 1]
raises, as torchvision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    """Raise a one-line ``ValueError`` unless ``reduction`` is ``'none'``, ``'mean'`` or ``'sum'``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_loss(loss: Tensor, reduction: str, *, empty_mean_zero: bool = False) -> Tensor:
    """Apply ``reduction`` to an elementwise ``loss``.

    ``empty_mean_zero``: the mean of an empty loss is ``0 * loss.sum()`` (a 0 that keeps the
    graph, torchvision's box losses) instead of NaN (``Tensor.mean``, its focal loss).
    """
    check_reduction(reduction)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        if empty_mean_zero and loss.numel() == 0:
            return 0.0 * loss.sum()
        return loss.mean()
    return loss


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Focal loss of logits ``inputs (Tensor[*])`` against ``targets (Tensor[*])`` in [0, 1].

    Args:
        inputs: float logits of any shape.
        targets: the same shape; float, int or bool (cast to ``inputs``' dtype).
        alpha: weight of the positives in [0, 1] (negatives get ``1 - alpha``); -1: no weighting.
        gamma: focusing exponent >= 0 (0 gives the alpha-weighted cross-entropy).
        reduction: ``'none'`` (Tensor[*]), ``'mean'`` or ``'sum'`` (scalars; the mean of an empty
            tensor is NaN, as torchvision).
    Returns:
        The loss in ``inputs``' dtype. float16/bfloat16 are computed in float32 and cast back.
    """
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        what = str(inputs.dtype) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"sigmoid_focal_loss: inputs must be a floating point Tensor, got {what}")
    if not isinstance(targets, Tensor) or targets.shape != inputs.shape:
        got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(
            f"sigmoid_focal_loss: targets must be a Tensor of inputs' shape {tuple(inputs.shape)}, got {got}"
        )
    if not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"sigmoid_focal_loss: alpha must be in [0, 1] or -1 (no weighting), got {alpha}")
    if not gamma >= 0:
        raise ValueError(f"sigmoid_focal_loss: gamma must be >= 0, got {gamma}")
    check_reduction(reduction)
    dtype = inputs.dtype
    x = inputs if dtype in (torch.float32, torch.float64) else inputs.float()
    t = targets.to(x.dtype)
    # -log(p) = softplus(-x) and -log(1 - p) = softplus(x): finite for any logit, accurate where
    # the loss is small (no cancellation of x against log(1 + e^x)), gradient exactly p - t.
    ce = t * F.softplus(-x) + (1 - t) * F.softplus(x)
    # 1 - p_t = t (1 - p) + (1 - t) p, each factor a sigmoid: no 1 - (1 - p) cancellation for an
    # easy negative (p ~ 1e-6 keeps its float32 precision).
    hard = t * torch.sigmoid(-x) + (1 - t) * torch.sigmoid(x)
    loss = ce * hard**gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return reduce_loss(loss, reduction).to(dtype)
