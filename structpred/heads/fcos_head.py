"""FCOS head (Tian et al. 2019): per-pixel classes, (l, t, r, b) distances and centre-ness.

Shape shorthand:
    B: images, L: pyramid levels, D: the FPN width, Hl, Wl: level l's map,
    R = sum_l Hl*Wl: locations of one image (one "anchor" each), C: class logit channels,
    G: gt boxes of an image.

Two towers of ``num_convs`` x (3x3 conv, GroupNorm(32), ReLU) slide over every level with shared
weights. The classification tower ends in ``cls_logits`` (C channels, bias at the focal-loss
prior ``-log((1 - p) / p)``); the regression tower in ``bbox_reg`` (4 distances through a ReLU,
in units of the location's reference size) and ``bbox_ctrness`` (1 logit). Parameter names
are torchvision's ``FCOSHead``'s (``classification_head.conv.{0,1,3,4,...}``...), so its
weights load by identity.

Target assignment (:func:`match_locations`, torchvision's rules): a location is each level's
square reference box of side ``s_l`` (8, 16, 32, 64, 128 px on P3-P7) centred at
``(x * stride, y * stride)``. It may take gt box g when (1) its centre is within
``radius * s_l`` of g's centre in both axes (centre sampling), (2) it lies strictly inside g,
(3) its largest distance to g's sides is in ``(4 s_l, 8 s_l)`` (lower bound 0 on the first
level, no upper bound on the last: the scale ranges); among several, the smallest box wins.
Loss (:func:`fcos_loss`): sigmoid focal loss over every location and channel, GIoU loss of
the decoded boxes and binary cross-entropy of centre-ness
``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` over the matched locations, each
summed and divided by the number of matched locations (at least 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.box_coder import decode_linear, encode_linear
from ..ops.focal_loss import sigmoid_focal_loss
from ..ops.iou_loss import generalized_box_iou_loss
from .rpn import flatten_levels

NormFactory = Callable[[int], nn.Module]


def _tower(channels: int, num_convs: int, norm_layer: NormFactory | None) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, norm, ReLU), weights N(0, 0.01), bias 0 (Sequential indices
    0, 1, 3, 4, ... are the parameters, as torchvision)."""
    norm = norm_layer if norm_layer is not None else partial(nn.GroupNorm, 32)
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        conv = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        layers += [conv, norm(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FCOSClassificationHead(nn.Module):
    """The classification tower and ``cls_logits`` (``num_logits`` channels)."""

    def __init__(
        self,
        in_channels: int,
        num_logits: int,
        num_convs: int = 4,
        prior_probability: float = 0.01,
        norm_layer: NormFactory | None = None,
    ) -> None:
        super().__init__()
        self.num_logits = num_logits
        self.conv = _tower(in_channels, num_convs, norm_layer)
        self.cls_logits = nn.Conv2d(in_channels, num_logits, 3, padding=1)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))  # type: ignore[arg-type]

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """L maps ``[B, D, Hl, Wl]`` -> logits ``[B, R, C]`` (levels concatenated)."""
        # per level (B, C, Hl, Wl) -> (B, R, C), ordered (level, y, x)
        return flatten_levels([self.cls_logits(self.conv(f)) for f in features], self.num_logits)


class FCOSRegressionHead(nn.Module):
    """The regression tower, ``bbox_reg`` (4 distances, ReLU'd) and ``bbox_ctrness`` (1 logit)."""

    def __init__(self, in_channels: int, num_convs: int = 4, norm_layer: NormFactory | None = None) -> None:
        super().__init__()
        self.conv = _tower(in_channels, num_convs, norm_layer)
        self.bbox_reg = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bbox_ctrness = nn.Conv2d(in_channels, 1, 3, padding=1)
        for layer in (self.bbox_reg, self.bbox_ctrness):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)  # type: ignore[arg-type]

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """L maps ``[B, D, Hl, Wl]`` -> distances ``[B, R, 4]`` (>= 0) and centre-ness logits ``[B, R]``."""
        regs, ctrs = [], []
        for f in features:
            x = self.conv(f)
            regs.append(F.relu(self.bbox_reg(x)))
            ctrs.append(self.bbox_ctrness(x))
        # per level (B, 4, Hl, Wl) -> (B, R, 4) and (B, 1, Hl, Wl) -> (B, R, 1) -> (B, R)
        return flatten_levels(regs, 4), flatten_levels(ctrs, 1)[..., 0]


