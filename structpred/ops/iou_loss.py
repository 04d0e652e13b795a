"""Bounding-box regression losses of the IoU family, drop-in for torchvision's
``generalized_box_iou_loss``, ``distance_box_iou_loss`` and ``complete_box_iou_loss``.

Shape shorthand:
    ``...``: the rows, e.g. ``N`` matched (prediction, target) pairs; ``boxes1`` and ``boxes2``
    are ``[..., 4]`` xyxy and broadcast against each other (``[N, 4]`` with ``[N, 4]`` usually).

Convention: elementwise over matching rows (not pairwise: that is ``generalized_box_iou`` and
friends in ``ops.boxes``, whose geometry these share), ``loss = 1 - metric``:

- GIoU (Rezatofighi et al. 2019): ``1 - IoU + (|C| - |A u B|) / (|C| + eps)``, in [0, 2];
- DIoU (Zheng et al. 2020): ``1 - IoU + rho^2 / (c^2 + eps)``, in [0, 2);
- CIoU (same paper): the DIoU loss ``+ alpha v``, ``v = 4 / pi^2 (atan(w2/h2) - atan(w1/h1))^2``,
  ``alpha = v / (1 - IoU + v + eps)`` held constant (no gradient), in [0, 2.5).

with ``IoU = |A n B| / (|A u B| + eps)`` (the ``eps`` keeps two zero-area boxes finite: IoU 0),
C the smallest box enclosing both, rho the distance of the centres, c the diagonal of C. The
boxes are expected ordered (``x2 >= x1``, ``y2 >= y1``), not checked (a loss runs every step;
torchvision does not check either). Non-float32/64 boxes (float16, bfloat16, ints) are upcast
to float32, as torchvision; the loss is float32 or float64. ``reduction='mean'`` of no rows is
0 (connected to the graph), as torchvision.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .boxes import _iou_penalty
from .focal_loss import check_reduction, reduce_loss


def _loss_boxes(boxes1: Tensor, boxes2: Tensor, reduction: str, name: str) -> tuple[Tensor, Tensor]:
    """Validate the pair and upcast each to float32 unless float32/float64."""
    for boxes, arg in ((boxes1, "boxes1"), (boxes2, "boxes2")):
        if isinstance(boxes, Tensor) and boxes.dim() >= 1 and boxes.shape[-1] == 4:
            continue
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{name}: {arg} must be a Tensor[..., 4] of xyxy boxes, got {got}")
    try:
        torch.broadcast_shapes(boxes1.shape, boxes2.shape)
    except RuntimeError:
        raise ValueError(
            f"{name}: boxes1 {tuple(boxes1.shape)} and boxes2 {tuple(boxes2.shape)} must have matching rows"
        ) from None
    check_reduction(reduction)
    wide = (torch.float32, torch.float64)
    return tuple(b if b.dtype in wide else b.float() for b in (boxes1, boxes2))  # type: ignore[return-value]


def generalized_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - GIoU`` of matching rows ``boxes1, boxes2 (Tensor[..., 4])`` xyxy -> ``Tensor[...]``
    (or a scalar for ``reduction='mean' | 'sum'``)."""
    b1, b2 = _loss_boxes(boxes1, boxes2, reduction, "generalized_box_iou_loss")
    iou, penalty = _iou_penalty(b1, b2, "giou", iou_eps=eps, eps=eps)
    return reduce_loss(1 - iou + penalty, reduction, empty_mean_zero=True)


def distance_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - DIoU`` of matching rows ``boxes1, boxes2 (Tensor[..., 4])`` xyxy -> ``Tensor[...]``
    (or a scalar for ``reduction='mean' | 'sum'``)."""
    b1, b2 = _loss_boxes(boxes1, boxes2, reduction, "distance_box_iou_loss")
    iou, penalty = _iou_penalty(b1, b2, "diou", iou_eps=eps, eps=eps)
    return reduce_loss(1 - iou + penalty, reduction, empty_mean_zero=True)


def complete_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - CIoU`` of matching rows ``boxes1, boxes2 (Tensor[..., 4])`` xyxy -> ``Tensor[...]``
    (or a scalar for ``reduction='mean' | 'sum'``).

    Peer difference: torchvision's IoU inside this loss always uses ``eps=1e-7`` (its DIoU
    helper is called without ``eps``); here ``eps`` is used throughout. Equal at the default.
    """
    b1, b2 = _loss_boxes(boxes1, boxes2, reduction, "complete_box_iou_loss")
    iou, penalty = _iou_penalty(b1, b2, "ciou", iou_eps=eps, eps=eps)
    return reduce_loss(1 - iou + penalty, reduction, empty_mean_zero=True)
