"""YOLO v1's output layout, loss and decoding (Redmon, Divvala, Girshick, Farhadi, CVPR 2016).

Shape shorthand:
    N: images, S: grid cells per side, B: boxes per cell, C: object classes (background
    excluded), D = B*5 + C: values per cell, M: objects of an image, F: input features.

Layout. The image is divided into an ``S x S`` grid; the network outputs one tensor
``[N, S, S, D]`` (7x7x30 for VOC: S=7, B=2, C=20). Cell ``(row, col)`` holds, in this order,
``B`` boxes ``(x, y, sqrt(w), sqrt(h), confidence)`` then ``C`` class probabilities
``Pr(class | object)``. ``x, y`` are the box centre's offset inside the cell (0..1 across it);
``w, h`` are relative to the whole image (0..1). As in the paper the network predicts the
*square roots* of ``w`` and ``h`` ("to partially reflect that small deviations in large boxes
matter less than in small boxes"); a box's width is the prediction squared. Every output is
linear (the paper's last layer has no activation).

Loss (paper eq. 3), summed over the image and averaged over the N images of the batch::

    l_coord sum_ij 1obj_ij [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
  + sum_ij 1obj_ij (c_ij - IoU_ij)^2 + l_noobj sum_ij (1 - 1obj_ij) c_ij^2
  + sum_i 1obj_i sum_c (p_i(c) - p^_i(c))^2,      l_coord = 5, l_noobj = 0.5

* ``1obj_i``: an object's centre falls in cell ``i`` (``col = floor(cx * S)``, ``row =
  floor(cy * S)`` in image-relative coordinates, clamped to ``S - 1``: a centre exactly on a
  border belongs to the cell right of / below it).
* ``1obj_ij``: predictor ``j`` of cell ``i`` is *responsible* for that object: the one of the
  cell's B whose predicted box has the highest IoU with the truth. Rule where the paper is
  silent (as darknet's ``detection_layer``): if every predictor's IoU is 0 (early training),
  the one whose ``(cx, cy, w, h)`` is nearest the truth's (squared error, image-relative)
  is responsible; exact ties go to the lower index.
* Confidence target ("Pr(Object) * IOU"): the IoU of the responsible predictor's box with the
  truth, detached (a target, not a path for gradients); every other predictor, including the
  non-responsible ones of an object's cell, has target 0 with weight ``l_noobj``.
* **Two object centres in one cell** (the paper is silent; one cell predicts one class): the
  object listed first in the target keeps the cell, later ones in that cell are ignored (no
  term at all), as darknet's ``fill_truth_region``. This is YOLO v1's capacity limit:
  ``S * S`` objects per image at most, one per cell.
* The losses are returned as four terms (``loss_box``: both coordinate terms,
  ``loss_object``, ``loss_noobject``, ``loss_class``) whose sum is the paper's loss.

Decoding (paper §2, test time): class-specific confidence ``Pr(class | object) * confidence``
for every box and class, each clamped to ``[0, 1]`` first (the outputs are linear: two
negative values must not make a positive score); boxes decoded to the input image's pixels
and clipped to it; scores ``> score_thresh`` kept, boxes under 0.01 px dropped, per-class NMS
(:func:`~structpred.ops.batched_nms`), best ``detections_per_img``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..ops.boxes import clip_boxes_to_image, remove_small_boxes
from ..ops.nms import batched_nms

LOSS_KEYS = ("loss_box", "loss_object", "loss_noobject", "loss_class")


def split_output(out: Tensor, boxes_per_cell: int) -> tuple[Tensor, Tensor, Tensor]:
    """``out [N, S, S, B*5 + C]`` -> ``(boxes [N, S, S, B, 4] (x, y, sqrt w, sqrt h), confidence
    [N, S, S, B], class probabilities [N, S, S, C])``."""
    N, S, S2, D = out.shape
    B = boxes_per_cell
    per_box = out[..., : B * 5].reshape(N, S, S2, B, 5)  # (N, S, S, B*5) -> (N, S, S, B, 5)
    return per_box[..., :4], per_box[..., 4], out[..., B * 5 :]


def cell_boxes_to_xyxy(boxes: Tensor) -> Tensor:
    """``boxes [N, S, S, B, 4]`` as predicted (cell offsets, square roots) -> image-relative xyxy
    ``[N, S, S, B, 4]`` (0..1 across the image)."""
    S = boxes.shape[1]
    steps = torch.arange(S, dtype=boxes.dtype, device=boxes.device)
    cx = (boxes[..., 0] + steps[None, None, :, None]) / S  # the column index runs along dim 2
    cy = (boxes[..., 1] + steps[None, :, None, None]) / S  # the row index along dim 1
    w, h = boxes[..., 2] ** 2, boxes[..., 3] ** 2
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of xyxy boxes ``a [..., 4]`` and ``b [..., 4]`` element by element -> ``[...]``
    (0 where the union is empty)."""
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = w * h
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (
        b[..., 3] - b[..., 1]
    )
    union = union - inter
    return torch.where(
        union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter)
    )


