"""Numbers behind the pictures: AP of a PR curve, per-image scores, class confusion of boxes.

Shape shorthand: N detections and G ground-truth objects of one image, K object classes
(labels ``1..K``, 0 = background), H x W pixels.

Convention: boxes are xyxy in absolute pixels. ``average_precision`` follows the metric of
:mod:`structpred.metrics.detection` (COCO's 101 recall points) by default, so the AP printed
in a PR plot's legend equals the per-class AP of the metric's table at that IoU threshold.
The per-image scores rank the images of an HTML report (best and worst); they are defined
here, once, and stated on the page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..ops import box_iou

# COCO's recall points 0:0.01:1, the exact float64 values of pycocotools (and our metric).
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1, endpoint=True)


def _as_1d(values: Any, name: str) -> np.ndarray:
    """A Tensor, array or sequence of numbers (``None`` = missing) -> float64 ``[L]``."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def average_precision(recall: Any, precision: Any, method: str = "coco") -> float:
    """Area under a precision-recall curve, from its ``[R]`` points (any order of recall).

    Precision at recall r is first replaced by the best precision at any recall >= r (the
    envelope). ``method="coco"`` (default) then averages it at the 101 recall points
    0, 0.01, ..., 1, reading each at the first curve point whose recall reaches it (0 past
    the last one) — COCOeval's AP, and the per-class AP of ``MeanAveragePrecision`` at one
    IoU threshold. ``method="all_point"`` integrates the envelope over every recall step
    (PASCAL VOC 2010+).
    """
    r = _as_1d(recall, "recall")
    p = _as_1d(precision, "precision")
    if r.shape != p.shape:
        raise ValueError(f"recall and precision differ in length: {r.size} and {p.size}")
    if method not in ("coco", "all_point"):
        raise ValueError(f"method must be 'coco' or 'all_point', got {method!r}")
    order = np.argsort(r, kind="stable")
    r, p = r[order], p[order]
    if method == "coco":
        if r.size == 0:
            return 0.0
        env = np.maximum.accumulate(p[::-1])[::-1]  # best precision at this recall or beyond
        idx = np.searchsorted(r, COCO_RECALL_POINTS, side="left")  # (101,) first point reaching each
        hit = idx < r.size
        q = np.zeros(COCO_RECALL_POINTS.size, dtype=np.float64)
        q[hit] = env[idx[hit]]
        return float(np.mean(q))
    r = np.concatenate(([0.0], r, [r.max() if r.size else 0.0]))
    p = np.concatenate(([0.0], p, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def _check_objects(boxes: Tensor, labels: Tensor, where: str) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where} boxes must be a Tensor[N, 4] (xyxy), got {getattr(boxes, 'shape', boxes)}")
    if not isinstance(labels, Tensor) or labels.shape != (boxes.shape[0],):
        raise ValueError(f"{where} labels must be a Tensor[{boxes.shape[0]}] (one per box)")


def greedy_matches(
    ious: Tensor, scores: Tensor, iou_threshold: float, allowed: Tensor | None = None
) -> Tensor:
    """Match detections to objects, best score first, each to its best free object at IoU >= t.

    Args:
        ious (Tensor[N, G]): IoU of every detection with every object.
        scores (Tensor[N]): detection confidences (ties keep the input order).
        allowed (bool Tensor[N, G]): pairs that may match (e.g. same class); default all.
    Returns:
        int64 Tensor[N]: the matched object of each detection, -1 for none.
    """
    N, G = ious.shape
    match = torch.full((N,), -1, dtype=torch.int64)
    free = torch.ones(G, dtype=torch.bool)
    ok = ious >= iou_threshold
    if allowed is not None:
        ok &= allowed
    for d in torch.argsort(-scores.double(), stable=True).tolist():
        cand = ok[d] & free
        if bool(cand.any()):
            g = int(torch.where(cand, ious[d].double(), -1.0).argmax())
            match[d] = g
            free[g] = False
    return match


def image_ap50(
    ious: Tensor, scores: Tensor, det_labels: Tensor, gt_labels: Tensor, empty_threshold: float = 0.5
) -> float:
    """One image's AP at IoU 0.5, every class pooled: the report's ranking of detection images.

    Detections are taken best score first; one is a hit when it matches a free object of
    its own class at IoU >= 0.5 (:func:`greedy_matches`). AP is :func:`average_precision`
    (COCO's 101 points) of the resulting curve against the image's G objects. An image
    without objects scores 1 when no detection reaches ``empty_threshold``, else 0.

    Args:
        ious (Tensor[N, G]): box (or mask) IoUs of detections with objects.
        scores (Tensor[N]), det_labels (Tensor[N]), gt_labels (Tensor[G]).
    """
    N, G = ious.shape
    if scores.shape != (N,) or det_labels.shape != (N,) or gt_labels.shape != (G,):
        raise ValueError(f"scores and det_labels must be [{N}], gt_labels [{G}] for ious [{N}, {G}]")
    if G == 0:
        return 0.0 if bool((scores >= empty_threshold).any()) else 1.0
    if N == 0:
        return 0.0
    same = det_labels.reshape(N, 1) == gt_labels.reshape(1, G)  # (N, G)
    match = greedy_matches(ious, scores, 0.5, same)
    order = torch.argsort(-scores.double(), stable=True)
    hit = (match[order] >= 0).double()  # (N,) in score order
    tp = torch.cumsum(hit, 0)
    recall = tp / G
    precision = tp / torch.arange(1, N + 1, dtype=torch.float64)
    return average_precision(recall, precision)


def box_image_ap50(pred: dict[str, Tensor], target: dict[str, Tensor], empty_threshold: float = 0.5) -> float:
    """:func:`image_ap50` with box IoUs: ``pred`` has boxes, scores, labels; ``target`` boxes, labels."""
    _check_objects(pred["boxes"], pred["labels"], "prediction")
    _check_objects(target["boxes"], target["labels"], "target")
    ious = box_iou(pred["boxes"].double(), target["boxes"].double())  # (N, G)
    return image_ap50(ious, pred["scores"], pred["labels"], target["labels"], empty_threshold)


def mask_iou_matrix(pred_masks: Tensor, gt_masks: Tensor) -> Tensor:
    """IoU of binary masks ``[N, H, W]`` x ``[G, H, W]`` -> float64 ``[N, G]`` (0 where both empty)."""
    if pred_masks.dim() != 3 or gt_masks.dim() != 3 or pred_masks.shape[1:] != gt_masks.shape[1:]:
        raise ValueError(
            f"masks must be [N, H, W] and [G, H, W] of one size, got {tuple(pred_masks.shape)} "
            f"and {tuple(gt_masks.shape)}"
        )
    a = (pred_masks != 0).reshape(pred_masks.shape[0], -1).double()  # (N, H*W)
    b = (gt_masks != 0).reshape(gt_masks.shape[0], -1).double()  # (G, H*W)
    inter = a @ b.t()  # (N, G)
    union = a.sum(1, keepdim=True) + b.sum(1).reshape(1, -1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))


