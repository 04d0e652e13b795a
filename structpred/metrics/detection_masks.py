"""Mask IoUs and pixel counts for ``MeanAveragePrecision(iou_type="segm")``, from bit-packed masks.

pycocotools computes mask IoUs from run-length encodings, with exact integer pixel counts
divided in float64. Here the masks are packed 64 pixels to a ``uint64`` word
(``np.packbits``: nonzero means inside) and counted with popcounts: the intersection of a
detection and a gt is ``popcount(d & g)`` summed over the words, an area ``popcount(m)``.
Counts are integers, exact at any image size, so the IoUs equal pycocotools' bit for bit.

All of it is single-threaded numpy on 1/8 of the mask bytes: no float copies of the masks and
no per-image multi-threaded torch ops (on a busy machine every such op waits for the other
threads to be scheduled).

Shape shorthand: D / G detections / gts of one image, HW its pixels, W = ceil(HW / 64) words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

# uint64 words of one (D, G, W) AND at a time (8 MB), so big images and many objects stay small.
_PAIR_WORDS = 2**20

_bitwise_count: Callable[..., Any] | None = getattr(np, "bitwise_count", None)  # numpy >= 2
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of ``uint64`` words summed over the last axis, as int64."""
    if _bitwise_count is not None:
        return np.asarray(_bitwise_count(words)).sum(-1, dtype=np.int64)
    return _POPCOUNT8[words.view(np.uint8)].sum(-1, dtype=np.int64)  # numpy 1.x: byte table


def pack_masks(masks: Tensor) -> np.ndarray:
    """Binary masks bool/uint8 ``[N, H, W]`` (nonzero = inside) -> ``uint64 [N, W]`` bits.

    Row-major pixels, 8 to a byte (``np.packbits``), each mask's bytes zero-padded to whole
    words: padding bits are 0, so they add nothing to any count.
    """
    n, h, w = masks.shape
    bits = np.packbits(masks.numpy().reshape(n, h * w), axis=1)  # (N, ceil(HW / 8)) uint8
    if bits.shape[1] % 8:
        bits = np.pad(bits, ((0, 0), (0, -bits.shape[1] % 8)))
    return np.ascontiguousarray(bits).view(np.uint64)


def mask_ious(
    det_masks: Sequence[Tensor], gt_masks: Sequence[Tensor], gt_crowd: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Mask IoUs and pixel counts of many images.

    Args:
        det_masks: per image, detection masks bool/uint8 ``[D, H, W]`` (nonzero = inside).
        gt_masks: per image, gt masks ``[G, H, W]`` (the detections' H, W when both are non-empty).
        gt_crowd: per image, bool ``[G]``: a crowd gt's "IoU" is ``intersection / det area``.

    Returns:
        ious: per image float64 ``[D * G]``, the ``[D, G]`` IoU matrix row-major (0 where the
            union is empty).
        det_area, gt_area: per image float64 ``[D]`` / ``[G]`` pixel counts.

    The division is pycocotools' ``rleIou``: ``inter / union`` in float64 of exact integer
    counts, ``union = (det + gt) - inter`` or ``det`` for a crowd gt.
    """
    ious: list[Tensor] = []
    det_area: list[Tensor] = []
    gt_area: list[Tensor] = []
    for d, g, crowd in zip(det_masks, gt_masks, gt_crowd, strict=True):
        dp, gp = pack_masks(d), pack_masks(g)  # (D, W), (G, W)
        da, ga = _popcount(dp), _popcount(gp)  # (D,), (G,) int64
        D, G = da.shape[0], ga.shape[0]
        inter = np.zeros((D, G), dtype=np.int64)
        if D and G:
            step = max(1, _PAIR_WORDS // max(1, G * dp.shape[1]))  # detections per block
            for s in range(0, D, step):
                inter[s : s + step] = _popcount(dp[s : s + step, None, :] & gp[None, :, :])  # (d, G, W)
        inter_f = inter.astype(np.float64)
        det_f = da.astype(np.float64)[:, None]  # (D, 1)
        union = np.where(crowd.numpy().astype(bool)[None, :], det_f, det_f + ga.astype(np.float64) - inter_f)
        iou = np.where(union > 0, inter_f / np.maximum(union, 1.0), 0.0)  # (D, G)
        ious.append(torch.from_numpy(iou.reshape(-1)))
        det_area.append(torch.from_numpy(da.astype(np.float64)))
        gt_area.append(torch.from_numpy(ga.astype(np.float64)))
    return ious, det_area, gt_area
