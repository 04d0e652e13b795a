"""COCO accumulation and summary (``COCOeval.accumulate`` / ``summarize``) on matched detections.

Shape shorthand:
    D: detections, K: classes, A: area ranges, T: IoU thresholds, R: recall thresholds,
    M: max-detection limits.

Per class, area range and limit, detections of every image are pooled and sorted by score
(stable: equal scores keep image order, then rank order), true and false positives are
summed cumulatively, precision is made non-increasing from the right and read at each
recall threshold (the first point whose recall reaches it; 0 beyond the last one). Entries
of classes with no regular gt in an area range stay -1, like pycocotools'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# pycocotools adds np.spacing(1) to every precision denominator.
_EPS = float(np.spacing(1))


def coco_iou_thresholds() -> Tensor:
    """COCO's 0.50:0.05:0.95, with pycocotools' exact float64 values (np.linspace)."""
    return torch.from_numpy(np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True))


def coco_rec_thresholds() -> Tensor:
    """COCO's 101 recall points 0:0.01:1, with pycocotools' exact float64 values."""
    return torch.from_numpy(np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1, endpoint=True))


def accumulate(
    det_class: np.ndarray,
    det_rank: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    num_pos: np.ndarray,
    max_dets: Sequence[int],
    rec_thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision at the recall thresholds and final recall, COCOeval's ``eval`` arrays.

    Args:
        det_class (int64 [D]): class index of each detection; the detections are in
            evaluation order (class ascending, score descending, image, rank).
        det_rank (int64 [D]): rank of each detection within its (image, class).
        tp, fp (bool [A, T, D]): true / false positive per area range and threshold
            (a detection that is neither is ignored).
        num_pos (int64 [K, A]): regular (not ignored) gts per class and area range.
        max_dets: limits on detections per image and class, ascending.
        rec_thresholds (float64 [R]).

    Returns:
        precision (float64 [T, R, K, A, M]), recall (float64 [T, K, A, M]); -1 for a class
        without regular gts in that area range.
    """
    A, T, D = tp.shape
    K = num_pos.shape[0]
    M = len(max_dets)
    R = rec_thresholds.size
    precision = np.full((T, R, K, A, M), -1.0, dtype=np.float64)
    recall = np.full((T, K, A, M), -1.0, dtype=np.float64)
    bounds = np.searchsorted(det_class, np.arange(K + 1)).tolist()
    limits = np.array(list(max_dets), dtype=np.int64)
    rec = rec_thresholds.astype(np.float64)
    for k in range(K):
        has = num_pos[k] > 0  # (A,)
        if not has.any():
            continue
        s, e = bounds[k], bounds[k + 1]
        n = e - s
        if n == 0:  # gts but no detections: precision and recall 0
            precision[:, :, k] = np.where(has[None, None, :, None], 0.0, -1.0)
            recall[:, k] = np.where(has[None, :, None], 0.0, -1.0)
            continue
        # A detection beyond a limit is left out; keeping it as "neither tp nor fp" only repeats
        # the previous point of the curve, which changes neither precision nor recall.
        within = det_rank[None, s:e] < limits[:, None]  # (M, n)
        tp_k = tp[:, None, :, s:e] & within[None, :, None, :]  # (A, M, T, n)
        fp_k = fp[:, None, :, s:e] & within[None, :, None, :]
        # Exact integer counts (int32: n < 2**31), as float64 like pycocotools' cumsum.
        tp_sum = np.cumsum(tp_k, axis=-1, dtype=np.int32).astype(np.float64)
        fp_sum = np.cumsum(fp_k, axis=-1, dtype=np.int32).astype(np.float64)
        npos = np.maximum(num_pos[k], 1).astype(np.float64)[:, None, None, None]  # (A, 1, 1, 1)
        rc = tp_sum / npos
        pr = tp_sum / (fp_sum + tp_sum + _EPS)
        pr = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]  # non-increasing from the right
        rows_rc, rows_pr = rc.reshape(-1, n), pr.reshape(-1, n)
        q = np.zeros((rows_rc.shape[0], R), dtype=np.float64)  # 0 past the last recall reached
        for row, (rc_row, pr_row) in enumerate(zip(rows_rc, rows_pr, strict=True)):
            idx = np.searchsorted(rc_row, rec, side="left")  # (R,) first point reaching each
            hit = idx < n
            q[row, hit] = pr_row[idx[hit]]
        q4 = q.reshape(A, M, T, R).transpose(2, 3, 0, 1)  # -> (T, R, A, M)
        precision[:, :, k] = np.where(has[None, None, :, None], q4, -1.0)
        recall[:, k] = np.where(has[None, :, None], rc[..., -1].transpose(2, 0, 1), -1.0)  # (T, A, M)
    return precision, recall


def mean_valid(values: Tensor) -> float:
    """Mean of the entries > -1, or -1 when there are none (pycocotools' summary rule).

    ``np.mean`` over the same entries in the same order as pycocotools' ``summarize``.
    """
    a = values.numpy()
    v = a[a > -1]
    return float(v.mean()) if v.size else -1.0


def summarize(
    precision: Tensor, recall: Tensor, iou_thresholds: Tensor, max_dets: Sequence[int]
) -> dict[str, float]:
    """COCO's 12 summary numbers under torchmetrics' names.

    ``map*`` and the area-range recalls use the largest limit; ``mar_<m>`` is one per limit.
    ``map_50`` / ``map_75`` are -1 when 0.5 / 0.75 is not among ``iou_thresholds``.
    Area indices: 0 all, 1 small, 2 medium, 3 large.
    """
    last = len(max_dets) - 1

    def at_iou(x: float, arr: Tensor) -> Tensor:
        hit = torch.isclose(iou_thresholds, torch.tensor(x, dtype=iou_thresholds.dtype), rtol=0, atol=1e-12)
        return arr[hit]

    out = {
        "map": mean_valid(precision[:, :, :, 0, last]),
        "map_50": mean_valid(at_iou(0.5, precision)[:, :, :, 0, last]),
        "map_75": mean_valid(at_iou(0.75, precision)[:, :, :, 0, last]),
        "map_small": mean_valid(precision[:, :, :, 1, last]),
        "map_medium": mean_valid(precision[:, :, :, 2, last]),
        "map_large": mean_valid(precision[:, :, :, 3, last]),
    }
    for m, limit in enumerate(max_dets):
        out[f"mar_{limit}"] = mean_valid(recall[:, :, 0, m])
    out["mar_small"] = mean_valid(recall[:, :, 1, last])
    out["mar_medium"] = mean_valid(recall[:, :, 2, last])
    out["mar_large"] = mean_valid(recall[:, :, 3, last])
    return out


def per_class(precision: Tensor, recall: Tensor) -> tuple[Tensor, Tensor]:
    """AP and AR (all areas, largest limit) of each class ``-> ([K], [K])``; -1 for absent classes."""
    K = precision.shape[2]
    ap = torch.tensor([mean_valid(precision[:, :, k, 0, -1]) for k in range(K)], dtype=torch.float64)
    ar = torch.tensor([mean_valid(recall[:, k, 0, -1]) for k in range(K)], dtype=torch.float64)
    return ap, ar
