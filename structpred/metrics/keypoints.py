"""Keypoint AP by object keypoint similarity (OKS), the protocol of ``COCOeval(iouType="keypoints")``.

``MeanAveragePrecision(iou_type="keypoints", keypoint_sigmas=...)`` evaluates keypoints: the
matching, accumulation and summary are the box protocol's (:mod:`.detection_match`,
:mod:`.detection_accumulate`) with OKS in place of IoU, COCO's keypoint area ranges (all,
medium, large), a limit of 20 detections per image and class, and gts without a labelled
keypoint ignored. This module holds what differs: the OKS matrix, the detections' areas and
the 10-number summary.

Shape shorthand:
    D: detections of one image, G: its gts, K: keypoints per object, T: OKS thresholds,
    R: recall thresholds, C: classes, A: area ranges, M: max-detection limits.

Convention (pycocotools ``computeOks``, float64, same arithmetic order):
    ``OKS = mean_k exp(-d_k^2 / (2 * (area + eps) * (2 sigma_k)^2))`` over the gt's labelled
    keypoints (visibility > 0). A gt with no labelled keypoint compares the detection's
    keypoints to the gt box doubled on every side (``[x - w, x + 2w] x [y - h, y + 2h]``):
    ``d_k`` is the distance to that region (0 inside), averaged over all K. Such gts are
    *ignored* (as crowd regions are): matching one is neither a true nor a false positive.
    ``area`` is the gt's ``area`` (default: its box area). A detection's own area (used only
    to leave unmatched detections outside an area range out) is its box area when the
    predictions have ``boxes`` (pycocotools' ``loadRes`` reads ``bbox`` first when a result
    has one), else the extent of its keypoints, as ``loadRes`` computes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .detection_accumulate import mean_valid

# COCO's 17 person keypoints' sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips,
# knees, ankles), pycocotools' default ``kpt_oks_sigmas``.
# Tenths, divided by 10 below as pycocotools writes them (its exact float64 values).
COCO_PERSON_SIGMAS: tuple[float, ...] = (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72)
COCO_PERSON_SIGMAS += (0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
KEYPOINT_AREA_NAMES = ("all", "medium", "large")
# COCO's keypoint area ranges (pycocotools ``setKpParams``), both ends inclusive.
KEYPOINT_AREA_RANGES = ((0.0, 1e5**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
KEYPOINT_MAX_DETECTIONS = (20,)


def coco_person_sigmas() -> Tensor:
    """pycocotools' default ``kpt_oks_sigmas`` ``[17]`` float64, its exact values."""
    return torch.from_numpy(np.array(COCO_PERSON_SIGMAS) / 10.0)


def check_sigmas(sigmas: Sequence[float] | Tensor | None) -> Tensor:
    """Per-keypoint OKS sigmas as float64 ``[K]`` (COCO's person sigmas when None); ``ValueError``."""
    if sigmas is None:
        return coco_person_sigmas()
    t = torch.as_tensor(sigmas.tolist() if isinstance(sigmas, Tensor) else list(sigmas), dtype=torch.float64)
    if t.dim() != 1 or t.numel() == 0 or not bool((torch.isfinite(t) & (t > 0)).all()):
        shown = sigmas.tolist() if isinstance(sigmas, Tensor) else list(sigmas)
        raise ValueError(f"keypoint_sigmas must be a non-empty sequence of finite values > 0, got {shown!r}")
    return t


