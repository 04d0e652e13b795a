"""The modern YOLO's decoupled head, its box distributions (DFL) and its loss (YOLOv8's recipe).

Shape shorthand:
    B: images, L: levels (strides ``s_l``, finest first), ``H_l x W_l``: level l's map,
    A = sum_l H_l W_l anchor points (level by level, row-major within a level), K: object
    classes (labels 1..K), R: ``reg_max`` distribution bins, M: objects per image (padded).

Anchor-free: each map cell is one *anchor point*, its centre ``((j + 0.5) s, (i + 0.5) s)``
in pixels; it predicts K class logits and four distances (left, top, right, bottom) to the box
sides in units of its stride.

* **Decoupled** branches (YOLOX, Ge et al. 2021): per level, two 3x3 convs (``depth``) then a 1x1
  for the classes, and two other 3x3 convs then a 1x1 for the box: classification and localisation
  want different features, and sharing them slows convergence.
* **Distribution focal loss** (Generalized Focal Loss, Li et al. 2020): each distance is a
  softmax over the R bins ``0, 1, .., R - 1`` (strides) and decoded as its expectation; the
  DFL pushes the probability onto the two bins around the target ``y``: ``-((y_r - y) log p_l
  + (y - y_l) log p_r)``, so the distribution stays sharp near the true value.
* **Loss** (YOLOv8): targets from :func:`~structpred.heads.yolo_assign.task_aligned_assign`;
  ``loss_cls`` = BCE of every point's K logits against the soft targets, ``loss_box`` =
  ``1 - CIoU`` and ``loss_dfl`` on the positive points weighted by their target score; each
  divided by the sum of the target scores and scaled by the gains 0.5 / 7.5 / 1.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.conv import NormLayer, init_conv_norm
from ..layers.csp import YOLO_NORM, conv
from ..ops import batched_nms, clip_boxes_to_image
from ..ops.iou_loss import complete_box_iou_loss
from .yolo_assign import task_aligned_assign


def anchor_points(
    sizes: Sequence[tuple[int, int]], strides: Sequence[int], like: Tensor
) -> tuple[Tensor, Tensor]:
    """Cell centres of maps of ``sizes`` ``(H_l, W_l)``: ``points [A, 2]`` (x, y px), ``strides [A]``."""
    points, per_point = [], []
    for (H, W), s in zip(sizes, strides, strict=True):
        ys = (torch.arange(H, device=like.device, dtype=like.dtype) + 0.5) * s
        xs = (torch.arange(W, device=like.device, dtype=like.dtype) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
        points.append(torch.stack([gx, gy], -1).reshape(-1, 2))  # (H, W, 2) -> (H*W, 2)
        per_point.append(torch.full((H * W,), float(s), device=like.device, dtype=like.dtype))
    return torch.cat(points), torch.cat(per_point)


def dfl_decode(box_logits: Tensor, reg_max: int) -> Tensor:
    """Expected distances: ``box_logits [..., 4 R]`` -> ``[..., 4]`` (l, t, r, b) in bins (strides)."""
    z = box_logits.unflatten(-1, (4, reg_max))  # (..., 4R) -> (..., 4, R)
    # The softmax spelled out: torch's CPU kernel over a short last axis (R = 8..16) took 5x longer.
    e = (z - z.amax(-1, keepdim=True)).exp()  # (..., 4, R)
    bins = torch.arange(reg_max, device=box_logits.device, dtype=e.dtype)
    return (e * bins).sum(-1) / e.sum(-1)  # (..., 4); not a matmul, which autocast would run in bf16


def distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """``points [A, 2]`` and ``distances [..., A, 4]`` (l, t, r, b, px) -> xyxy ``[..., A, 4]``."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], -1)


def dfl_loss(box_logits: Tensor, target: Tensor, reg_max: int) -> Tensor:
    """Distribution focal loss per point: ``box_logits [P, 4 R]``, ``target [P, 4]`` (bins, clamped
    to ``[0, R - 1 - 0.01]``) -> ``[P]`` (mean over the four sides)."""
    target = target.clamp(0, reg_max - 1 - 0.01)
    left = target.floor().long()
    w_left = (left + 1).to(target.dtype) - target  # weight of the bin below
    logp = box_logits.unflatten(-1, (4, reg_max)).log_softmax(-1)  # (P, 4, R)
    lp = logp.gather(-1, left[..., None])[..., 0]  # (P, 4)
    rp = logp.gather(-1, (left + 1)[..., None])[..., 0]
    return -(lp * w_left + rp * (1 - w_left)).mean(-1)


