"""Multi-scale end-point-error loss of coarse-to-fine flow networks (FlowNet, PWC-Net).

Shape shorthand: B pairs, H x W full-resolution pixels (a multiple of every level's stride),
s = 2^l a level's stride, h = H / s, w = W / s.

Convention: a level's prediction is the flow at ``h x w`` *in full-resolution pixels times
``scale``* (PWC-Net's 0.05: values are not divided by the stride; the network multiplies by
``stride / scale`` wherever it needs feature pixels). The ground truth at a level is the mean
of the valid full-resolution vectors in each ``s x s`` cell (times ``scale``); a cell counts
when at least half its pixels are valid, so a cell straddling an occlusion or the padding
border is dropped rather than blurred.

The paper (Sun et al. 2018, eq. 4) *sums* ``||pred - gt||_2`` over a level's pixels with the
weights ``alpha = 0.32, 0.08, 0.02, 0.01, 0.005`` (levels 6 .. 2) on the 0.05-scaled flow. A sum
makes the loss's scale follow the image size, and a level of stride ``s`` has ``4x`` the cells of
the level above, so per cell the levels weigh ``1 : 1 : 1 : 2 : 4`` (6 .. 2). Here each level's
term is the *mean* EPE over its valid cells, in pixels (``pred / scale``), times
``(alpha_l / alpha_finest) * (s_finest / s_l)^2``: the paper's loss divided by its finest
level's ``alpha * scale * cell count``. Adam does not see a constant factor, so the optimum and
the steps are the paper's; the value is readable (about 2.25x the EPE when every level is
equally wrong), does not depend on the image size, and counts only valid cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: The paper's level weights, coarsest (level 6) first.
PWC_WEIGHTS = (0.32, 0.08, 0.02, 0.01, 0.005)
#: The paper's flow scale: networks predict ``0.05 * flow``.
PWC_SCALE = 0.05


def downsample_flow(flow: Tensor, valid: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Mean of the valid vectors of each ``stride x stride`` cell, and whether the cell counts.

    Args:
        flow (Tensor[B, 2, H, W]): full-resolution flow; H, W multiples of ``stride``.
        valid (Tensor[B, H, W]): bool.
        stride: cell side >= 1.

    Returns:
        flow (Tensor[B, 2, H / s, W / s]) in full-resolution pixels (not divided by s),
        valid (Tensor[B, H / s, W / s]) bool: at least half the cell's pixels were valid.
    """
    B, _, H, W = flow.shape
    if H % stride or W % stride:
        raise ValueError(f"downsample_flow: size {(H, W)} is not a multiple of the stride {stride}")
    v = valid.to(flow.dtype).unsqueeze(1)  # (B, 1, H, W)
    clean = torch.where(v > 0, flow, torch.zeros_like(flow))  # invalid pixels may hold inf / NaN
    if stride == 1:
        return clean, valid.bool()
    share = F.avg_pool2d(v, stride)  # (B, 1, h, w): fraction of valid pixels per cell
    total = F.avg_pool2d(clean * v, stride)  # (B, 2, h, w)
    mean = total / share.clamp_min(1e-6)
    return mean, share[:, 0] >= 0.5


def multiscale_epe(
    preds: Sequence[Tensor],
    flow: Tensor,
    valid: Tensor,
    strides: Sequence[int],
    weights: Sequence[float] = PWC_WEIGHTS,
    scale: float = PWC_SCALE,
) -> Tensor:
    """The weighted multi-scale EPE (module doc) of ``preds`` against the full-resolution ``flow``.

    Args:
        preds: one ``Tensor[B, 2, H / s_l, W / s_l]`` per level, coarsest first, in units of
            ``scale`` x full-resolution pixels.
        flow (Tensor[B, 2, H, W]): ground truth in pixels (non-finite values only where invalid).
        valid (Tensor[B, H, W]): bool.
        strides: ``s_l`` of each level, coarsest first.
        weights: ``alpha_l`` of each level, coarsest first (the paper's by default; the
            last ``len(preds)`` are used when there are fewer levels).
        scale: the flow scale of ``preds``.

    Returns:
        A scalar in pixels (0 with gradients when no cell is valid).
    """
    if len(preds) != len(strides) or not preds:
        raise ValueError(f"multiscale_epe: {len(preds)} predictions for {len(strides)} strides")
    if len(weights) < len(preds):
        raise ValueError(f"multiscale_epe: {len(weights)} weights for {len(preds)} levels")
    alphas = list(weights)[len(weights) - len(preds) :]
    finest = min(strides)
    alpha_finest = alphas[strides.index(finest)]
    total = preds[0].new_zeros(())
    for pred, stride, alpha in zip(preds, strides, alphas, strict=True):
        gt, ok = downsample_flow(flow, valid, stride)  # (B, 2, h, w), (B, h, w)
        if tuple(gt.shape) != tuple(pred.shape):
            raise ValueError(
                f"multiscale_epe: prediction {tuple(pred.shape)} vs ground truth {tuple(gt.shape)}"
            )
        epe = (pred / scale - gt).norm(dim=1)  # (B, h, w) px
        cells = (finest / stride) ** 2  # this level's cells per cell of the finest: the paper's sum
        mean = epe[ok].mean() if bool(ok.any()) else epe.sum() * 0.0
        total = total + alpha / alpha_finest * cells * mean
    return total
