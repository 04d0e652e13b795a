"""Box algebra on plain tensors, drop-in for ``torchvision.ops`` box functions.

Convention: boxes are ``(x1, y1, x2, y2)`` in absolute pixels unless a ``fmt`` says
otherwise; ``x2 >= x1`` and ``y2 >= y1``. Every function accepts any number of leading
batch dimensions where torchvision does. Low-precision inputs (float16, int8...) are
upcast before products, as torchvision does, so areas do not overflow.

Shape shorthand:
    ``...``: leading batch dimensions; N, M: the boxes of the first and the second set (pairwise
    functions give ``[..., N, M]``). The IoU family (GIoU, DIoU, CIoU) shares one geometry helper,
    ``_iou_penalty``, with the losses of ``ops.iou_loss`` (formulas: ``docs/losses.md``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_boxes, check_format

# Rows of boxes1 handled per step in box_iou: keeps each [rows, M] temporary in cache.
_IOU_ROWS_PER_CHUNK = 256


def _upcast(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 and small ints -> int32, so products do not overflow."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes ``[..., 4]`` between ``'xyxy'``, ``'xywh'`` and ``'cxcywh'``.

    ``xywh`` is (left, top, width, height); ``cxcywh`` is (centre x, centre y, width, height).
    Returns a new tensor (a clone when the formats are equal).
    """
    check_format(in_fmt, "in_fmt")
    check_format(out_fmt, "out_fmt")
    check_boxes(boxes, "boxes")
    if in_fmt == out_fmt:
        return boxes.clone()
    # Every conversion goes through xyxy, like torchvision, so results match bit for bit.
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return torch.stack((a, b, c, d), dim=-1)


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of boxes ``[..., 4]`` -> ``[...]``; negative for inverted xyxy boxes."""
    check_format(fmt)
    check_boxes(boxes, "boxes")
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def _to_corners(boxes: Tensor, fmt: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Corners ``x1, y1, x2, y2`` (each ``[...]``) of boxes in ``fmt``, computed like torchvision."""
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xywh":
        return a, b, a + c, b + d
    if fmt == "cxcywh":
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2
    return a, b, c, d


def _inter_union(boxes1: Tensor, boxes2: Tensor, fmt: str) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas ``[..., N, M]`` of ``[..., N, 4]`` x ``[..., M, 4]``."""
    area1 = box_area(boxes1, fmt)  # (..., N)
    area2 = box_area(boxes2, fmt)  # (..., M)
    ax1, ay1, ax2, ay2 = (t.unsqueeze(-1) for t in _to_corners(boxes1, fmt))  # (..., N, 1)
    bx1, by1, bx2, by2 = (t.unsqueeze(-2) for t in _to_corners(boxes2, fmt))  # (..., 1, M)
    w = _upcast(torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1))  # (..., N, M)
    h = _upcast(torch.minimum(ay2, by2) - torch.maximum(ay1, by1))
    inter = w.clamp(min=0) * h.clamp(min=0)
    return inter, area1.unsqueeze(-1) + area2.unsqueeze(-2) - inter


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise intersection-over-union.

    Args:
        boxes1 (Tensor[..., N, 4]), boxes2 (Tensor[..., M, 4]): boxes in ``fmt``.
    Returns:
        Tensor[..., N, M]: IoU in [0, 1] (NaN where both boxes have zero area, as torchvision).
    """
    check_format(fmt)
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    needs_grad = torch.is_grad_enabled() and (boxes1.requires_grad or boxes2.requires_grad)
    wide = (torch.float32, torch.float64)
    if needs_grad or boxes1.dim() != 2 or boxes2.dim() != 2 or {boxes1.dtype, boxes2.dtype} - set(wide):
        inter, union = _inter_union(boxes1, boxes2, fmt)
        return inter / union
    # No autograd: contiguous corner columns (the strided [:, k] views are several times slower
    # to read) and row blocks that keep the [rows, M] temporaries in cache, computed in place.
    # Same operations in the same order as _inter_union, so the same numbers.
    area1, area2 = box_area(boxes1, fmt), box_area(boxes2, fmt)  # (N,), (M,)
    bx1, by1, bx2, by2 = (t.contiguous()[None, :] for t in _to_corners(boxes2, fmt))  # (1, M)
    ax1, ay1, ax2, ay2 = (t.contiguous()[:, None] for t in _to_corners(boxes1, fmt))  # (N, 1)
    dtype = torch.promote_types(area1.dtype, area2.dtype)
    out = torch.empty(boxes1.shape[0], boxes2.shape[0], dtype=dtype, device=boxes1.device)
    for start in range(0, boxes1.shape[0], _IOU_ROWS_PER_CHUNK):
        r = slice(start, start + _IOU_ROWS_PER_CHUNK)
        w = torch.minimum(ax2[r], bx2).sub_(torch.maximum(ax1[r], bx1)).clamp_(min=0)  # (rows, M)
        h = torch.minimum(ay2[r], by2).sub_(torch.maximum(ay1[r], by1)).clamp_(min=0)
        inter = w.mul_(h)
        union = (area1[r, None] + area2[None, :]).sub_(inter)
        torch.div(inter, union, out=out[r])
    return out


