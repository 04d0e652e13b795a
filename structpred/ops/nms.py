"""Greedy non-maximum suppression, vectorised, with torchvision's exact results.

Greedy NMS keeps the best-scoring box, drops every later box whose IoU with it exceeds
the threshold, and repeats. Written as a loop over boxes it is sequential; here it is
two vectorised steps:

1. **Suppression pairs.** In score order, list every pair ``(i, j)``, ``i < j``, with
   ``IoU > threshold`` (and, for :func:`batched_nms`, the same class). Computed in row
   blocks of the upper triangle (each inside one class's segment), or pair by pair inside class
   segments when there are many small classes.
2. **Fixed point.** Box ``j`` is kept iff no *kept* box ``i < j`` suppresses it. Starting
   from "all kept" and applying that rule to all boxes at once converges to the greedy
   answer (Cluster-NMS, Zheng et al. 2020): after ``t`` rounds every box whose longest
   suppression chain has length ``< t`` is final, so the loop ends after
   (longest chain + 1) rounds — a handful in practice, each a scatter over the pairs.

The IoU arithmetic and the strict ``>`` follow torchvision's CPU kernel, including how a
float32 IoU is compared with a float64 threshold, so kept indices and their order are equal.
:func:`batched_nms` is exact per-class NMS (torchvision's own path above 1,000 boxes); below
that torchvision shifts each class's boxes by ``label * (max coordinate + 1)``, which can round
an IoU across the threshold when labels are large (thousands) — there we keep the exact answer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_boxes

# Row block for the dense pair search: a [256, N] float block stays in cache.
_ROWS = 256
# Above this many same-label candidate pairs, the blocked search uses less memory.
_MAX_SEGMENT_PAIRS = 1 << 22


def _above(iou: Tensor, threshold: float) -> Tensor:
    """``iou > threshold`` with ``threshold`` kept in float64, like the C++ kernel.

    Comparing a float32 tensor with a Python float casts the float to float32, which can
    round it up (0.3 -> 0.30000001) and flip the result for an IoU equal to the rounded
    value. The smallest float32 above ``threshold`` is the exact test.
    """
    t = torch.tensor(threshold, dtype=iou.dtype).item()
    return iou >= t if t > threshold else iou > t


def _pair_iou(b1: Tensor, b2: Tensor) -> Tensor:
    """IoU of paired boxes ``[..., 4]`` x ``[..., 4]`` -> ``[...]``, in the kernel's operation order."""
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    w = (torch.minimum(b1[..., 2], b2[..., 2]) - torch.maximum(b1[..., 0], b2[..., 0])).clamp(min=0)
    h = (torch.minimum(b1[..., 3], b2[..., 3]) - torch.maximum(b1[..., 1], b2[..., 1])).clamp(min=0)
    inter = w * h
    return inter / (area1 + area2 - inter)


def _dense_pairs(boxes: Tensor, threshold: float, labels: Tensor | None) -> tuple[Tensor, Tensor]:
    """All suppression pairs ``(i, j)``, ``i < j``, of score-sorted ``boxes [N, 4]``, by row blocks.

    With ``labels`` (boxes sorted by label) each block lies inside one label's segment, so
    pairs never cross labels and no label test is needed.
    """
    n = boxes.shape[0]
    x1, y1, x2, y2 = boxes.unbind(1)  # (N,) each; contiguous copies below
    x1, y1, x2, y2 = x1.contiguous(), y1.contiguous(), x2.contiguous(), y2.contiguous()
    area = (x2 - x1) * (y2 - y1)
    if labels is None:
        segments = [(0, n)]
    else:
        ends = torch.cumsum(torch.unique_consecutive(labels, return_counts=True)[1], 0).tolist()
        segments = list(zip([0, *ends[:-1]], ends, strict=True))
    src, dst = [], []
    for start, e in segments:
        a = start
        while a < e:
            # Rows a..b against columns a..e; a short remainder joins the block (fewer, larger steps).
            b = e if e - a <= 2 * _ROWS else a + _ROWS
            r = slice(a, b)
            # Row boxes (r, 1) against boxes a..e (1, e - a); in-place, no autograd here.
            w = torch.minimum(x2[r, None], x2[None, a:e]).sub_(torch.maximum(x1[r, None], x1[None, a:e]))
            h = torch.minimum(y2[r, None], y2[None, a:e]).sub_(torch.maximum(y1[r, None], y1[None, a:e]))
            inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
            union = (area[r, None] + area[None, a:e]).sub_(inter)
            over = _above(inter.div_(union), threshold)  # (b - a, e - a)
            over.triu_(1)  # only j > i; column 0 of the block is row `a`
            i, j = over.nonzero(as_tuple=True)
            src.append(i + a)
            dst.append(j + a)
            a = b
    return torch.cat(src), torch.cat(dst)


