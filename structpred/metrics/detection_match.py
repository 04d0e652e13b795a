"""COCO matching (the protocol of ``COCOeval.evaluateImg``) on flat arrays of every image at once.

Shape shorthand:
    D: detections of all images, G: ground truths of all images, P: (detection, gt) pairs of
    the same image and class, T: IoU thresholds, A: area ranges.

Detections and ground truths are grouped by (image, class). Within a group, detections are
ranked by score (descending, stable: equal scores keep their input order, like
pycocotools' mergesort) and only the first ``max_det`` take part. Matching is greedy in rank
order and independent between groups, so one step handles rank ``r`` of every group at once,
vectorised over pairs, area ranges and thresholds.

IoUs are float64 and computed with pycocotools' arithmetic (boxes as x, y, w, h; corners
``x + w``; union ``(area_d + area_g) - inter``; a crowd gt's "IoU" is ``inter / area_d``), so
that a pair sitting exactly on a threshold is decided as pycocotools decides it.

Everything here is numpy (``np.ndarray`` in and out): the evaluation is many small array
ops, and a multi-threaded torch op on a busy machine waits for its other threads to be
scheduled (milliseconds each), while a numpy op runs on the calling thread.
"""

from __future__ import annotations

import numpy as np

# pycocotools caps every threshold at 1 - 1e-10, so an IoU of exactly 1 matches at 1.0.
_MAX_IOU_THRESHOLD = 1 - 1e-10


def _segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Indices where a run of equal keys begins (``[0, ...]``; empty for no keys)."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))


def rank_in_groups(group: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order detections by (group, score descending, input order) and rank them in their group.

    Args:
        group (int64 [D]): group key of each detection (e.g. ``image * K + class``).
        score (float [D]): detection scores.

    Returns:
        order (int64 [D]): input indices in sorted order.
        rank (int64 [D]): rank of ``order[i]`` within its group (0 = best score).
    """
    by_score = np.argsort(-score, kind="stable")  # ties keep input order
    by_group = np.argsort(group[by_score], kind="stable")
    order = by_score[by_group]
    starts = _segment_starts(group[order])  # (num_groups,)
    counts = np.diff(np.append(starts, order.size))
    rank = np.arange(order.size) - np.repeat(starts, counts)
    return order, rank


def group_pairs(det_group: np.ndarray, gt_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, gt) pair with the same group key.

    Args:
        det_group (int64 [D]): group keys of detections, sorted ascending.
        gt_group (int64 [G]): group keys of ground truths, sorted ascending.

    Returns:
        det_idx, gt_idx (int64 [P]): pairs, by detection then gt (ascending).
    """
    if det_group.size == 0 or gt_group.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    starts = _segment_starts(gt_group)
    keys = gt_group[starts]
    counts = np.diff(np.append(starts, gt_group.size))
    slot = np.minimum(np.searchsorted(keys, det_group), keys.size - 1)  # (D,)
    found = keys[slot] == det_group
    num_gt = np.where(found, counts[slot], 0)  # (D,) gts in each detection's group
    det_idx = np.repeat(np.arange(det_group.size), num_gt)  # (P,)
    first_pair = np.cumsum(num_gt) - num_gt  # (D,) index of each detection's first pair
    offset = np.arange(det_idx.size) - first_pair[det_idx]  # (P,) 0..num_gt-1
    gt_idx = starts[slot[det_idx]] + offset
    return det_idx, gt_idx


def box_pair_iou(det_xywh: np.ndarray, gt_xywh: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """IoU of paired boxes, elementwise, as pycocotools' ``bbIou`` computes it.

    Args:
        det_xywh (float64 [P, 4]): detection boxes (x, y, w, h).
        gt_xywh (float64 [P, 4]): their paired gt boxes.
        gt_crowd (bool [P]): the gt is a crowd region: IoU = intersection / det area.

    Returns:
        float64 [P] in [0, 1] (0 where the boxes do not overlap).
    """
    dx, dy, dw, dh = det_xywh.T
    gx, gy, gw, gh = gt_xywh.T
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = w * h
    det_area = dw * dh
    union = np.where(gt_crowd, det_area, det_area + gw * gh - inter)
    overlap = (w > 0) & (h > 0)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def greedy_match(
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    det_rank: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    iou_thresholds: np.ndarray,
) -> np.ndarray:
    """COCO's greedy matching of every detection, per area range and IoU threshold.

    Each detection, in rank order within its group, takes the available gt with the highest
    IoU >= the threshold, preferring gts that are not ignored (it only falls back to ignored
    gts when no regular gt qualifies); among equal IoUs the later gt (higher index) wins,
    as in pycocotools' scan. A gt is then taken, except crowd gts, which stay available.

    Args:
        pair_det, pair_gt (int64 [P]): candidate pairs (same image and class).
        pair_iou (float64 [P]): their IoUs.
        det_rank (int64 [D]): rank of each detection within its group.
        gt_ignore (bool [A, G]): gt ignored in each area range (crowd or outside it).
        gt_crowd (bool [G]): crowd gts.
        iou_thresholds (float64 [T]).

    Returns:
        int32 [A, T, D] (int64 from 2**31 gts on): index of the matched gt, -1 where unmatched.
    """
    A, G = gt_ignore.shape
    T = iou_thresholds.size
    D = det_rank.size
    matched = np.full((A, T, D), -1, dtype=np.int32 if G < 2**31 else np.int64)  # int32: half the bytes
    thr = np.minimum(iou_thresholds.astype(np.float64), _MAX_IOU_THRESHOLD)  # (T,)
    if pair_det.size == 0 or T == 0:
        return matched
    keep = pair_iou >= thr.min()  # pairs below every threshold never match
    pd, pg, piou = pair_det[keep], pair_gt[keep], pair_iou[keep]
    if pd.size == 0:
        return matched
    # One step per rank: sort pairs by (rank of their detection, detection, gt).
    step = det_rank[pd]
    order = np.argsort(step * D + pd, kind="stable")
    pd, pg, piou, step = pd[order], pg[order], piou[order], step[order]
    starts = _segment_starts(step)
    ends = np.append(starts[1:], pd.size)
    lasting = ~gt_crowd  # a crowd region can absorb any number of detections
    taken = np.zeros((A, T, G), dtype=bool)  # non-crowd gts matched so far
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        d, g, iou = pd[s:e], pg[s:e], piou[s:e]
        # The pairs of one detection are consecutive (sorted by detection): segments.
        first = _segment_starts(d)  # (nd,)
        seg = np.repeat(np.arange(first.size), np.diff(np.append(first, d.size)))  # (n,)
        valid = (iou >= thr[:, None]) & ~taken[:, :, g]  # (T, n) & (A, T, n) -> (A, T, n)
        ignored = gt_ignore[:, g][:, None, :]  # (A, 1, n)
        has_regular = np.logical_or.reduceat(valid & ~ignored, first, axis=2)  # (A, T, nd)
        # With a regular candidate only regular gts compete; otherwise only ignored ones.
        cand = valid & (ignored != has_regular[:, :, seg])
        key = np.where(cand, iou, -1.0)  # (A, T, n)
        best = np.maximum.reduceat(key, first, axis=2)  # (A, T, nd)
        cand &= key == best[:, :, seg]
        best_g = np.maximum.reduceat(np.where(cand, g, -1), first, axis=2)  # (A, T, nd)
        matched[:, :, d[first]] = best_g
        a_idx, t_idx, j = np.nonzero(best_g >= 0)
        hit = best_g[a_idx, t_idx, j]
        stays = lasting[hit]
        taken[a_idx[stays], t_idx[stays], hit[stays]] = True
    return matched