def _iou_penalty(boxes1: Tensor, boxes2: Tensor, kind: str, *, iou_eps: float = 0.0,
                 eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """IoU and the GIoU / DIoU / CIoU penalty of xyxy boxes paired by broadcasting.

    The one place the IoU family's geometry lives: the pairwise metrics pass
    ``boxes1[..., :, None, :]`` and ``boxes2[..., None, :, :]``, the losses matching rows.
    ``metric = iou - penalty`` and ``loss = 1 - iou + penalty``, where

    - ``giou``: ``(|C| - |A u B|) / (|C| + eps)``, C the smallest enclosing box;
    - ``diou``: ``rho^2 / (c^2 + eps)``, rho the centres' distance, c the diagonal of C;
    - ``ciou``: the DIoU term ``+ alpha * v``, ``v = 4 / pi^2 (atan(w2 / h2) - atan(w1 / h1))^2``
      the aspect-ratio term and ``alpha = v / (1 - iou + v + eps)`` a constant (no gradient).

    Args:
        boxes1, boxes2 (Tensor[..., 4]): broadcastable xyxy boxes. Differences of corners are
            upcast after the subtraction and areas from upcast corners, as torchvision's pairwise
            functions do (its DIoU/CIoU and the losses upcast the boxes beforehand).
        kind: ``'giou'``, ``'diou'`` or ``'ciou'``.
        iou_eps: added to the union (torchvision's losses: ``eps``; its pairwise metrics: 0).
        eps: added to ``|C|`` (GIoU), to ``c^2`` and to alpha's denominator.
    Returns:
        (iou, penalty), each Tensor[...] of the broadcast shape.
    """
    ax1, ay1, ax2, ay2 = boxes1.unbind(-1)  # each (...)
    bx1, by1, bx2, by2 = boxes2.unbind(-1)
    a, b = _upcast(boxes1), _upcast(boxes2)
    area1 = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area2 = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    w = _upcast(torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1))  # intersection sides
    h = _upcast(torch.minimum(ay2, by2) - torch.maximum(ay1, by1))
    # A product under a mask (not clamp(w) * clamp(h)): no gradient through a side of a pair
    # that does not overlap, even where the other side is exactly 0, as torchvision's losses.
    area_wh = w * h
    inter = torch.where((w > 0) & (h > 0), area_wh, area_wh.new_zeros(()))
    union = area1 + area2 - inter
    iou = inter / (union + iou_eps if iou_eps else union)
    cw = _upcast(torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1))  # enclosing box sides
    ch = _upcast(torch.maximum(ay2, by2) - torch.minimum(ay1, by1))
    if kind == "giou":
        area_c = cw * ch
        return iou, (area_c - union) / (area_c + eps if eps else area_c)
    diagonal2 = cw**2 + ch**2 + eps
    dx = _upcast((ax1 + ax2) / 2 - (bx1 + bx2) / 2)  # centre offsets
    dy = _upcast((ay1 + ay2) / 2 - (by1 + by2) / 2)
    penalty = (dx**2 + dy**2) / diagonal2
    if kind == "diou":
        return iou, penalty
    if kind != "ciou":
        raise ValueError(f"kind must be 'giou', 'diou' or 'ciou', got {kind!r}")
    angle1 = torch.atan((ax2 - ax1) / (ay2 - ay1))  # atan(w / h): the aspect ratio as an angle
    angle2 = torch.atan((bx2 - bx1) / (by2 - by1))
    v = (4 / math.pi**2) * (angle2 - angle1) ** 2
    with torch.no_grad():  # CIoU's trade-off weight is a constant (Zheng et al. 2020, eq. 11)
        alpha = v / (1 - iou + v + eps)
    return iou, penalty + alpha * v


