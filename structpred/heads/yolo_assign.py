"""Task-aligned label assignment (TOOD, Feng et al. 2021), as YOLOv6 / YOLOv8 use it.

Shape shorthand:
    B: images, A: anchor points (all levels, finest first), M: ground-truth boxes per image
    (padded; ``gt_mask`` marks the real ones), K: object classes (labels 1..K, 0 = background).

For every pair (object m, anchor point a) whose point lies strictly inside m's box, the
*alignment metric* ``t = s^alpha * u^beta`` combines the predicted probability ``s`` of m's
class at a and the IoU ``u`` of a's predicted box with m's box. Each object takes the ``topk``
points of largest ``t`` (ties: the lower anchor index; points outside the box never count); a
point claimed by several objects goes to the one its predicted box overlaps most (ties: the
lower object index). A positive point's classification target is not 1 but the normalised
metric ``t * max_u(m) / max_t(m)`` (maxima over m's positive points): a point whose prediction
is poorly aligned learns a low score, so the score ranks localisation quality too (TOOD §3.2).

Two differences from YOLOv8's implementation, both to make the rule exact and order-free: its
top-k runs over every point (out-of-box points, metric 0, can fill the k slots ahead of in-box
points of metric 0, depending on ``torch.topk``'s tie order), and its conflict rule compares an
anchor's IoU with *every* object it lies in, not only those that selected it. Here only in-box
points compete, and only the objects that selected a point compete for it.

Everything is batched tensor code (no loop over anchors or objects); it runs under ``no_grad``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Assignment(NamedTuple):
    """Per anchor targets: ``labels (int64[B, A])`` (0 = background), ``boxes (Tensor[B, A, 4])``
    (xyxy, the assigned object's; the first object's for background), ``scores (Tensor[B, A, K])``
    (soft one-hot), ``fg (bool[B, A])``, ``gt_index (int64[B, A])``."""

    labels: Tensor
    boxes: Tensor
    scores: Tensor
    fg: Tensor
    gt_index: Tensor


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-9) -> Tensor:
    """IoU of corresponding xyxy boxes, broadcast: ``[..., 4]`` x ``[..., 4]`` -> ``[...]``."""
    wh = (
        torch.minimum(boxes1[..., 2:], boxes2[..., 2:]) - torch.maximum(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    return inter / (area1 + area2 - inter + eps)


def points_in_boxes(points: Tensor, boxes: Tensor, eps: float = 1e-9) -> Tensor:
    """``points (Tensor[A, 2])`` strictly inside ``boxes (Tensor[B, M, 4])`` -> ``bool[B, M, A]``."""
    lt = points[None, None] - boxes[:, :, None, :2]  # (B, M, A, 2)
    rb = boxes[:, :, None, 2:] - points[None, None]  # (B, M, A, 2)
    return torch.cat([lt, rb], -1).amin(-1) > eps


@torch.no_grad()
def task_aligned_assign(
    pred_scores: Tensor,
    pred_boxes: Tensor,
    points: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> Assignment:
    """TOOD's assignment (see the module docstring).

    Args:
        pred_scores (Tensor[B, A, K]): class probabilities (after the sigmoid).
        pred_boxes (Tensor[B, A, 4]): predicted xyxy boxes, pixels.
        points (Tensor[A, 2]): anchor points (x, y), pixels.
        gt_labels (int64[B, M]): 1..K (padding: anything, masked by ``gt_mask``).
        gt_boxes (Tensor[B, M, 4]): xyxy, pixels.
        gt_mask (bool[B, M]): the real objects.
        topk: points taken per object; alpha, beta: exponents of the metric.
    """
    B, A, K = pred_scores.shape
    M = gt_boxes.shape[1]
    device = pred_scores.device
    if M == 0:
        return Assignment(
            torch.zeros(B, A, dtype=torch.long, device=device),
            pred_boxes.new_zeros(B, A, 4),
            pred_scores.new_zeros(B, A, K),
            torch.zeros(B, A, dtype=torch.bool, device=device),
            torch.zeros(B, A, dtype=torch.long, device=device),
        )
    valid = points_in_boxes(points, gt_boxes, eps) & gt_mask[:, :, None]  # (B, M, A)
    iou = aligned_box_iou(gt_boxes[:, :, None], pred_boxes[:, None]).clamp(min=0)  # (B, M, A)
    iou = torch.where(valid, iou, torch.zeros_like(iou))
    cls = (gt_labels - 1).clamp(0, K - 1)[:, :, None].expand(B, M, A)  # (B, M, A) class index
    score = pred_scores.transpose(1, 2).gather(1, cls)  # (B, K, A) -> (B, M, A)
    metric = torch.where(valid, score.pow(alpha) * iou.pow(beta), torch.zeros_like(iou))  # (B, M, A)

    # Top-k in-box points per object, ties to the lower anchor index (stable sort).
    key = torch.where(valid, metric, torch.full_like(metric, -1.0))
    order = key.argsort(dim=-1, descending=True, stable=True)[..., : min(topk, A)]  # (B, M, k)
    chosen = torch.zeros_like(valid).scatter_(-1, order, True)
    pos = chosen & valid  # (B, M, A)

    # A point chosen by several objects goes to the one it overlaps most (first on ties).
    best = torch.where(pos, iou, torch.full_like(iou, -1.0)).argmax(1)  # (B, A)
    pos = pos & (torch.arange(M, device=device)[None, :, None] == best[:, None, :])
    fg = pos.any(1)  # (B, A)
    gt_index = pos.to(torch.uint8).argmax(1)  # (B, A): the one positive object (0 if none)

    labels = gt_labels.gather(1, gt_index) * fg  # (B, A)
    boxes = gt_boxes.gather(1, gt_index[..., None].expand(B, A, 4))  # (B, A, 4)
    metric = metric * pos
    max_metric = metric.amax(-1, keepdim=True)  # (B, M, 1)
    max_iou = (iou * pos).amax(-1, keepdim=True)  # (B, M, 1)
    norm = (metric * max_iou / (max_metric + eps)).amax(1)  # (B, M, A) -> (B, A)
    one_hot = F.one_hot((labels - 1).clamp(min=0), K).to(pred_scores.dtype)  # (B, A, K)
    scores = one_hot * (fg.to(norm.dtype) * norm)[..., None]
    return Assignment(labels, boxes, scores, fg, gt_index)