def image_miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> float:
    """One image's mIoU: mean IoU over classes present in its target or prediction (ignored
    pixels left out); NaN when every pixel is ignored. The report's ranking of label maps.

    Args:
        pred (int Tensor[H, W]), target (int Tensor[H, W]): labels in ``0..K-1``.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and target must be [H, W] of one size, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    if t.numel() == 0:
        return float("nan")
    K = num_classes
    if int(t.min()) < 0 or int(t.max()) >= K or int(p.min()) < 0 or int(p.max()) >= K:
        raise ValueError(f"labels outside 0..{K - 1} (ignore_index={ignore_index})")
    c = torch.bincount(t * K + p, minlength=K * K).reshape(K, K).double()  # (K*K,) -> (K, K)
    tp = torch.diagonal(c)
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean())


def detection_confusion(
    pred: dict[str, Tensor],
    target: dict[str, Tensor],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> Tensor:
    """Class confusion of one image's boxes: ``int64[K + 1, K + 1]``, rows true, columns predicted.

    Detections with ``score >= score_threshold`` are matched to objects of any class, best
    score first, each to its best free object at IoU >= ``iou_threshold``. A matched pair
    counts at ``[true label, predicted label]``; a detection that matches nothing at
    ``[0, predicted]`` (background: a false alarm); an object nothing matched at
    ``[true, 0]`` (missed). ``[0, 0]`` stays 0.
    """
    _check_objects(pred["boxes"], pred["labels"], "prediction")
    _check_objects(target["boxes"], target["labels"], "target")
    keep = pred["scores"] >= score_threshold
    boxes, labels, scores = pred["boxes"][keep], pred["labels"][keep].long(), pred["scores"][keep]
    gt_labels = target["labels"].long()
    K = num_classes
    for name, lab in (("prediction", labels), ("target", gt_labels)):
        if lab.numel() and (int(lab.min()) < 1 or int(lab.max()) > K):
            raise ValueError(f"{name} labels must be in 1..{K}, got {sorted(set(lab.tolist()))}")
    out = torch.zeros(K + 1, K + 1, dtype=torch.int64)
    ious = box_iou(boxes.double(), target["boxes"].double())  # (N, G)
    match = greedy_matches(ious, scores, iou_threshold)
    seen = torch.zeros(gt_labels.shape[0], dtype=torch.bool)
    for d, g in enumerate(match.tolist()):
        if g >= 0:
            out[gt_labels[g], labels[d]] += 1
            seen[g] = True
        else:
            out[0, labels[d]] += 1
    for g in torch.nonzero(~seen).flatten().tolist():
        out[gt_labels[g], 0] += 1
    return out
