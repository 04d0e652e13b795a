"""One-pass evaluation (OPE) of a single-object tracker: the OTB benchmark's success and precision.

Shape shorthand: T frames.

Boxes are ``x, y, w, h`` per frame (``[T, 4]``, pixels). Definitions, as the OTB toolkit
(Wu, Lim, Yang, CVPR 2013: ``calcRectInt.m``, ``calcSeqErrRobust.m``, ``perfPlot.m``) and
got10k's ``ExperimentOTB`` compute them:

* IoU of two boxes: intersection / union (at most 1 after float rounding), the intersection
  ``max(0, min(x1 + w1, x2 + w2) - max(x1, x2))`` times the same in y. (The toolkit's inclusive
  ``x + w - 1`` right edge and its ``+ 1`` width cancel: the same number.)
* centre error: the distance of the centres ``(x + (w - 1) / 2, y + (h - 1) / 2)``. The ``- 1``
  cancels in the difference of two centres; it is kept to round as the toolkit and got10k do.
* **success curve**: the share of frames with IoU ``>`` t for t in 0, 0.05, .., 1 (21 thresholds;
  strictly greater, so IoU 0 is never a success and the last point counts IoU > 1: 0).
  **success_auc** = its mean (the toolkit's "AUC" of the success plot).
* **precision curve**: the share of frames with centre error ``<=`` t px for t in 0, 1, .., 50;
  **precision_20** = its value at 20 px.

Frames without a usable ground truth (non-finite, or ``w <= 0`` / ``h <= 0``), ``convention``:

* ``"exclude"`` (default): dropped from numerator and denominator. A prediction that is
  non-finite or has ``w <= 0`` / ``h <= 0`` is a failure (IoU 0, centre error inf).
* ``"otb"``: the OTB toolkit exactly: the first frame's prediction is the ground truth (the
  tracker's initialisation); a later prediction that is NaN / empty is replaced by the previous
  frame's; a frame whose ground truth has any value ``<= 0`` (x or y too: the toolkit's 1-based
  boxes) or NaN gets IoU -1 and centre error -1 and stays in the denominator: it fails every
  success threshold and passes every precision threshold, as the toolkit scores it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["OPE_CONVENTIONS", "PRECISION_THRESHOLDS", "SUCCESS_THRESHOLDS", "center_error", "ope", "rect_iou"]

SUCCESS_THRESHOLDS = np.linspace(0, 1, 21)  # (21,) IoU thresholds 0, 0.05, .., 1
PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)  # (51,) centre error thresholds in px
OPE_CONVENTIONS = ("exclude", "otb")


def rect_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes a, b float[T, 4] (x, y, w, h) -> float64[T] (the toolkit's formula, no eps).

    At most 1: identical float boxes can round to 1 + 2e-16 (``(x + w) - x != w``), which
    would pass the threshold ``> 1``; got10k clips the same way."""
    w = np.maximum(0.0, np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    h = np.maximum(0.0, np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    inter = w * h
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.minimum(inter / union, 1.0)


def center_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in px of the centres ``x + (w - 1) / 2, y + (h - 1) / 2`` of paired boxes -> float64[T]."""
    ca = a[:, :2] + (a[:, 2:] - 1) / 2  # (T, 2)
    cb = b[:, :2] + (b[:, 2:] - 1) / 2
    return np.sqrt(np.sum((ca - cb) ** 2, axis=1))


def _boxes(boxes: object, name: str) -> np.ndarray:
    try:
        array = np.array(boxes, dtype=np.float64)  # a copy: the caller's array is never changed
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name}: expected numbers [T, 4] (x, y, w, h), {' '.join(str(err).split())}"
        ) from None
    if array.ndim != 2 or array.shape[1] != 4 or array.shape[0] == 0:
        raise ValueError(f"{name}: expected boxes [T, 4] (x, y, w, h) with T >= 1, got shape {array.shape}")
    return array


def ope(pred_boxes: object, gt_boxes: object, convention: str = "exclude") -> dict[str, Any]:
    """OTB one-pass evaluation of one sequence.

    pred_boxes, gt_boxes: ``[T, 4]`` x, y, w, h per frame (numpy, tensor or nested lists).
    convention: ``"exclude"`` or ``"otb"`` (frames without ground truth; see the module docstring).

    Returns ``success_curve`` float64[21], ``success_auc``, ``precision_curve`` float64[51],
    ``precision_20``, ``iou`` and ``center_error`` float64[T] (NaN for an excluded frame, -1 for
    the toolkit's invalid frames) and ``num_frames`` (frames scored).
    """
    if convention not in OPE_CONVENTIONS:
        raise ValueError(f"convention must be one of {OPE_CONVENTIONS}, got {convention!r}")
    pred, gt = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_boxes {pred.shape} and gt_boxes {gt.shape}: one box per frame in both")
    T = len(gt)
    if convention == "otb":
        pred[0] = gt[0]
        for t in range(1, T):  # a lost tracker keeps its last box (sequential: runs of losses)
            r = pred[t]
            lost = np.isnan(r) | (r[2] <= 0) | (r[3] <= 0)  # (4,) elementwise, as the toolkit's `if`
            if np.all(lost & ~np.isnan(gt[t])):
                pred[t] = pred[t - 1]
        valid = np.all(gt > 0, axis=1)  # (T,) NaN > 0 is False
        iou = np.full(T, -1.0)
        err = np.full(T, -1.0)
        iou[valid] = rect_iou(pred[valid], gt[valid])
        err[valid] = center_error(pred[valid], gt[valid])
        scored = np.ones(T, dtype=bool)
    else:
        scored = np.all(np.isfinite(gt), axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)  # (T,)
        usable = np.all(np.isfinite(pred), axis=1) & (pred[:, 2] > 0) & (pred[:, 3] > 0)
        iou = np.where(usable, rect_iou(pred, gt), 0.0)
        err = np.where(usable, center_error(pred, gt), np.inf)
        iou[~scored] = np.nan
        err[~scored] = np.nan
    n = int(scored.sum())
    # (n, 1) vs (1, 21) / (1, 51) -> shares of scored frames
    with np.errstate(invalid="ignore"):
        success = (iou[scored, None] > SUCCESS_THRESHOLDS[None, :]).sum(0) / max(n, 1)
        precision = (err[scored, None] <= PRECISION_THRESHOLDS[None, :]).sum(0) / max(n, 1)
    if n == 0:
        success, precision = np.full(21, np.nan), np.full(51, np.nan)
    return {
        "success_curve": success,
        "success_auc": float(np.mean(success)),
        "precision_curve": precision,
        "precision_20": float(precision[20]),
        "iou": iou,
        "center_error": err,
        "num_frames": n,
    }