def _pairwise(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """``[..., N, 4]`` and ``[..., M, 4]`` -> ``[..., N, 1, 4]`` and ``[..., 1, M, 4]`` (ordered boxes)."""
    for boxes, name in ((boxes1, "boxes1"), (boxes2, "boxes2")):
        check_boxes(boxes, name)
        check_boxes(boxes, name, ordered=boxes.is_floating_point())
    return boxes1.unsqueeze(-2), boxes2.unsqueeze(-3)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019): ``IoU - (|C| - |A u B|) / |C|``.

    Args:
        boxes1 (Tensor[..., N, 4]), boxes2 (Tensor[..., M, 4]): xyxy boxes with x2 >= x1, y2 >= y1.
    Returns:
        Tensor[..., N, M] in [-1, 1].
    """
    iou, penalty = _iou_penalty(*_pairwise(boxes1, boxes2), "giou")  # (..., N, M)
    return iou - penalty


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Distance IoU (Zheng et al. 2020): ``IoU - rho^2 / (c^2 + eps)``.

    rho is the distance between the boxes' centres, c the diagonal of the smallest box
    enclosing both. Float16/bfloat16 and small int boxes are upcast first, as torchvision.

    Args:
        boxes1 (Tensor[..., N, 4]), boxes2 (Tensor[..., M, 4]): xyxy boxes with x2 >= x1, y2 >= y1.
        eps: keeps ``c^2`` away from 0 (two identical points).
    Returns:
        Tensor[..., N, M] in [-1, 1].
    """
    boxes1, boxes2 = _pairwise(boxes1, boxes2)
    iou, penalty = _iou_penalty(_upcast(boxes1), _upcast(boxes2), "diou", eps=eps)  # (..., N, M)
    return iou - penalty


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (Zheng et al. 2020): ``DIoU - alpha * v`` with the aspect-ratio term v.

    ``v = 4 / pi^2 * (atan(w1 / h1) - atan(w2 / h2))^2`` and ``alpha = v / (1 - IoU + v + eps)``,
    alpha held constant under autograd (as the paper and torchvision). A box of zero height
    has ``atan(w / 0) = pi / 2``; one of zero width and height gives NaN, as torchvision.

    Args:
        boxes1 (Tensor[..., N, 4]), boxes2 (Tensor[..., M, 4]): xyxy boxes with x2 >= x1, y2 >= y1.
        eps: added to ``c^2`` and to alpha's denominator.
    Returns:
        Tensor[..., N, M] in [-1.5, 1] (``alpha v = v^2 / (1 + v) <= 1/2`` where IoU = 0).
    """
    boxes1, boxes2 = _pairwise(boxes1, boxes2)
    iou, penalty = _iou_penalty(_upcast(boxes1), _upcast(boxes2), "ciou", eps=eps)  # (..., N, M)
    return iou - penalty


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp xyxy boxes ``[..., 4]`` into an image of ``size = (height, width)``."""
    check_boxes(boxes, "boxes")
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)  # (..., 2)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    # (..., 2) x 2 -> (..., 2, 2) -> (..., 4) in x1, y1, x2, y2 order
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices ``int64[K]`` of the xyxy boxes ``[N, 4]`` whose width and height are ``>= min_size``."""
    check_boxes(boxes, "boxes")
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]
