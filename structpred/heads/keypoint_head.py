"""Mask R-CNN's keypoint branch (He, Gkioxari, Dollár, Girshick, 2017, §5 "human pose estimation").

Shape shorthand:
    B: images, S_i: sampled RoIs of image i, Q: positive RoIs (training) or detections
    (inference) of all images, K: keypoints per object (17 for COCO persons), C: pooled
    channels, T: pooled cells (14), D: head width (512), M = 4T: heatmap side (56).

"We model a keypoint's location as a one-hot mask, and adopt Mask R-CNN to predict K masks, one
for each of K keypoint types": each RoI is pooled into ``C x T x T`` (RoIAlign, sampling ratio 2),
goes through eight 3x3 conv + ReLU of width 512 (``keypoint_head``, the same conv stack as the
mask head's), a 4x4 stride-2 transposed conv to ``K`` maps of ``2T x 2T`` and a 2x bilinear
upsampling (``keypoint_predictor``): ``K`` heatmaps of ``M x M`` logits per RoI.

Training: the positive sampled RoIs of the box head (keypoints follow the RoI's matched gt);
each labelled keypoint inside its RoI has one target cell
(:func:`~structpred.ops.keypoints.keypoints_to_heatmap`) and ``loss_keypoint`` is the mean
cross-entropy "over an m^2-way softmax" of its heatmap, over all valid keypoints of the batch.
Inference: the detections' boxes are pooled, each heatmap's bicubic-resized argmax is the
keypoint and its logit the score (:func:`~structpred.ops.keypoints.heatmaps_to_keypoints`).

Module names follow torchvision's ``roi_heads.keypoint_head`` / ``roi_heads.keypoint_predictor``
(its ``keypoint_head.{2i}.*`` are our ``keypoint_head.convs.{i}.*``), so its weights load by one
rename. The heads depend on ``K`` (keypoints), never on the number of object classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.keypoints import heatmaps_to_keypoints, keypoints_to_heatmap
from .mask_head import MaskHead
from .roi_heads import BranchRoIHeads, PositiveRoIs


class KeypointHead(MaskHead):
    """``convs``: 3x3 conv + ReLU per entry of ``layers`` (the paper's eight of 512):
    ``(Q, C, T, T) -> (Q, layers[-1], T, T)``; the mask head's conv stack with other defaults."""

    def __init__(self, in_channels: int, layers: Sequence[int] = (512,) * 8) -> None:
        super().__init__(in_channels, layers)


class KeypointPredictor(nn.Module):
    """``kps_score_lowres`` (4x4 stride-2 transposed conv to K maps) then a bilinear upsampling
    by ``up_scale``: ``(Q, D, T, T) -> (Q, K, 2T * up_scale, 2T * up_scale)`` logits."""

    def __init__(self, in_channels: int, num_keypoints: int, up_scale: int = 2) -> None:
        super().__init__()
        self.kps_score_lowres = nn.ConvTranspose2d(in_channels, num_keypoints, 4, stride=2, padding=1)
        nn.init.kaiming_normal_(self.kps_score_lowres.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.kps_score_lowres.bias)  # type: ignore[arg-type]
        self.up_scale = up_scale
        self.num_keypoints = num_keypoints

    def forward(self, x: Tensor) -> Tensor:
        x = self.kps_score_lowres(x)  # (Q, D, T, T) -> (Q, K, 2T, 2T)
        return F.interpolate(  # (Q, K, 2T, 2T) -> (Q, K, M, M)
            x, scale_factor=float(self.up_scale), mode="bilinear", align_corners=False,
            recompute_scale_factor=False,
        )  # fmt: skip


def keypoint_rcnn_loss(keypoint_logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Mean cross-entropy over each valid keypoint's ``M^2`` heatmap cells.

    Args:
        keypoint_logits (Tensor[Q, K, M, M]): heatmap logits.
        targets (int64[Q, K]): the flat target cell ``y * M + x`` of each keypoint.
        valid (Tensor[Q, K]): nonzero where the keypoint is labelled and inside its RoI.
    Returns:
        a scalar; 0 (still connected to the logits) when no keypoint is valid.
    """
    Q, K, H, W = keypoint_logits.shape
    if H != W:
        raise ValueError(f"keypoint heatmaps must be square, got {H} x {W}")
    if targets.shape != (Q, K) or valid.shape != (Q, K):
        raise ValueError(
            f"targets and valid must be [{Q}, {K}], got {tuple(targets.shape)}, {tuple(valid.shape)}"
        )
    keep = torch.where(valid.reshape(-1) > 0)[0]  # (V,) valid keypoints of all RoIs
    if keep.numel() == 0:
        return keypoint_logits.sum() * 0.0
    flat = keypoint_logits.reshape(Q * K, H * W)  # (Q, K, M, M) -> (Q*K, M*M)
    return F.cross_entropy(flat[keep], targets.reshape(-1)[keep])


class KeypointRoIHeads(BranchRoIHeads):
    """:class:`RoIHeads` (the box head) plus the keypoint branch; see the module docstring.

    Args:
        box_roi_pool, box_head, box_predictor: as in :class:`RoIHeads`.
        keypoint_roi_pool: the pooler of the keypoint branch (14 x 14 cells).
        keypoint_head: pooled ``(Q, C, T, T)`` -> features (:class:`KeypointHead`).
        keypoint_predictor: features -> ``(Q, K, M, M)`` logits (:class:`KeypointPredictor`).
        **box_settings: :class:`RoIHeads`' keyword settings (thresholds, sampling, NMS).
    """

    branch = "keypoint"

    def branch_loss(self, logits: Tensor, rois: PositiveRoIs, targets: Sequence[dict[str, Tensor]]) -> Tensor:
        """``loss_keypoint`` from the positive RoIs' heatmap ``logits (Q, K, M, M)`` (targets resized)."""
        cells, valid = [], []
        for target, box, matched in zip(targets, rois.boxes, rois.matched_gt, strict=True):
            gt = target["keypoints"].to(box)[matched]  # (Q_i, K, 3): each RoI's gt keypoints
            c, v = keypoints_to_heatmap(gt, box, logits.shape[-1])
            cells.append(c)
            valid.append(v)
        return keypoint_rcnn_loss(logits, torch.cat(cells), torch.cat(valid))

    def branch_outputs(
        self,
        detections: list[dict[str, Tensor]],
        logits: Tensor,
        boxes: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> None:
        """``keypoints [N, K, 3]`` and ``keypoints_scores [N, K]`` (resized-image pixels)."""
        # The argmax and its bicubic resize in float32 (as torchvision; bf16 under autocast). The
        # largest image bounds every box (clipped to its image): torch.export's static form needs it.
        max_size = (max(h for h, _ in image_sizes), max(w for _, w in image_sizes))
        keypoints, scores = heatmaps_to_keypoints(logits.float(), torch.cat(boxes).float(), max_size)
        counts = [b.shape[0] for b in boxes]
        for d, kp, sc in zip(detections, keypoints.split(counts), scores.split(counts), strict=True):
            d["keypoints"], d["keypoints_scores"] = kp, sc
