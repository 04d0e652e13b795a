"""COCO matching (the protocol of ``COCOeval.evaluateImg``) on flat tensors of every image at once.

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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# pycocotools caps every threshold at 1 - 1e-10, so an IoU of exactly 1 matches at 1.0.
_MAX_IOU_THRESHOLD = 1 - 1e-10


def rank_in_groups(group: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """Order detections by (group, score descending, input order) and rank them in their group.

    Args:
        group (Tensor[D] int64): group key of each detection (e.g. ``image * K + class``).
        score (Tensor[D] float): detection scores.

    Returns:
        order (Tensor[D] int64): input indices in sorted order.
        rank (Tensor[D] int64): rank of ``order[i]`` within its group (0 = best score).
    """
    by_score = torch.sort(-score, stable=True).indices  # ties keep input order
    by_group = torch.sort(group[by_score], stable=True).indices
    order = by_score[by_group]
    sorted_group = group[order]
    _, counts = torch.unique_consecutive(sorted_group, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts  # (num_groups,)
    rank = torch.arange(order.numel()) - torch.repeat_interleave(starts, counts)
    return order, rank


def group_pairs(det_group: Tensor, gt_group: Tensor) -> tuple[Tensor, Tensor]:
    """Every (detection, gt) pair with the same group key.

    Args:
        det_group (Tensor[D] int64): group keys of detections, sorted ascending.
        gt_group (Tensor[G] int64): group keys of ground truths, sorted ascending.

    Returns:
        det_idx, gt_idx (Tensor[P] int64): pairs, by detection then gt (ascending).
    """
    if det_group.numel() == 0 or gt_group.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    keys, counts = torch.unique_consecutive(gt_group, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.searchsorted(keys, det_group).clamp(max=keys.numel() - 1)  # (D,)
    found = keys[slot] == det_group
    num_gt = torch.where(found, counts[slot], 0)  # (D,) gts in each detection's group
    det_idx = torch.repeat_interleave(torch.arange(det_group.numel()), num_gt)  # (P,)
    first_pair = torch.cumsum(num_gt, 0) - num_gt  # (D,) index of each detection's first pair
    offset = torch.arange(det_idx.numel()) - first_pair[det_idx]  # (P,) 0..num_gt-1
    gt_idx = starts[slot[det_idx]] + offset
    return det_idx, gt_idx


def xyxy_to_xywh64(boxes: Tensor) -> Tensor:
    """Boxes ``[N, 4]`` xyxy -> float64 xywh, the form pycocotools computes with."""
    b = boxes.to(torch.float64)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1)


def box_pair_iou(det_xywh: Tensor, gt_xywh: Tensor, gt_crowd: Tensor) -> Tensor:
    """IoU of paired boxes, elementwise, as pycocotools' ``bbIou`` computes it.

    Args:
        det_xywh (Tensor[P, 4] float64): detection boxes (x, y, w, h).
        gt_xywh (Tensor[P, 4] float64): their paired gt boxes.
        gt_crowd (Tensor[P] bool): the gt is a crowd region: IoU = intersection / det area.

    Returns:
        Tensor[P] float64 in [0, 1] (0 where the boxes do not overlap).
    """
    dx, dy, dw, dh = det_xywh.unbind(1)
    gx, gy, gw, gh = gt_xywh.unbind(1)
    w = torch.minimum(dx + dw, gx + gw) - torch.maximum(dx, gx)
    h = torch.minimum(dy + dh, gy + gh) - torch.maximum(dy, gy)
    inter = w * h
    det_area = dw * dh
    union = torch.where(gt_crowd, det_area, det_area + gw * gh - inter)
    overlap = (w > 0) & (h > 0)
    return torch.where(overlap, inter / torch.where(overlap, union, 1.0), 0.0)


def greedy_match(
    pair_det: Tensor,
    pair_gt: Tensor,
    pair_iou: Tensor,
    det_rank: Tensor,
    gt_ignore: Tensor,
    gt_crowd: Tensor,
    iou_thresholds: Tensor,
) -> Tensor:
    """COCO's greedy matching of every detection, per area range and IoU threshold.

    Each detection, in rank order within its group, takes the available gt with the highest
    IoU >= the threshold, preferring gts that are not ignored (it only falls back to ignored
    gts when no regular gt qualifies); among equal IoUs the later gt (higher index) wins,
    as in pycocotools' scan. A gt is then taken, except crowd gts, which stay available.

    Args:
        pair_det, pair_gt (Tensor[P] int64): candidate pairs (same image and class).
        pair_iou (Tensor[P] float64): their IoUs.
        det_rank (Tensor[D] int64): rank of each detection within its group.
        gt_ignore (Tensor[A, G] bool): gt ignored in each area range (crowd or outside it).
        gt_crowd (Tensor[G] bool): crowd gts.
        iou_thresholds (Tensor[T] float64).

    Returns:
        Tensor[A, T, D] int64: index of the matched gt, -1 where unmatched.
    """
    A, G = gt_ignore.shape
    T = iou_thresholds.numel()
    D = det_rank.numel()
    matched = np.full((A, T, D), -1, dtype=np.int64)
    thr = iou_thresholds.to(torch.float64).clamp(max=_MAX_IOU_THRESHOLD).numpy()  # (T,)
    if pair_det.numel() == 0 or T == 0:
        return torch.from_numpy(matched)
    # numpy from here: small single-threaded steps (see the module docstring).
    pd, pg, piou = pair_det.numpy(), pair_gt.numpy(), pair_iou.to(torch.float64).numpy()
    keep = piou >= thr.min()  # pairs below every threshold never match
    pd, pg, piou = pd[keep], pg[keep], piou[keep]
    if pd.size == 0:
        return torch.from_numpy(matched)
    # One step per rank: sort pairs by (rank of their detection, detection, gt).
    step = det_rank.numpy()[pd]
    order = np.argsort(step * D + pd, kind="stable")
    pd, pg, piou, step = pd[order], pg[order], piou[order], step[order]
    bounds = np.flatnonzero(np.diff(step)) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [pd.size]])
    ignore = gt_ignore.numpy()
    lasting = ~gt_crowd.numpy()  # a crowd region can absorb any number of detections
    taken = np.zeros((A, T, G), dtype=bool)  # non-crowd gts matched so far
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        d, g, iou = pd[s:e], pg[s:e], piou[s:e]
        # The pairs of one detection are consecutive (sorted by detection): segments.
        new = np.concatenate([[True], d[1:] != d[:-1]])  # (n,) a pair starts a segment
        first = np.flatnonzero(new)  # (nd,)
        seg = np.cumsum(new) - 1  # (n,) segment of each pair
        valid = (iou >= thr[:, None]) & ~taken[:, :, g]  # (T, n) & (A, T, n) -> (A, T, n)
        ignored = ignore[:, g][:, None, :]  # (A, 1, n)
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
        keep_taken = lasting[hit]
        taken[a_idx[keep_taken], t_idx[keep_taken], hit[keep_taken]] = True
    return torch.from_numpy(matched)
    keep = pair_iou >= thr.min()  # pairs below every threshold never match
    pair_det, pair_gt, pair_iou = pair_det[keep], pair_gt[keep], pair_iou[keep]
    if pair_det.numel() == 0:
        return matched
    # One step per rank: sort pairs by (rank of their detection, detection, gt).
    step = det_rank[pair_det]
    order = torch.sort(step * D + pair_det, stable=True).indices
    pair_det, pair_gt, pair_iou, step = pair_det[order], pair_gt[order], pair_iou[order], step[order]
    ranks, per_rank = torch.unique_consecutive(step, return_counts=True)
    taken = torch.zeros(A, T, G, dtype=torch.bool)  # non-crowd gts matched so far
    start = 0
    for n in per_rank.tolist():
        d, g, iou = pair_det[start : start + n], pair_gt[start : start + n], pair_iou[start : start + n]
        start += n
        dets, seg = torch.unique_consecutive(d, return_inverse=True)  # (nd,), (n,)
        nd = dets.numel()
        seg3 = seg.expand(A, T, n)
        valid = (iou >= thr[:, None]) & ~taken[:, :, g]  # (T, n) & (A, T, n) -> (A, T, n)
        ignored = gt_ignore[:, g].unsqueeze(1)  # (A, 1, n)
        regular = (valid & ~ignored).to(torch.int32)
        has_regular = torch.zeros(A, T, nd, dtype=torch.int32).scatter_add_(2, seg3, regular) > 0
        # With a regular candidate only regular gts compete; otherwise only ignored ones.
        cand = valid & (ignored != has_regular[:, :, seg])
        key = torch.where(cand, iou, -1.0)  # (A, T, n)
        best = torch.full((A, T, nd), -1.0, dtype=torch.float64).scatter_reduce_(2, seg3, key, "amax")
        cand &= key == best[:, :, seg]
        gkey = torch.where(cand, g, -1)
        best_g = torch.full((A, T, nd), -1, dtype=torch.int64).scatter_reduce_(2, seg3, gkey, "amax")
        matched[:, :, dets] = best_g
        a_idx, t_idx, j = (best_g >= 0).nonzero(as_tuple=True)
        hit = best_g[a_idx, t_idx, j]
        lasting = ~gt_crowd[hit]  # a crowd region can absorb any number of detections
        taken[a_idx[lasting], t_idx[lasting], hit[lasting]] = True
    assert start == pair_det.numel() and ranks.numel() == per_rank.numel()
    return matched