def _segment_pairs(boxes: Tensor, threshold: float, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Suppression pairs when ``boxes [N, 4]`` are sorted by (label, score): only same-label pairs.

    Every box ``i`` is paired with the boxes after it in its label segment; the
    ``sum_c n_c^2 / 2`` candidates are built with ``repeat_interleave``, no Python loop.
    """
    n = boxes.shape[0]
    device = boxes.device
    _, seg_len = torch.unique_consecutive(labels, return_counts=True)
    seg_end = torch.repeat_interleave(torch.cumsum(seg_len, 0), seg_len)  # (N,) end of i's segment
    pos = torch.arange(n, device=device)
    after = seg_end - pos - 1  # (N,) boxes after i in its segment
    src = torch.repeat_interleave(pos, after)  # (P,)
    first = torch.cumsum(after, 0) - after  # (N,) where i's pairs start in the pair list
    dst = src + 1 + torch.arange(src.numel(), device=device) - first[src]  # (P,)
    over = _above(_pair_iou(boxes[src], boxes[dst]), threshold)
    return src[over], dst[over]


def _greedy_fixed_point(n: int, src: Tensor, dst: Tensor, device: torch.device) -> Tensor:
    """Keep mask ``bool[N]``: ``j`` kept iff no kept ``i`` has a pair ``(i, j)``."""
    keep = torch.ones(n, dtype=torch.bool, device=device)
    for _ in range(n + 1):  # converges in (longest suppression chain + 1) rounds
        suppressed = torch.zeros(n, dtype=torch.bool, device=device)
        suppressed[dst[keep[src]]] = True
        new_keep = ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _nms(boxes: Tensor, scores: Tensor, threshold: float, labels: Tensor | None) -> Tensor:
    check_boxes(boxes, "boxes", rank2=True)
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating point tensor, got {boxes.dtype}")
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # Stable: among equal scores the earlier box wins, as in torchvision's kernel.
    order = torch.sort(scores, descending=True, stable=True).indices
    if labels is None:
        src, dst = _dense_pairs(boxes[order], threshold, None)
    else:
        by_label = torch.sort(labels[order], stable=True).indices  # (label, score) order
        order = order[by_label]
        sorted_labels = labels[order]
        seg_len = torch.unique_consecutive(sorted_labels, return_counts=True)[1]
        candidates = int((seg_len * (seg_len - 1) // 2).sum())
        # Same-label candidates only, unless the labels are so few that the row blocks (each
        # cut at its last row's segment end: about candidates + n * _ROWS / 2 cheap,
        # cache-friendly checks) are the smaller job.
        if candidates < min(n * _ROWS // 4, _MAX_SEGMENT_PAIRS):
            src, dst = _segment_pairs(boxes[order], threshold, sorted_labels)
        else:
            src, dst = _dense_pairs(boxes[order], threshold, sorted_labels)
    keep = _greedy_fixed_point(n, src, dst, boxes.device)
    kept = order[keep]
    if labels is not None:  # back to decreasing score across labels, ties by index
        kept = torch.sort(kept).values
        kept = kept[torch.sort(scores[kept], descending=True, stable=True).indices]
    return kept


@torch.library.custom_op("structpred::nms", mutates_args=())
def _nms_op(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """:func:`nms` as one opaque operator, for ``torch.export``: its data-dependent loop stays
    out of the graph, and the ONNX exporter maps it to ``NonMaxSuppression``
    (:mod:`structpred.engine.export`)."""
    return _nms(boxes, scores, iou_threshold, None)


@_nms_op.register_fake
def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    kept = torch.library.get_ctx().new_dynamic_size()  # how many survive depends on the data
    return boxes.new_empty(kept, dtype=torch.int64)


def _offset_by_class(boxes: Tensor, idxs: Tensor) -> Tensor:
    """Boxes of different ``idxs`` moved apart so that they never overlap (torchvision's trick;
    exact unless labels reach the thousands, see the module docstring)."""
    top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()  # 0 for no boxes
    return boxes + (idxs.to(boxes) * (top + 1))[:, None]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes (Tensor[N, 4]): xyxy boxes, float.
        scores (Tensor[N]): one score per box.
        iou_threshold: a box is dropped if its IoU with a kept, higher-scoring box is ``>`` this.
    Returns:
        int64[K]: indices of the kept boxes, by decreasing score.
    """
    if torch.compiler.is_exporting():
        return _nms_op(boxes, scores, iou_threshold)
    return _nms(boxes, scores, iou_threshold, None)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS independently per category: boxes of different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]): as in :func:`nms`.
        idxs (Tensor[N]): integer category of each box.
    Returns:
        int64[K]: indices of the kept boxes, by decreasing score.
    """
    if not isinstance(idxs, Tensor) or idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        shape = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
    if idxs.is_floating_point():
        raise ValueError(f"idxs must hold integer categories, got {idxs.dtype}")
    if torch.compiler.is_exporting():
        return _nms_op(_offset_by_class(boxes, idxs), scores, iou_threshold)
    return _nms(boxes, scores, iou_threshold, idxs)