class FCOSHead(nn.Module):
    """Both towers; ``forward`` returns ``(cls_logits [B, R, C], bbox_regression [B, R, 4],
    bbox_ctrness [B, R])``. Towers are injected (None = the paper's: 4 convs, GroupNorm(32))."""

    def __init__(
        self,
        in_channels: int,
        num_logits: int,
        num_convs: int = 4,
        classification_head: nn.Module | None = None,
        regression_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.classification_head = classification_head or FCOSClassificationHead(
            in_channels, num_logits, num_convs
        )
        self.regression_head = regression_head or FCOSRegressionHead(in_channels, num_convs)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.classification_head(features)
        regression, ctrness = self.regression_head(features)
        return logits, regression, ctrness


# ------------------------------------------------------------------------- target assignment


def match_locations(
    references: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    radius: float = 1.5,
) -> Tensor:
    """The gt box each location is responsible for (see the module docstring), -1 for none.

    Args:
        references (Tensor[R, 4]): the locations' square reference boxes, levels concatenated.
        num_per_level: ``Hl*Wl`` per level (sums to R).
        gt_boxes (Tensor[G, 4]): xyxy, in the same (resized) pixels.
        radius: centre-sampling radius in reference sizes.
    Returns:
        int64 Tensor[R]: index into ``gt_boxes`` or -1.
    """
    R = references.shape[0]
    if gt_boxes.shape[0] == 0:
        return torch.full((R,), -1, dtype=torch.int64, device=references.device)
    centres = 0.5 * (references[:, :2] + references[:, 2:])  # (R, 2)
    sizes = references[:, 2] - references[:, 0]  # (R,)
    gt_centres = 0.5 * (gt_boxes[:, :2] + gt_boxes[:, 2:])  # (G, 2)
    # (R, 1, 2) - (1, G, 2) -> (R, G): Chebyshev distance of the centres, in pixels.
    near = (centres[:, None] - gt_centres[None]).abs().amax(2) < radius * sizes[:, None]
    x, y = centres[:, 0:1], centres[:, 1:2]  # (R, 1) each
    # (R, G, 4): distances to the left, top, right, bottom sides.
    sides = torch.stack([x - gt_boxes[:, 0], y - gt_boxes[:, 1], gt_boxes[:, 2] - x, gt_boxes[:, 3] - y], 2)
    inside = sides.amin(2) > 0
    lower = sizes * 4
    lower[: num_per_level[0]] = 0
    upper = sizes * 8
    upper[R - num_per_level[-1] :] = float("inf")
    reach = sides.amax(2)  # (R, G)
    ok = near & inside & (reach > lower[:, None]) & (reach < upper[:, None])
    # The smallest box wins. In float32, as torchvision: 1e8 - area is rounded to a multiple of 8
    # there, so boxes within a few px^2 of each other tie and the first one wins.
    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])  # (G,)
    score = ok.to(torch.float32) * (1e8 - areas[None, :])  # (R, G)
    best, matched = score.max(1)
    return torch.where(best < 1e-5, torch.full_like(matched, -1), matched)


def centreness(ltrb: Tensor) -> Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of distances ``[..., 4]`` -> ``[...]``."""
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]  # (..., 2) each
    return torch.sqrt((lr.amin(-1) / lr.amax(-1)) * (tb.amin(-1) / tb.amax(-1)))


def fcos_loss(
    cls_logits: Tensor,
    bbox_regression: Tensor,
    bbox_ctrness: Tensor,
    references: Tensor,
    gt_boxes: Sequence[Tensor],
    gt_channels: Sequence[Tensor],
    matched: Sequence[Tensor],
) -> dict[str, Tensor]:
    """FCOS's three losses, each summed over the batch and divided by max(1, matched locations).

    Args:
        cls_logits (Tensor[B, R, C]), bbox_regression (Tensor[B, R, 4]), bbox_ctrness (Tensor[B, R]):
            the head's outputs.
        references (Tensor[R, 4]): the locations' reference boxes (the same for every image).
        gt_boxes: per image ``Tensor[G, 4]``; gt_channels: per image int64 ``[G]``, the logit
            channel of each box's class; matched: per image int64 ``[R]`` from :func:`match_locations`.
    Returns:
        ``{"loss_classification", "loss_bbox_regression", "loss_bbox_ctrness"}``.
    """
    B, R, C = cls_logits.shape
    boxes_t, channels_t = [], []
    for boxes, channels, m in zip(gt_boxes, gt_channels, matched, strict=True):
        if boxes.shape[0] == 0:  # every location is background
            boxes_t.append(boxes.new_zeros(R, 4))
            channels_t.append(torch.full((R,), -1, dtype=torch.int64, device=boxes.device))
            continue
        idx = m.clamp(min=0)
        boxes_t.append(boxes[idx])
        channels_t.append(torch.where(m < 0, torch.full_like(m, -1), channels[idx]))
    gt = torch.stack(boxes_t)  # (B, R, 4)
    channel = torch.stack(channels_t)  # (B, R)
    fg = channel >= 0
    num_fg = fg.sum().clamp(min=1).to(cls_logits.dtype)

    onehot = torch.zeros_like(cls_logits)
    onehot[fg, channel[fg]] = 1.0
    loss_cls = sigmoid_focal_loss(cls_logits, onehot, reduction="sum")
    pred = decode_linear(bbox_regression, references)  # (B, R, 4) xyxy
    loss_box = generalized_box_iou_loss(pred[fg], gt[fg], reduction="sum")
    ctr_target = centreness(encode_linear(gt[fg], references.expand(B, R, 4)[fg]))  # (F,)
    loss_ctr = F.binary_cross_entropy_with_logits(bbox_ctrness[fg], ctr_target, reduction="sum")
    return {
        "loss_classification": loss_cls / num_fg,
        "loss_bbox_regression": loss_box / num_fg,
        "loss_bbox_ctrness": loss_ctr / num_fg,
    }