def oks_matrix(
    det_xy: np.ndarray, gt_kpts: np.ndarray, gt_xywh: np.ndarray, gt_area: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """OKS of every detection against every gt of one image, as pycocotools' ``computeOks``.

    Args:
        det_xy (float64 [D, K, 2]): detected keypoints (x, y) in pixels.
        gt_kpts (float64 [G, K, 3]): gt keypoints (x, y, visibility); visibility > 0 is labelled.
        gt_xywh (float64 [G, 4]): gt boxes (x, y, w, h), for gts with no labelled keypoint.
        gt_area (float64 [G]): gt areas (the OKS scale s^2).
        sigmas (float64 [K]).

    Returns:
        float64 [D, G] in [0, 1].
    """
    D, G = det_xy.shape[0], gt_kpts.shape[0]
    if D == 0 or G == 0:
        return np.zeros((D, G), dtype=np.float64)
    variances = (sigmas * 2) ** 2  # (K,)
    xd, yd = det_xy[:, None, :, 0], det_xy[:, None, :, 1]  # (D, 1, K)
    xg, yg, vg = gt_kpts[None, :, :, 0], gt_kpts[None, :, :, 1], gt_kpts[:, :, 2]  # (1, G, K), (G, K)
    labelled = vg > 0  # (G, K)
    k1 = labelled.sum(1)  # (G,)
    bx, by, bw, bh = (gt_xywh[None, :, i, None] for i in range(4))  # (1, G, 1) each
    x0, x1, y0, y1 = bx - bw, bx + bw * 2, by - bh, by + bh * 2
    # Outside the doubled box: distance to it (0 inside), for gts without labelled keypoints.
    out_dx = np.maximum(0.0, x0 - xd) + np.maximum(0.0, xd - x1)  # (D, G, K)
    out_dy = np.maximum(0.0, y0 - yd) + np.maximum(0.0, yd - y1)
    has = (k1 > 0)[None, :, None]  # (1, G, 1)
    dx = np.where(has, xd - xg, out_dx)
    dy = np.where(has, yd - yg, out_dy)
    e = (dx**2 + dy**2) / variances / (gt_area[None, :, None] + np.spacing(1)) / 2  # (D, G, K)
    use = np.where(has, labelled[None], True)  # (D, G, K): the labelled keypoints, or all K
    total = np.where(use, np.exp(-e), 0.0).sum(-1)  # (D, G)
    return total / np.where(k1 > 0, k1, e.shape[-1])[None, :]


def keypoint_extent_area(kpts: Tensor) -> Tensor:
    """Area of the box spanned by each detection's K keypoints (all of them), ``[D, K, >=2] -> [D]``
    float64: what ``loadRes`` gives a keypoint result without a ``bbox``."""
    xy = kpts[..., :2].to(torch.float64)
    if xy.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    span = xy.amax(1) - xy.amin(1)  # (D, 2)
    return span[:, 0] * span[:, 1]


def summarize_keypoints(precision: Tensor, recall: Tensor, iou_thresholds: Tensor) -> dict[str, float]:
    """pycocotools' 10 keypoint numbers (``_summarizeKps``) under torchmetrics-style names.

    ``map, map_50, map_75, map_medium, map_large, mar, mar_50, mar_75, mar_medium, mar_large``
    at the largest detection limit; area indices 0 all, 1 medium, 2 large. ``*_50`` / ``*_75``
    are -1 when 0.5 / 0.75 is not among ``iou_thresholds``.
    """

    def at(x: float, arr: Tensor) -> Tensor:
        hit = torch.isclose(iou_thresholds, torch.tensor(x, dtype=iou_thresholds.dtype), rtol=0, atol=1e-12)
        return arr[hit]

    p = precision[..., -1]  # (T, R, C, A)
    r = recall[..., -1]  # (T, C, A)
    return {
        "map": mean_valid(p[..., 0]),
        "map_50": mean_valid(at(0.5, p)[..., 0]),
        "map_75": mean_valid(at(0.75, p)[..., 0]),
        "map_medium": mean_valid(p[..., 1]),
        "map_large": mean_valid(p[..., 2]),
        "mar": mean_valid(r[..., 0]),
        "mar_50": mean_valid(at(0.5, r)[..., 0]),
        "mar_75": mean_valid(at(0.75, r)[..., 0]),
        "mar_medium": mean_valid(r[..., 1]),
        "mar_large": mean_valid(r[..., 2]),
    }


# The order of pycocotools' ``COCOeval.stats`` for keypoints.
KEYPOINT_STAT_NAMES: tuple[str, ...] = ("map", "map_50", "map_75", "map_medium", "map_large")
KEYPOINT_STAT_NAMES += ("mar", "mar_50", "mar_75", "mar_medium", "mar_large")
