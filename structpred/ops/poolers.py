"""Multi-scale RoIAlign over a feature pyramid (Lin et al., FPN, 2017).

Shape shorthand:
    L: pyramid levels, N: images, C: channels, K: RoIs over all images, PH, PW: bins.

An RoI of size ``w x h`` (image pixels) is pooled from level
``k = floor(k0 + log2(sqrt(w h) / 224))`` (FPN eq. 1, ``k0 = 4``), clamped to the levels
present. Level ``k``'s map has stride ``2^k``. For RoIAlign all levels are flattened into one
channels-last table so every RoI, whatever its level, is pooled in a single pass; RoIPool
(the quantised ablation) pools level by level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_boxes, pair
from .boxes import box_area
from .roi_align import roi_align_table
from .roi_pool import roi_pool


def assign_fpn_levels(
    boxes: Tensor,
    k_min: int,
    k_max: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN eq. 1: pyramid level of each box, as an index from ``k_min``.

    Args:
        boxes (Tensor[K, 4]): xyxy boxes, image pixels.
        k_min, k_max: the lowest and highest level available (e.g. 2 and 5 for P2-P5).
    Returns:
        int64[K] in ``[0, k_max - k_min]``.
    """
    check_boxes(boxes, "boxes", rank2=True)
    s = torch.sqrt(box_area(boxes))
    levels = torch.floor(
        canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype)
    )
    return (levels.clamp(min=k_min, max=k_max).to(torch.int64) - k_min).to(torch.int64)


def infer_scale(feature_size: Sequence[int], image_size: Sequence[int]) -> float:
    """The power of two closest to ``feature_height / image_height`` (e.g. 1/16)."""
    approx = float(feature_size[0]) / float(image_size[0])
    return 2.0 ** round(math.log2(approx))


def _pyramid_rois(
    features: Sequence[Tensor],
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    canonical_scale: float,
    canonical_level: int,
) -> tuple[Tensor, Tensor, Tensor, list[float]]:
    """Validated RoIs of a pyramid: ``xyxy [K, 4]``, image ``int64[K]``, level ``int64[K]``
    (an index into ``features``) and every level's image-to-map scale."""
    if len(features) == 0:
        raise ValueError("features must hold at least one feature map")
    if len(image_sizes) == 0:
        raise ValueError("image_sizes must not be empty")
    first = features[0]
    num_images, channels = first.shape[0], first.shape[1]
    for i, f in enumerate(features):
        if f.dim() != 4 or f.shape[0] != num_images or f.shape[1] != channels:
            raise ValueError(
                f"features[{i}] must be [N={num_images}, C={channels}, H, W], got {tuple(f.shape)}"
            )
    if len(boxes) != num_images:
        raise ValueError(f"boxes must hold one Tensor[K, 4] per image: {len(boxes)} for {num_images}")
    for i, b in enumerate(boxes):
        check_boxes(b, f"boxes[{i}]", rank2=True, ordered=True)
    max_size = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
    scales = [infer_scale(f.shape[-2:], max_size) for f in features]
    xyxy = torch.cat([b.to(first.dtype) for b in boxes])  # (K, 4)
    if len(boxes) == 1:  # one image (an exported detector's case: no repeat over a symbolic count)
        batch_idx = torch.zeros(xyxy.shape[0], dtype=torch.int64, device=first.device)
    else:
        counts = torch.tensor([b.shape[0] for b in boxes], dtype=torch.int64, device=first.device)
        batch_idx = torch.repeat_interleave(torch.arange(num_images, device=first.device), counts)
    if len(features) == 1:
        level = torch.zeros_like(batch_idx)
    else:
        k_min = int(-math.log2(scales[0]))
        k_max = int(-math.log2(scales[-1]))
        level = assign_fpn_levels(xyxy, k_min, k_max, canonical_scale, canonical_level)
    return xyxy, batch_idx, level, scales


def multiscale_roi_align(
    features: Sequence[Tensor],
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    output_size: int | Sequence[int],
    sampling_ratio: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> Tensor:
    """RoIAlign each box from the pyramid level chosen by its size.

    Args:
        features: L maps ``[N, C, Hl, Wl]``, finest first, strides powers of two.
        boxes: per image, xyxy ``[K_i, 4]`` in image pixels.
        image_sizes: (H, W) of each image before padding; their maximum sets the scales.
        output_size, sampling_ratio: as in :func:`structpred.ops.roi_align` (``aligned=False``,
            as torchvision's ``MultiScaleRoIAlign``).
    Returns:
        Tensor[sum K_i, C, PH, PW], RoIs in image order.
    """
    xyxy, batch_idx, level, scales = _pyramid_rois(
        features, boxes, image_sizes, canonical_scale, canonical_level
    )
    out_hw = pair(output_size, "output_size")
    first = features[0]
    num_images, channels = first.shape[0], first.shape[1]
    # Every level (N, C, Hl, Wl) -> (N, Hl, Wl, C) rows, stacked: one table for all RoIs.
    # Written straight into one buffer: a single layout copy per level.
    rows_per_level = [num_images * f.shape[2] * f.shape[3] for f in features]
    table = first.new_empty(sum(rows_per_level), channels)
    start = 0
    for f, rows in zip(features, rows_per_level, strict=True):
        table[start : start + rows].view(f.shape[0], f.shape[2], f.shape[3], channels).copy_(
            f.permute(0, 2, 3, 1)
        )
        start += rows
    sizes = torch.tensor([[f.shape[2], f.shape[3]] for f in features], device=first.device)
    level_rows = torch.tensor(rows_per_level, device=first.device)  # (L,)
    level_start = torch.cumsum(level_rows, 0) - level_rows
    height, width = sizes[level, 0], sizes[level, 1]  # (K,)
    row_base = level_start[level] + batch_idx * height * width
    scale = torch.tensor(scales, dtype=first.dtype, device=first.device)[level]
    return roi_align_table(
        table, xyxy, row_base, height, width, scale, out_hw, sampling_ratio, aligned=False
    )


def multiscale_roi_pool(
    features: Sequence[Tensor],
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    output_size: int | Sequence[int],
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> Tensor:
    """RoIPool (quantised max pooling, :func:`structpred.ops.roi_pool`) from each box's level.

    The quantised counterpart of :func:`multiscale_roi_align` (Mask R-CNN's RoIPool ablation):
    the same arguments (no sampling ratio) and level assignment.

    Returns:
        Tensor[sum K_i, C, PH, PW], RoIs in image order.
    """
    xyxy, batch_idx, level, scales = _pyramid_rois(
        features, boxes, image_sizes, canonical_scale, canonical_level
    )
    ph_bins, pw_bins = pair(output_size, "output_size")
    first = features[0]
    out = first.new_zeros(xyxy.shape[0], first.shape[1], ph_bins, pw_bins)  # (K, C, PH, PW)
    rois = torch.cat([batch_idx[:, None].to(xyxy.dtype), xyxy], dim=1)  # (K, 5)
    for k, (f, scale) in enumerate(zip(features, scales, strict=True)):
        ids = torch.where(level == k)[0]
        if ids.numel():
            out = out.index_copy(0, ids, roi_pool(f, rois[ids], (ph_bins, pw_bins), scale))
    return out
