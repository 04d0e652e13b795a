"""Mask R-CNN's mask branch (He, Gkioxari, Dollár, Girshick, 2017) beside the Fast R-CNN box head.

Shape shorthand:
    B: images, S_i: sampled RoIs of image i, Q: positive RoIs (training) or detections
    (inference) of all images, K: object classes, K+1 with background, C: pooled channels,
    T: pooled cells (14), M = 2T: mask resolution (28), G_i: gt objects of image i.

Each RoI is pooled into ``C x T x T`` (RoIAlign, sampling ratio 2; RoIPool for the paper's
ablation), goes through four 3x3 conv + ReLU (``mask_head``), a 2x2 stride-2 transposed conv +
ReLU and a 1x1 conv to ``K+1`` mask logits of ``M x M`` (``mask_predictor``): one mask per
class, so masks do not compete between classes (the paper's decoupling of mask and class).

Training: the positive sampled RoIs of the box head; the gt mask of each RoI's matched object
is cropped and resized into the RoI (RoIAlign on the binary mask, adaptive sampling, as
torchvision's ``project_masks_on_boxes``) and ``loss_mask`` is the mean binary cross-entropy of
the RoI's *gt-class* logits against it. Inference: the detections' boxes are pooled and each
detection keeps the sigmoid of its predicted class's mask, ``[N, 1, M, M]``; pasting into the
image is the transform's job (:func:`structpred.ops.paste_masks_in_image`).

Module names follow torchvision's ``roi_heads.mask_head`` / ``roi_heads.mask_predictor`` (its
``mask_head.{i}.0.*`` are our ``mask_head.convs.{i}.*``), so its weights load by one rename.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import roi_align
from .roi_heads import BranchRoIHeads, PositiveRoIs


class MaskHead(nn.Module):
    """``convs``: 3x3 conv + ReLU per entry of ``layers``: ``(Q, C, T, T) -> (Q, layers[-1], T, T)``."""

    def __init__(self, in_channels: int, layers: Sequence[int] = (256,) * 4, dilation: int = 1) -> None:
        super().__init__()
        if len(layers) == 0:
            raise ValueError("the mask head needs at least one conv layer")
        widths = [in_channels, *layers]
        convs = [
            nn.Conv2d(a, b, 3, padding=dilation, dilation=dilation)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        ]
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x), inplace=True)  # in place on the fresh conv output: no extra copy
        return x


class MaskPredictor(nn.Module):
    """``conv5_mask`` (2x2 stride-2 transposed conv) + ReLU, ``mask_fcn_logits`` (1x1 conv):
    ``(Q, C, T, T) -> (Q, K+1, 2T, 2T)`` logits."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x), inplace=True))


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, matched_gt: Tensor, size: int) -> Tensor:
    """Each box's gt mask, cropped to the box and resized to ``size x size`` (the mask targets).

    Args:
        gt_masks (Tensor[G, H, W]): an image's binary gt masks (any dtype).
        boxes (Tensor[Q, 4]): xyxy RoIs in the masks' pixels.
        matched_gt (int64[Q]): the gt object of each RoI.
    Returns:
        Tensor[Q, size, size] in [0, 1]: RoIAlign of the matched mask (``aligned=False``,
        adaptive sampling), as torchvision's ``project_masks_on_boxes``.
    """
    rois = torch.cat([matched_gt[:, None].to(boxes), boxes], dim=1)  # (Q, 5): gt index, box
    masks = gt_masks[:, None].to(boxes)  # (G, H, W) -> (G, 1, H, W)
    return roi_align(masks, rois, (size, size), 1.0)[:, 0]  # (Q, 1, M, M) -> (Q, M, M)


def mask_rcnn_loss(mask_logits: Tensor, labels: Tensor, mask_targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of each RoI's gt-class mask logits against its target.

    Args:
        mask_logits (Tensor[Q, K+1, M, M]), labels (int64[Q], 1..K), mask_targets (Tensor[Q, M, M]).
    Returns:
        a scalar; 0 (still connected to the logits) when ``Q = 0``.
    """
    if labels.numel() == 0:
        return mask_logits.sum() * 0.0
    picked = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]  # (Q, M, M)
    return F.binary_cross_entropy_with_logits(picked, mask_targets)


class MaskRoIHeads(BranchRoIHeads):
    """:class:`RoIHeads` (the box head) plus the mask branch; see the module docstring.

    Args:
        box_roi_pool, box_head, box_predictor: as in :class:`RoIHeads`.
        mask_roi_pool: the pooler of the mask branch (14 x 14 cells).
        mask_head: pooled ``(Q, C, T, T)`` -> features (:class:`MaskHead`).
        mask_predictor: features -> ``(Q, K+1, M, M)`` logits (:class:`MaskPredictor`).
        **box_settings: :class:`RoIHeads`' keyword settings (thresholds, sampling, NMS).
    """

    branch = "mask"

    def branch_loss(self, logits: Tensor, rois: PositiveRoIs, targets: Sequence[dict[str, Tensor]]) -> Tensor:
        """``loss_mask`` from the positive RoIs' ``logits (Q, K+1, M, M)`` (targets resized)."""
        size = logits.shape[-1]
        mask_targets = [
            project_masks_on_boxes(t["masks"], b, m, size)
            for t, b, m in zip(targets, rois.boxes, rois.matched_gt, strict=True)
            if m.numel()
        ]
        if not mask_targets:  # no positive RoI in the batch (e.g. all-background images)
            return logits.sum() * 0.0
        return mask_rcnn_loss(logits, torch.cat(rois.labels), torch.cat(mask_targets))

    def branch_outputs(
        self,
        detections: list[dict[str, Tensor]],
        logits: Tensor,
        boxes: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> None:
        """``masks [N, 1, M, M]``: the sigmoid of each detection's predicted class's mask."""
        labels = torch.cat([d["labels"] for d in detections])  # (Q,)
        # Only the predicted class's mask: (Q, K+1, M, M) -> (Q, 1, M, M)
        probs = logits[torch.arange(labels.shape[0], device=labels.device), labels][:, None].sigmoid()
        if len(detections) == 1:  # one image (and an exported program's only case): no split
            detections[0]["masks"] = probs
            return
        counts = [d["labels"].shape[0] for d in detections]  # sizes, not len(): symbolic when exported
        for d, p in zip(detections, probs.split(counts), strict=True):
            d["masks"] = p
