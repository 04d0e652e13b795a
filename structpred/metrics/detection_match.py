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

from collections.abc import Sequence

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


def mask_iou(det_masks: Tensor, gt_masks: Tensor, gt_crowd: Tensor) -> Tensor:
    """Pairwise IoU of binary masks ``[D, H, W]`` x ``[G, H, W]`` -> float64 ``[D, G]``.

    One image's :func:`mask_ious` (see there for the arithmetic).
    """
    ious, _, _ = mask_ious([det_masks], [gt_masks], [gt_crowd])
    return ious[0].reshape(det_masks.shape[0], gt_masks.shape[0])


# Mask pixels (padded rows x H*W) :func:`mask_ious` converts at once: ~6 bytes each (a float32
# copy, the uint8 input). Large enough that an op covers dozens of images: on a busy machine
# every multi-threaded op costs a wake-up of the other threads, whatever its size.
_CHUNK_PIXELS = 2**24


def mask_ious(
    det_masks: Sequence[Tensor], gt_masks: Sequence[Tensor], gt_crowd: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Mask IoUs and pixel counts of many images, a few batched tensor ops per chunk of images.

    Args:
        det_masks: per image, detection masks bool/uint8 ``[D_i, H_i, W_i]`` (nonzero = inside).
        gt_masks: per image, gt masks ``[G_i, H_i, W_i]`` (the dets' size when both are non-empty).
        gt_crowd: per image, bool ``[G_i]``: a crowd gt's "IoU" is ``intersection / det area``.

    Returns:
        ious: per image float64 ``[D_i * G_i]``, the ``[D_i, G_i]`` IoU matrix row-major; 0 for an
            empty union.
        det_area, gt_area: per image float64 ``[D_i]`` / ``[G_i]`` pixel counts.

    Counts are exact integers, as pycocotools' RLE counts: 0/1 values in float32 (float64 from
    2**24 pixels per image on), so every partial sum of a matmul or sum is an integer below
    2**24 (2**53) and exact whatever the summation order. They are divided in float64 like
    pycocotools' ``rleIou``: ``inter / ((det + gt) - inter)`` or ``inter / det`` for crowd.
    Images of one size are sorted by (gts, dets) and padded with zero masks to a chunk's
    largest counts; one ``bmm`` per chunk against the gts plus a row / column of ones gives the
    intersections and both areas.
    """
    n = len(det_masks)
    ious: list[Tensor] = [torch.zeros(0, dtype=torch.float64)] * n
    det_area: list[Tensor] = [torch.zeros(0, dtype=torch.float64)] * n
    gt_area: list[Tensor] = [torch.zeros(0, dtype=torch.float64)] * n
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (d, g) in enumerate(zip(det_masks, gt_masks, strict=True)):
        if d.shape[0] or g.shape[0]:
            size = d.shape[1:] if d.shape[0] else g.shape[1:]
            by_size.setdefault((int(size[0]), int(size[1])), []).append(i)
    for (h, w), images in by_size.items():
        hw = h * w
        images.sort(key=lambda i: (gt_masks[i].shape[0], det_masks[i].shape[0]))
        chunk: list[int] = []
        max_d = max_g = 0  # the chunk's largest counts
        for i in images:
            nd, ng = det_masks[i].shape[0], gt_masks[i].shape[0]
            # Padded rows with image i: (D + 1) + (G + 1) per image.
            if chunk and (len(chunk) + 1) * (max(max_d, nd) + max(max_g, ng) + 2) * hw > _CHUNK_PIXELS:
                _mask_chunk(chunk, det_masks, gt_masks, gt_crowd, hw, ious, det_area, gt_area)
                chunk, max_d, max_g = [], 0, 0
            chunk.append(i)
            max_d, max_g = max(max_d, nd), max(max_g, ng)
        _mask_chunk(chunk, det_masks, gt_masks, gt_crowd, hw, ious, det_area, gt_area)
    return ious, det_area, gt_area


def _mask_chunk(
    images: list[int],
    det_masks: Sequence[Tensor],
    gt_masks: Sequence[Tensor],
    gt_crowd: Sequence[Tensor],
    hw: int,
    ious: list[Tensor],
    det_area: list[Tensor],
    gt_area: list[Tensor],
) -> None:
    """:func:`mask_ious` of some images of ``hw`` pixels: fills their entries of the outputs."""
    B = len(images)
    nd = [det_masks[i].shape[0] for i in images]
    ng = [gt_masks[i].shape[0] for i in images]
    D, G = max(nd), max(ng)
    dtype = torch.float32 if hw < 2**24 else torch.float64
    # Per image: its masks, zero masks up to D (G), a mask of ones: (B * (D + 1), HW).
    d = _stack_masks([det_masks[i] for i in images], D, hw, dtype).view(B, D + 1, hw)
    g = _stack_masks([gt_masks[i] for i in images], G, hw, dtype).view(B, G + 1, hw)
    counts = torch.bmm(d, g.transpose(1, 2)).to(torch.float64)  # (B, D + 1, G + 1)
    inter = counts[:, :D, :G]
    d_area = counts[:, :D, G]  # (B, D) a mask against the ones
    g_area = counts[:, D, :G]  # (B, G)
    no = torch.zeros(G, dtype=torch.bool)
    crowd = torch.cat([torch.cat([gt_crowd[i].bool(), no[k:]]) for i, k in zip(images, ng, strict=True)])
    crowd = crowd.view(B, G)
    da = d_area[:, :, None]  # (B, D, 1)
    union = torch.where(crowd[:, None, :], da, da + g_area[:, None, :] - inter)  # (B, D, G)
    iou = torch.where(union > 0, inter / union.clamp(min=1), 0.0)  # (B, D, G)
    nd_t, ng_t = torch.tensor(nd), torch.tensor(ng)
    real_d = torch.arange(D) < nd_t[:, None]  # (B, D)
    real_g = torch.arange(G) < ng_t[:, None]  # (B, G)
    pair_sizes = [a * b for a, b in zip(nd, ng, strict=True)]
    iou_parts = torch.split(iou[real_d[:, :, None] & real_g[:, None, :]], pair_sizes)  # row-major per image
    d_parts = torch.split(d_area[real_d], nd)
    g_parts = torch.split(g_area[real_g], ng)
    for b, i in enumerate(images):
        ious[i], det_area[i], gt_area[i] = iou_parts[b], d_parts[b], g_parts[b]


def _stack_masks(masks: list[Tensor], rows: int, hw: int, dtype: torch.dtype) -> Tensor:
    """Masks as 0/1 ``dtype`` ``[len(masks) * (rows + 1), hw]``: each image's padded with zero
    masks to ``rows``, then a mask of ones.

    One ``cat`` straight into ``dtype`` (bool masks viewed as uint8), then a clamp if any mask
    is uint8 (nonzero means inside).
    """
    zeros = torch.zeros(rows, hw, dtype=torch.uint8)
    ones = torch.ones(1, hw, dtype=torch.uint8)
    parts: list[Tensor] = []
    binary = True
    for m in masks:
        k = m.shape[0]
        if k:
            binary &= m.dtype == torch.bool
            parts.append((m.view(torch.uint8) if m.dtype == torch.bool else m).reshape(k, hw))
        if rows > k:
            parts.append(zeros[: rows - k])
        parts.append(ones)
    out = torch.empty(len(masks) * (rows + 1), hw, dtype=dtype)
    torch.cat(parts, out=out)
    if not binary:
        out.clamp_(max=1)
    return out


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
    matched = torch.full((A, T, D), -1, dtype=torch.int64)
    thr = iou_thresholds.to(torch.float64).clamp(max=_MAX_IOU_THRESHOLD)  # (T,)
    if pair_det.numel() == 0 or T == 0:
        return matched
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
