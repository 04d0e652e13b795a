"""Sigmoid focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"), drop-in for
``torchvision.ops.sigmoid_focal_loss``; and the loss reduction the ops' losses share.

Shape shorthand:
    ``*``: any shape, the same for ``inputs`` and ``targets`` (e.g. ``(B, H*W*A, K)`` logits).

Convention: ``inputs`` are logits x, ``targets`` t in [0, 1] (hard 0/1 labels, or soft ones);
``p = sigmoid(x)``, ``p_t = p t + (1 - p)(1 - t)``, ``CE = -t log p - (1 - t) log(1 - p)``
computed from the logits (``t softplus(-x) + (1 - t) softplus(x)``, finite for any x),
``1 - p_t = t sigmoid(-x) + (1 - t) sigmoid(x)`` (no cancellation for easy examples) and
``FL = alpha_t (1 - p_t)^gamma CE`` with ``alpha_t = alpha t + (1 - alpha)(1 - t)``;
``alpha = -1`` turns the weighting off (torchvision's value; any other alpha outside [0, 1]
raises, as torchvision).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

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
        targets: the same shape; float, int or bool.
        alpha: weight of the positives in [0, 1] (negatives get ``1 - alpha``); -1: no weighting.
        gamma: focusing exponent >= 0 (0 gives the alpha-weighted cross-entropy).
        reduction: ``'none'`` (Tensor[*]), ``'mean'`` or ``'sum'`` (scalars; the mean of an empty
            tensor is NaN, as torchvision).
    Returns:
        The loss in torchvision's dtype (``inputs``' and float ``targets``' promoted; float32 at
        least under autocast), computed in float32 at least (float16/bfloat16 cast back).
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
    # The loss's dtype is torchvision's: inputs and float targets promoted, float32 at least under
    # autocast (its cross-entropy runs in float32 there). The work is in float32 at least.
    dtype = torch.promote_types(inputs.dtype, targets.dtype) if targets.is_floating_point() else inputs.dtype
    if torch.is_autocast_enabled(inputs.device.type):
        dtype = torch.promote_types(dtype, torch.float32)
    work = torch.promote_types(dtype, torch.float32)
    loss = _SigmoidFocalLoss.apply(inputs.to(work), targets.to(work), float(alpha), float(gamma))
    return reduce_loss(loss, reduction).to(dtype)


class _SigmoidFocalLoss(torch.autograd.Function):
    """Elementwise focal loss with its gradient written out (see the module's Convention).

    Forward, from ``p = sigmoid(x)`` and ``q = sigmoid(-x)`` (each exact, neither ``1 - other``):
    ``1 - p_t = lerp(p, q, t)`` (no ``1 - (1 - p)`` cancellation for easy examples) and
    ``CE = relu(x) - t x - log1p(-min(p, q))`` (``log(1 + e^-|x|) = -log(1 - sigmoid(-|x|))``:
    finite for any logit, relative precision kept where CE is tiny). One log1p, no softplus or
    ``where`` (each several times slower than the other kernels on CPU).
    Backward, with ``h = 1 - p_t``, ``a = alpha_t``:
    ``dFL/dx = a h^g (g (1 - 2t) p q CE / h + p - t)`` and
    ``dFL/dt = h^g ((2 alpha - 1) CE + a (g (q - p) CE / h - x))``; exact at x = 0, where
    autograd through ``relu`` / ``max`` would take a one-sided or averaged derivative.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:
        p, q = torch.sigmoid(x), torch.sigmoid(-x)
        hard = torch.lerp(p, q, t)  # 1 - p_t
        ce = x.clamp(min=0).sub_(t * x).sub_(torch.minimum(p, q).neg_().log1p_())
        focal = hard.pow(gamma) if gamma != 0 else None  # (1 - p_t)^gamma
        loss = ce * focal if focal is not None else ce.clone()
        if alpha >= 0:
            loss.mul_(t * (2 * alpha - 1) + (1 - alpha))  # alpha_t = alpha t + (1 - alpha)(1 - t)
        # Saved: CE (its log1p is the costly kernel) and (1 - p_t)^gamma (pow is costly for a
        # non-integer gamma); the sigmoids are recomputed in backward (two cheap passes), so a
        # (B, anchors, classes) loss keeps two extra tensors alive, not five.
        ctx.save_for_backward(x, t, ce, focal)
        ctx.alpha, ctx.gamma = alpha, gamma
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, t, ce, focal = ctx.saved_tensors
        p, q = torch.sigmoid(x), torch.sigmoid(-x)
        alpha, gamma = ctx.alpha, ctx.gamma
        weight = t * (2 * alpha - 1) + (1 - alpha) if alpha >= 0 else None  # alpha_t
        ce_over_h = None
        if focal is not None:
            # CE / h: finite where h underflows to 0 (then CE is 0 too and the term vanishes).
            hard = torch.lerp(p, q, t)
            ce_over_h = ce / hard.clamp(min=torch.finfo(hard.dtype).tiny)
        grad_x = grad_t = None
        if ctx.needs_input_grad[0]:
            dx = p - t
            if ce_over_h is not None:
                dx = dx.addcmul_((1 - 2 * t) * p * q, ce_over_h, value=gamma)
            dx = dx.mul_(focal) if focal is not None else dx
            dx.mul_(grad)
            grad_x = dx.mul_(weight) if weight is not None else dx
        if ctx.needs_input_grad[1]:
            dt = -x if ce_over_h is None else torch.addcmul(-x, q - p, ce_over_h, value=gamma)
            if weight is not None:
                dt = dt.mul_(weight).add_(ce, alpha=2 * alpha - 1)
            dt = dt.mul_(focal) if focal is not None else dt
            grad_t = dt.mul_(grad)
        return grad_x, grad_t, None, None
