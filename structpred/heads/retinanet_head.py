"""RetinaNet's heads and loss (Lin, Goyal, Girshick, He, Dollár, 2017: "Focal Loss for Dense
Object Detection").

Shape shorthand:
    B: images, L: levels, Hl, Wl: level l's map, A: anchors per position, C: FPN channels,
    R = sum_l Hl*Wl*A: anchors of an image, K: object classes (background excluded),
    G: gt boxes of an image, F: foreground anchors of the batch.

Two subnets slide over every pyramid level, weights shared across levels: a classification
tower (4 x 3x3 conv + ReLU, then a 3x3 conv to A*K sigmoid logits, bias ``-log((1-pi)/pi)``
so every anchor starts at probability ``pi = 0.01``) and a box tower (the same, to A*4
deltas). v2 (torchvision's ``retinanet_resnet50_fpn_v2``) puts GroupNorm(32) after each tower
conv. Channel ``a * K + c`` is class ``c`` (label ``c + 1``) of anchor ``a``.

Loss: each anchor takes its best gt at IoU >= 0.5, is background below 0.4, ignored in between
(plus each gt's best anchors: low-quality matches); sigmoid focal loss (alpha 0.25, gamma 2)
over every non-ignored anchor and class, summed and divided by the image's foreground count;
box loss over the foreground anchors, L1 on the encoded deltas (v1) or GIoU on the decoded
boxes (v2), also summed and divided by the image's foreground count; both averaged over images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers.conv import NormLayer
from ..ops import BoxCoder
from ..ops.focal_loss import sigmoid_focal_loss
from ..ops.iou_loss import generalized_box_iou_loss
from .one_stage import conv_tower, flatten_levels

BOX_LOSSES = ("l1", "smooth_l1", "giou")


class RetinaNetClassificationHead(nn.Module):
    """``conv`` tower + ``cls_logits`` (A*K channels); names as torchvision's."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        prior_probability: float = 0.01,
        norm_layer: NormLayer | None = None,
        num_convs: int = 4,
    ) -> None:
        super().__init__()
        if not 0.0 < prior_probability < 1.0:
            raise ValueError(f"prior_probability must be in (0, 1), got {prior_probability}")
        self.conv = conv_tower(in_channels, num_convs, norm_layer)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))  # type: ignore[arg-type]
        self.num_anchors, self.num_classes = num_anchors, num_classes

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        """Maps ``(B, C, Hl, Wl)`` per level -> logits ``(B, R, K)``."""
        return flatten_levels([self.cls_logits(self.conv(x)) for x in maps], self.num_classes)


class RetinaNetRegressionHead(nn.Module):
    """``conv`` tower + ``bbox_reg`` (A*4 channels); names as torchvision's."""

    def __init__(
        self, in_channels: int, num_anchors: int, norm_layer: NormLayer | None = None, num_convs: int = 4
    ) -> None:
        super().__init__()
        self.conv = conv_tower(in_channels, num_convs, norm_layer)
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        nn.init.normal_(self.bbox_reg.weight, std=0.01)
        nn.init.zeros_(self.bbox_reg.bias)  # type: ignore[arg-type]
        self.num_anchors = num_anchors

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        """Maps ``(B, C, Hl, Wl)`` per level -> deltas ``(B, R, 4)``."""
        return flatten_levels([self.bbox_reg(self.conv(x)) for x in maps], 4)


class RetinaNetHead(nn.Module):
    """The two subnets: ``classification_head`` and ``regression_head``."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        norm_layer: NormLayer | None = None,
        prior_probability: float = 0.01,
        num_convs: int = 4,
    ) -> None:
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, prior_probability, norm_layer, num_convs
        )
        self.regression_head = RetinaNetRegressionHead(in_channels, num_anchors, norm_layer, num_convs)

    def forward(self, maps: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Per level ``(B, C, Hl, Wl)`` -> logits ``(B, R, K)``, deltas ``(B, R, 4)``."""
        return self.classification_head(maps), self.regression_head(maps)


def _per_image_mean(values: Tensor, image: Tensor, B: int, num_fg: Tensor) -> Tensor:
    """``sum_i (sum of values of image i) / max(1, F_i)`` averaged over B images."""
    sums = values.new_zeros(B).index_add(0, image, values)  # (F,) -> (B,)
    return (sums / num_fg.clamp(min=1).to(values)).sum() / B


def retinanet_loss(
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    matched: Tensor,
    targets: Sequence[dict[str, Tensor]],
    box_coder: BoxCoder,
    box_loss: str = "l1",
    label_offset: int = 1,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, Tensor]:
    """``loss_classification`` (focal) and ``loss_bbox_regression`` (see the module docstring).

    Args:
        logits (Tensor[B, R, K]), deltas (Tensor[B, R, 4]): the head's outputs.
        anchors (Tensor[R, 4]): the batch's anchors.
        matched (int64[B, R]): gt index per anchor, -1 background, -2 ignored.
        targets: per image ``boxes [G, 4]`` (resized-image pixels) and ``labels [G]`` (1..K).
        label_offset: label ``l`` is logit channel ``l - label_offset`` (1: K channels; 0:
            torchvision's layout, K + 1 channels, channel 0 never a target).
        box_loss: ``"l1"`` (deltas), ``"smooth_l1"`` (deltas, beta 1) or ``"giou"`` (decoded boxes).
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    B, R, K = logits.shape
    fg = matched >= 0  # (B, R)
    num_fg = fg.sum(1)  # (B,)
    # One gather per image: the matched gt's box and class of every anchor (background: gt 0).
    gt_boxes, gt_class = [], []
    for target, m in zip(targets, matched, strict=True):
        boxes, labels = target["boxes"].to(deltas), target["labels"]
        if boxes.shape[0] == 0:  # all background: placeholders, never read
            gt_boxes.append(deltas.new_zeros(R, 4))
            gt_class.append(torch.zeros(R, dtype=torch.int64, device=deltas.device))
            continue
        idx = m.clamp(min=0)
        gt_boxes.append(boxes[idx])
        gt_class.append(labels[idx] - label_offset)
    cls_target = torch.zeros_like(logits)  # (B, R, K)
    cls_target.scatter_(2, torch.stack(gt_class)[..., None], fg[..., None].to(logits))
    valid = (matched != -2)[..., None]  # (B, R, 1)
    focal = sigmoid_focal_loss(logits, cls_target, alpha=alpha, gamma=gamma, reduction="none")  # (B, R, K)
    per_image_cls = torch.where(valid, focal, 0.0).sum((1, 2))  # (B,)
    loss_cls = (per_image_cls / num_fg.clamp(min=1).to(logits)).sum() / B  # (B,) -> ()
    image, anchor = fg.nonzero(as_tuple=True)  # (F,) each
    pred = deltas[image, anchor]  # (F, 4)
    gt = torch.stack(gt_boxes)[image, anchor]  # (F, 4)
    ref = anchors[anchor]  # (F, 4)
    if box_loss == "giou":
        per_box = generalized_box_iou_loss(box_coder.decode_single(pred, ref), gt, reduction="none")  # (F,)
    else:
        diff = pred - box_coder.encode_single(gt, ref)  # (F, 4)
        if box_loss == "l1":
            per_box = diff.abs().sum(1)
        else:
            per_box = torch.where(diff.abs() < 1.0, 0.5 * diff**2, diff.abs() - 0.5).sum(1)
    loss_box = _per_image_mean(per_box, image, B, num_fg)
    return {"loss_classification": loss_cls, "loss_bbox_regression": loss_box}