def cell_of(boxes: Tensor, grid_size: int) -> tuple[Tensor, Tensor]:
    """``(row, col)`` int64 ``[M]`` of the cell holding each image-relative xyxy box's centre."""
    S = grid_size
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    col = (cx * S).floor().long().clamp(0, S - 1)
    row = (cy * S).floor().long().clamp(0, S - 1)
    return row, col


def grid_targets(
    boxes: Sequence[Tensor], labels: Sequence[Tensor], grid_size: int, num_classes: int, like: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-cell truth of N images (the first object of a cell keeps it; see the module docstring).

    Args:
        boxes: per image ``[M, 4]`` xyxy relative to the image (0..1); labels: int64 ``[M]`` 1..C.
        like: a tensor whose dtype and device the targets take.
    Returns:
        ``has_object bool[N, S, S]``, ``truth [N, S, S, 4]`` (image-relative xyxy),
        ``one_hot [N, S, S, C]``.
    """
    N, S, C = len(boxes), grid_size, num_classes
    has_object = torch.zeros(N, S, S, dtype=torch.bool, device=like.device)
    truth = like.new_zeros(N, S, S, 4)
    one_hot = like.new_zeros(N, S, S, C)
    for n, (gt, lab) in enumerate(zip(boxes, labels, strict=True)):
        if gt.shape[0] == 0:
            continue
        gt = gt.to(like)
        row, col = cell_of(gt, S)
        cell = row * S + col  # (M,)
        earlier = torch.tril(cell[:, None] == cell[None, :], diagonal=-1)  # (M, M): j < i, same cell
        first = ~earlier.any(1)  # (M,) the first object of its cell
        row, col, gt, lab = row[first], col[first], gt[first], lab[first].to(like.device)
        has_object[n, row, col] = True
        truth[n, row, col] = gt
        one_hot[n, row, col, lab - 1] = 1
    return has_object, truth, one_hot


def yolo_v1_loss(
    out: Tensor,
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor],
    boxes_per_cell: int,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
) -> dict[str, Tensor]:
    """The paper's sum-squared loss (module docstring), each term summed per image, mean over images.

    Args:
        out (Tensor[N, S, S, B*5 + C]): the network's output.
        boxes: per image ``[M, 4]`` xyxy relative to the image (0..1); labels: int64 ``[M]`` 1..C.
    Returns:
        ``{"loss_box", "loss_object", "loss_noobject", "loss_class"}``: scalars.
    """
    N, S, _, D = out.shape
    B = boxes_per_cell
    C = D - 5 * B
    pred_boxes, confidence, probs = split_output(out, B)
    has_object, truth, one_hot = grid_targets(boxes, labels, S, C, out)
    pred_xyxy = cell_boxes_to_xyxy(pred_boxes)  # (N, S, S, B, 4)
    gt_xyxy = truth[..., None, :].expand_as(pred_xyxy)
    iou = paired_iou(pred_xyxy.detach(), gt_xyxy)  # (N, S, S, B)
    # Responsible predictor: highest IoU; when all are 0, the nearest (cx, cy, w, h).
    centre_size = torch.cat(
        [(pred_xyxy[..., :2] + pred_xyxy[..., 2:]) / 2, pred_xyxy[..., 2:] - pred_xyxy[..., :2]], -1
    )
    gt_centre_size = torch.cat([(truth[..., :2] + truth[..., 2:]) / 2, truth[..., 2:] - truth[..., :2]], -1)
    sq_error = ((centre_size.detach() - gt_centre_size[..., None, :]) ** 2).sum(-1)  # (N, S, S, B)
    best = iou.amax(-1, keepdim=True) > 0
    key = torch.where(best, iou, -sq_error)
    responsible = nn.functional.one_hot(key.argmax(-1), B).bool() & has_object[..., None]  # (N, S, S, B)
    # Truth in the predicted parametrisation: offsets in the cell, square roots of w, h.
    steps = torch.arange(S, dtype=out.dtype, device=out.device)
    gx = gt_centre_size[..., 0] * S - steps[None, None, :]  # (N, S, S)
    gy = gt_centre_size[..., 1] * S - steps[None, :, None]
    gw, gh = gt_centre_size[..., 2].clamp(min=0).sqrt(), gt_centre_size[..., 3].clamp(min=0).sqrt()
    goal = torch.stack([gx, gy, gw, gh], -1)[..., None, :]  # (N, S, S, 1, 4)
    resp = responsible.to(out.dtype)
    coord = ((pred_boxes - goal) ** 2 * resp[..., None]).sum()
    obj = ((confidence - iou) ** 2 * resp).sum()
    noobj = (confidence**2 * (1 - resp)).sum()
    cls = ((probs - one_hot) ** 2 * has_object[..., None].to(out.dtype)).sum()
    return {
        "loss_box": lambda_coord * coord / N,
        "loss_object": obj / N,
        "loss_noobject": lambda_noobj * noobj / N,
        "loss_class": cls / N,
    }


def decode_yolo_v1(
    out: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    boxes_per_cell: int,
    score_thresh: float = 0.001,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> list[dict[str, Tensor]]:
    """Detections per image from ``out [N, S, S, B*5 + C]`` (module docstring, "Decoding").

    Args:
        image_sizes: ``(H, W)`` of each image the grid covers; boxes come in those pixels.
    Returns:
        per image ``{"boxes": [K, 4] xyxy, "scores": [K], "labels": int64[K] in 1..C}``.
    """
    N, S, _, D = out.shape
    B = boxes_per_cell
    C = D - 5 * B
    pred_boxes, confidence, probs = split_output(out, B)
    xyxy = cell_boxes_to_xyxy(pred_boxes)  # (N, S, S, B, 4)
    # Class-specific confidence, box fastest then class: (N, S, S, B, 1) * (N, S, S, 1, C).
    scores_all = confidence.clamp(0, 1)[..., None] * probs.clamp(0, 1)[..., None, :]  # (N, S, S, B, C)
    labels_one = torch.arange(1, C + 1, device=out.device).repeat(S * S * B)  # (S*S*B*C,)
    results = []
    for n, (H, W) in enumerate(image_sizes):
        scale = torch.tensor([W, H, W, H], dtype=out.dtype, device=out.device)
        boxes = clip_boxes_to_image(xyxy[n].reshape(-1, 4) * scale, (H, W))  # (S, S, B, 4) -> (S*S*B, 4)
        boxes = boxes[:, None, :].expand(-1, C, 4).reshape(-1, 4)  # (S*S*B, 4) -> (S*S*B*C, 4)
        scores = scores_all[n].reshape(-1)  # (S, S, B, C) -> (S*S*B*C,)
        keep = torch.where(scores > score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels_one[keep]
        keep = remove_small_boxes(boxes, 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results


class YOLOv1Head(nn.Module):
    """Features ``[N, F]`` (flattened) -> FC(hidden) -> leaky ReLU 0.1 -> dropout -> FC -> ``[N, S, S, D]``.

    The paper's two fully connected layers (4096 units, dropout 0.5 after the first). The last
    one, ``cell_predictor``, is linear and its size depends on S, B and C.
    """

    def __init__(
        self,
        in_features: int,
        grid_size: int = 7,
        boxes_per_cell: int = 2,
        num_classes: int = 20,
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        for name, value in (
            ("grid_size", grid_size),
            ("boxes_per_cell", boxes_per_cell),
            ("num_classes", num_classes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"YOLOv1Head: {name} must be an int >= 1, got {value!r}")
        self.grid_size, self.boxes_per_cell, self.num_classes = grid_size, boxes_per_cell, num_classes
        self.fc = nn.Linear(in_features, hidden)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.cell_predictor = nn.Linear(hidden, grid_size * grid_size * (boxes_per_cell * 5 + num_classes))

    def forward(self, features: Tensor) -> Tensor:
        """``features [N, ...]`` -> ``[N, S, S, B*5 + C]``."""
        S, D = self.grid_size, self.boxes_per_cell * 5 + self.num_classes
        x = self.dropout(self.act(self.fc(features.flatten(1))))  # (N, F) -> (N, hidden)
        return self.cell_predictor(x).reshape(-1, S, S, D)  # (N, S*S*D) -> (N, S, S, D)


class YOLOv1ConvHead(nn.Module):
    """*Not the paper's* (an ablation): the same ``[N, S, S, D]`` output from a convolutional head,
    ``3x3 conv(hidden) -> leaky ReLU 0.1 -> dropout -> 1x1 conv(D)`` on the ``[N, F', S, S]`` map,
    so every cell shares its weights (YOLO v2's change) instead of owning rows of an FC layer.
    The feature map's side must equal ``grid_size``."""

    def __init__(
        self,
        in_channels: int,
        grid_size: int = 7,
        boxes_per_cell: int = 2,
        num_classes: int = 20,
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.grid_size, self.boxes_per_cell, self.num_classes = grid_size, boxes_per_cell, num_classes
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.cell_predictor = nn.Conv2d(hidden, boxes_per_cell * 5 + num_classes, 1)

    def forward(self, features: Tensor) -> Tensor:
        """``features [N, F', S, S]`` -> ``[N, S, S, B*5 + C]``."""
        if features.shape[-2:] != (self.grid_size, self.grid_size):
            raise ValueError(
                f"YOLOv1ConvHead: the feature map must be {self.grid_size} x {self.grid_size} (the grid), "
                f"got {tuple(features.shape[-2:])}"
            )
        x = self.dropout(self.act(self.conv(features)))  # (N, hidden, S, S)
        return self.cell_predictor(x).permute(0, 2, 3, 1)  # (N, D, S, S) -> (N, S, S, D)


def output_size(grid_size: int, boxes_per_cell: int, num_classes: int) -> int:
    """Values the network outputs per image: ``S * S * (B*5 + C)`` (1470 for VOC)."""
    return grid_size * grid_size * (boxes_per_cell * 5 + num_classes)


def check_grid(input_size: int, grid_size: int, stride: int) -> int:
    """The feature map side ``input_size / stride``; ``ValueError`` unless the input divides into
    whole-pixel cells (``input_size % grid_size == 0``) and whole feature cells (``% stride``)."""
    if input_size % grid_size != 0:
        raise ValueError(
            f"YOLO v1: grid_size {grid_size} does not divide input_size {input_size} "
            f"(cells must be whole pixels; e.g. input_size {math.ceil(input_size / grid_size) * grid_size})"
        )
    if input_size % stride != 0:
        raise ValueError(
            f"YOLO v1: input_size {input_size} must be a multiple of the backbone's stride {stride}"
        )
    return input_size // stride
