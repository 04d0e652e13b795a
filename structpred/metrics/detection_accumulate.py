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
    det_class: Tensor,
    det_rank: Tensor,
    tp: Tensor,
    fp: Tensor,
    num_pos: Tensor,
    max_dets: Sequence[int],
    rec_thresholds: Tensor,
) -> tuple[Tensor, Tensor]:
    """Precision at the recall thresholds and final recall, COCOeval's ``eval`` arrays.

    Args:
        det_class (Tensor[D] int64): class index of each detection; the detections are in
            evaluation order (class ascending, score descending, image, rank).
        det_rank (Tensor[D] int64): rank of each detection within its (image, class).
        tp, fp (Tensor[A, T, D] bool): true / false positive per area range and threshold
            (a detection that is neither is ignored).
        num_pos (Tensor[K, A] int64): regular (not ignored) gts per class and area range.
        max_dets: limits on detections per image and class, ascending.
        rec_thresholds (Tensor[R] float64).

    Returns:
        precision (Tensor[T, R, K, A, M] float64), recall (Tensor[T, K, A, M] float64); -1 for
        a class without regular gts in that area range.
    """
    A, T, D = tp.shape
    K = num_pos.shape[0]
    M = len(max_dets)
    R = rec_thresholds.numel()
    # numpy: a few single-threaded ops per class (a busy machine makes each multi-threaded op
    # wait for the other threads to be scheduled).
    precision = np.full((T, R, K, A, M), -1.0, dtype=np.float64)
    recall = np.full((T, K, A, M), -1.0, dtype=np.float64)
    cls = det_class.numpy()
    bounds = np.searchsorted(cls, np.arange(K + 1)).tolist()
    limits = np.array(list(max_dets), dtype=np.int64)
    rec = rec_thresholds.to(torch.float64).numpy()
    ranks, tp_all, fp_all, pos = det_rank.numpy(), tp.numpy(), fp.numpy(), num_pos.numpy()
    for k in range(K):
        has = pos[k] > 0  # (A,)
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
        within = ranks[None, s:e] < limits[:, None]  # (M, n)
        tp_k = tp_all[:, None, :, s:e] & within[None, :, None, :]  # (A, M, T, n)
        fp_k = fp_all[:, None, :, s:e] & within[None, :, None, :]
        tp_sum = np.cumsum(tp_k, axis=-1, dtype=np.float64)
        fp_sum = np.cumsum(fp_k, axis=-1, dtype=np.float64)
        npos = np.maximum(pos[k], 1).astype(np.float64)[:, None, None, None]  # (A, 1, 1, 1)
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
    return torch.from_numpy(precision), torch.from_numpy(recall)


def mean_valid(values: Tensor) -> float:
    """Mean of the entries > -1, or -1 when there are none (pycocotools' summary rule)."""
    v = values[values > -1]
    return float(v.mean()) if v.numel() else -1.0


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