class YOLOHead(nn.Module):
    """Decoupled per-level branches (see the module docstring).

    Args:
        in_channels: ``C_l`` of each level, finest first.
        strides: ``s_l`` of each level.
        num_classes: K.
        reg_max: R, bins per side.
        box_channels, cls_channels: widths of the branches (None: YOLOv8's ``max(16, C_1 / 4,
            4 R)`` and ``max(C_1, min(K, 100))``).
        prior_size: image side the classification bias prior assumes (YOLOv8: ~5 objects per
            image of 640 px, spread over every point of a level).
        norm_layer: the branches' norm (None: the YOLO BatchNorm).
        depth: 3x3 conv-norm-SiLU blocks per branch before the 1x1 predictor (YOLOv8: 2).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        reg_max: int = 16,
        box_channels: int | None = None,
        cls_channels: int | None = None,
        prior_size: int = 640,
        norm_layer: NormLayer | None = None,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides) or not strides:
            raise ValueError(f"YOLOHead: one stride per level, got {list(in_channels)} and {list(strides)}")
        if depth < 1:
            raise ValueError(f"YOLOHead: depth (3x3 convs per branch) must be >= 1, got {depth}")
        self.strides = [int(s) for s in strides]
        self.num_classes, self.reg_max = num_classes, reg_max
        cb = box_channels or max(16, in_channels[0] // 4, 4 * reg_max)
        cc = cls_channels or max(in_channels[0], min(num_classes, 100))
        norm = YOLO_NORM if norm_layer is None else norm_layer
        box_out = [nn.Conv2d(cb, 4 * reg_max, 1) for _ in in_channels]
        cls_out = [nn.Conv2d(cc, num_classes, 1, bias=False) for _ in in_channels]
        # The class biases of every level in one [L, K] tensor: one place for the prior (and one
        # parameter silences the detector, see tests/test_registry.py).
        prior = [math.log(5 / num_classes / (prior_size / s) ** 2) for s in self.strides]
        self.cls_bias = nn.Parameter(torch.tensor(prior)[:, None].repeat(1, num_classes))  # (L, K)

        def branch(c_in: int, width: int, out: nn.Conv2d) -> nn.Sequential:
            """``depth`` conv-norm-SiLU 3x3 blocks then the 1x1 predictor ``out`` (the last child)."""
            widths = [c_in] + [width] * depth
            blocks = [conv(a, b, 3, norm_layer=norm) for a, b in zip(widths, widths[1:], strict=False)]
            return nn.Sequential(*blocks, out)

        self.box = nn.ModuleList(branch(c, cb, out) for c, out in zip(in_channels, box_out, strict=True))
        self.cls = nn.ModuleList(branch(c, cc, out) for c, out in zip(in_channels, cls_out, strict=True))
        init_conv_norm(self)  # He init for the branches; the predictors start small (RetinaNet)
        for out in box_out + cls_out:
            nn.init.normal_(out.weight, std=0.01)
        for box in box_out:
            nn.init.constant_(box.bias, 1.0)  # type: ignore[arg-type]

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        """``L`` maps ``[B, C_l, H_l, W_l]`` -> ``cls_logits [B, A, K]``, ``box_logits [B, A, 4 R]``,
        the map sizes."""
        cls_out, box_out, sizes = [], [], []
        for x, box, cls, bias in zip(features, self.box, self.cls, self.cls_bias, strict=True):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            cls_out.append(cls(x).flatten(2) + bias[:, None])  # (B, K, H, W) -> (B, K, H*W)
            box_out.append(box(x).flatten(2))  # (B, 4R, H, W) -> (B, 4R, H*W)
        # (B, K, A) -> (B, A, K); (B, 4R, A) -> (B, A, 4R)
        cls_logits = torch.cat(cls_out, 2).transpose(1, 2).contiguous()
        box_logits = torch.cat(box_out, 2).transpose(1, 2).contiguous()  # a contiguous R axis: a fast softmax
        return cls_logits, box_logits, sizes

    def decode(self, box_logits: Tensor, points: Tensor, strides: Tensor) -> Tensor:
        """xyxy boxes in pixels: ``box_logits [B, A, 4 R]`` -> ``[B, A, 4]``."""
        return distances_to_boxes(points, dfl_decode(box_logits, self.reg_max) * strides[:, None])


def pad_targets(targets: Sequence[dict[str, Tensor]], like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Targets padded to the most objects ``M``: ``labels int64[B, M]``, ``boxes [B, M, 4]``,
    ``mask bool[B, M]``."""
    B, M = len(targets), max((int(t["boxes"].shape[0]) for t in targets), default=0)
    labels = torch.zeros(B, M, dtype=torch.long, device=like.device)
    boxes = like.new_zeros(B, M, 4)
    mask = torch.zeros(B, M, dtype=torch.bool, device=like.device)
    for b, t in enumerate(targets):
        n = int(t["boxes"].shape[0])
        labels[b, :n], boxes[b, :n], mask[b, :n] = t["labels"], t["boxes"].to(like.dtype), True
    return labels, boxes, mask


