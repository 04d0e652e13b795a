"""Box algebra on plain tensors, drop-in for ``torchvision.ops`` box functions.

Convention: boxes are ``(x1, y1, x2, y2)`` in absolute pixels unless a ``fmt`` says
otherwise; ``x2 >= x1`` and ``y2 >= y1``. Every function accepts any number of leading
batch dimensions where torchvision does. Low-precision inputs (float16, int8...) are
upcast before products, as torchvision does, so areas do not overflow.
"""

from __future__ import annotations

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


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019): ``IoU - (|C| - |A u B|) / |C|``.

    Args:
        boxes1 (Tensor[..., N, 4]), boxes2 (Tensor[..., M, 4]): xyxy boxes with x2 >= x1, y2 >= y1.
    Returns:
        Tensor[..., N, M] in [-1, 1].
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    check_boxes(boxes1, "boxes1", ordered=boxes1.is_floating_point())
    check_boxes(boxes2, "boxes2", ordered=boxes2.is_floating_point())
    inter, union = _inter_union(boxes1, boxes2, "xyxy")
    iou = inter / union
    # C: the smallest box enclosing both.
    cx1 = torch.minimum(boxes1[..., :, None, 0], boxes2[..., None, :, 0])  # (..., N, M)
    cy1 = torch.minimum(boxes1[..., :, None, 1], boxes2[..., None, :, 1])
    cx2 = torch.maximum(boxes1[..., :, None, 2], boxes2[..., None, :, 2])
    cy2 = torch.maximum(boxes1[..., :, None, 3], boxes2[..., None, :, 3])
    area_c = _upcast(cx2 - cx1).clamp(min=0) * _upcast(cy2 - cy1).clamp(min=0)
    return iou - (area_c - union) / area_c


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