def yolo_loss(
    head: YOLOHead,
    cls_logits: Tensor,
    box_logits: Tensor,
    points: Tensor,
    strides: Tensor,
    targets: Sequence[dict[str, Tensor]],
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    gains: tuple[float, float, float] = (0.5, 7.5, 1.5),
) -> dict[str, Tensor]:
    """``loss_cls``, ``loss_box``, ``loss_dfl`` (see the module docstring); ``targets`` in the
    (resized) batch's pixels. Images without objects only add negatives to ``loss_cls``."""
    cls_logits, box_logits = cls_logits.float(), box_logits.float()
    pred_boxes = head.decode(box_logits, points, strides)  # (B, A, 4)
    gt_labels, gt_boxes, gt_mask = pad_targets(targets, pred_boxes)
    a = task_aligned_assign(
        cls_logits.detach().sigmoid(),
        pred_boxes.detach(),
        points,
        gt_labels,
        gt_boxes,
        gt_mask,
        topk,
        alpha,
        beta,
    )
    norm = a.scores.sum().clamp(min=1.0)
    loss_cls = F.binary_cross_entropy_with_logits(cls_logits, a.scores, reduction="sum") / norm
    weight = a.scores.sum(-1)[a.fg]  # (P,)
    fg_boxes, fg_targets = pred_boxes[a.fg], a.boxes[a.fg]  # (P, 4) each
    loss_box = (complete_box_iou_loss(fg_boxes, fg_targets, reduction="none") * weight).sum() / norm
    fg_points = points[None].expand_as(pred_boxes[..., :2])[a.fg]  # (P, 2)
    fg_strides = strides[None].expand_as(pred_boxes[..., 0])[a.fg][:, None]  # (P, 1)
    target_dist = torch.cat([fg_points - fg_targets[:, :2], fg_targets[:, 2:] - fg_points], 1) / fg_strides
    loss_dfl = (dfl_loss(box_logits[a.fg], target_dist, head.reg_max) * weight).sum() / norm
    g_cls, g_box, g_dfl = gains
    return {"loss_cls": g_cls * loss_cls, "loss_box": g_box * loss_box, "loss_dfl": g_dfl * loss_dfl}


def yolo_postprocess(
    cls_logits: Tensor,
    boxes: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    score_thresh: float = 0.001,
    nms_thresh: float = 0.7,
    detections_per_img: int = 100,
    pre_nms_top_n: int = 1000,
) -> list[dict[str, Tensor]]:
    """Per image ``{"boxes" [N, 4], "scores" [N], "labels" [N]}`` in the resized image's pixels.

    Every (point, class) pair is a candidate (multi-label, as YOLOv8): the best ``pre_nms_top_n``
    (a fixed count, so the exported graph's shapes follow the input's), those above
    ``score_thresh``, boxes clipped, class-wise NMS, the best ``detections_per_img``.
    """
    B, A, K = cls_logits.shape
    scores_all = cls_logits.float().sigmoid().flatten(1)  # (B, A, K) -> (B, A*K), class fastest
    out = []
    for scores, image_boxes, size in zip(scores_all, boxes.float(), image_sizes, strict=True):
        scores, idx = scores.topk(min(pre_nms_top_n, A * K))
        keep = torch.where(scores > score_thresh)[0]
        scores, idx = scores[keep], idx[keep]
        labels = idx % K + 1
        kept_boxes = clip_boxes_to_image(image_boxes[idx // K], size)
        keep = batched_nms(kept_boxes, scores, labels, nms_thresh)[:detections_per_img]
        out.append({"boxes": kept_boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return out
