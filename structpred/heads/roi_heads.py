"""Fast R-CNN box head (Girshick, 2015) on pooled RoIs, as the second stage of Faster R-CNN.

Shape shorthand:
    B: images, P_i: proposals of image i, S: sampled RoIs of all images, K: object classes,
    K+1 with background (class 0), C, T: pooled channels and cell grid (T x T), D: head width.

Each proposal is pooled into fixed T x T cells (an injected pooler: RoIAlign over FPN levels,
RoIPool, SPP...), goes through two FC layers, then a softmax over K+1 classes and per-class box
deltas. Training: gts are added to the proposals, proposals matched at IoU 0.5, 512 sampled per
image (a quarter positive); loss = cross-entropy + smooth L1 (beta 1/9) on the true class's
deltas, divided by the number of sampled RoIs. Inference: softmax, per-class decode, clip, drop
background and scores <= ``score_thresh``, drop tiny boxes, class-wise NMS, best
``detections_per_img``. :class:`BranchRoIHeads` adds one per-RoI branch (Mask R-CNN's masks or
keypoints) on the same sample and detections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import (
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)

# (features by name, boxes per image, image sizes) -> Tensor[S, C, T, T]
Pooler = Callable[[dict[str, Tensor], list[Tensor], list[tuple[int, int]]], Tensor]


class PositiveRoIs(NamedTuple):
    """The positive RoIs of a sample, per image ``i`` (``Q_i`` of them)."""

    boxes: list[Tensor]  # (Q_i, 4) xyxy
    matched_gt: list[Tensor]  # (Q_i,) int64: index of the matched gt
    labels: list[Tensor]  # (Q_i,) int64: 1..K


class SampledRoIs(NamedTuple):
    """The RoIs drawn for the loss, per image ``i`` (``S_i`` of them, ``S`` in all)."""

    boxes: list[Tensor]  # (S_i, 4) xyxy, proposals and gts
    labels: list[Tensor]  # (S_i,) int64: 0 background, 1..K
    matched_gt: list[Tensor]  # (S_i,) int64: index of the matched gt (0 for background)
    gt_deltas: Tensor  # (S, 4) encoded regression targets, images concatenated

    def positives(self) -> PositiveRoIs:
        """The positive (object) RoIs of each image, in sample order."""
        keep = [torch.where(labels > 0)[0] for labels in self.labels]
        return PositiveRoIs(
            [b[k] for b, k in zip(self.boxes, keep, strict=True)],
            [m[k] for m, k in zip(self.matched_gt, keep, strict=True)],
            [lb[k] for lb, k in zip(self.labels, keep, strict=True)],
        )


class TwoMLPHead(nn.Module):
    """``fc6``, ``fc7`` with ReLU: pooled ``(S, C, T, T)`` -> ``(S, D)``."""

    def __init__(self, in_channels: int, representation_size: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (S, C, T, T) -> (S, C*T*T)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class FastRCNNPredictor(nn.Module):
    """``cls_score`` (K+1 logits) and ``bbox_pred`` (4 deltas per class, background included)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(S, D)`` -> logits ``(S, K+1)``, deltas ``(S, (K+1)*4)``."""
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(nn.Module):
    """Sampling, box head, loss and post-processing. See the module docstring.

    Args:
        box_roi_pool: the pooler (e.g. :class:`~structpred.layers.MultiScaleRoIAlign`).
        box_head: pooled features -> ``(S, D)``.
        box_predictor: ``(S, D)`` -> class logits and per-class deltas.
        matcher: proposals -> gts; None builds ``Matcher(fg_iou_thresh, bg_iou_thresh)``
            (Fast R-CNN injects one with the paper's [0.1, 0.5) background band).
    """

    def __init__(
        self,
        box_roi_pool: nn.Module | Pooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        matcher: Matcher | None = None,
    ) -> None:
        super().__init__()
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.matcher = matcher or Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img = detections_per_img

    def sample(self, proposals: list[Tensor], targets: Sequence[dict[str, Tensor]]) -> SampledRoIs:
        """Add the gts to the proposals, match them at the IoU thresholds and draw the RoIs."""
        labels, matched_idx, matched_boxes = [], [], []
        rois = [torch.cat([p, t["boxes"].to(p)]) for p, t in zip(proposals, targets, strict=True)]
        for roi, target in zip(rois, targets, strict=True):
            gt_boxes = target["boxes"].to(roi)
            if gt_boxes.numel() == 0:  # all background
                labels.append(torch.zeros(roi.shape[0], dtype=torch.int64, device=roi.device))
                matched_idx.append(torch.zeros(roi.shape[0], dtype=torch.int64, device=roi.device))
                matched_boxes.append(torch.zeros_like(roi))
                continue
            matched = self.matcher(box_iou(gt_boxes, roi))  # (P_i,)
            label = target["labels"].to(roi.device, torch.int64)[matched.clamp(min=0)]
            label[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
            label[matched == Matcher.BETWEEN_THRESHOLDS] = -1
            labels.append(label)
            matched_idx.append(matched.clamp(min=0))
            matched_boxes.append(gt_boxes[matched_idx[-1]])
        pos, neg = self.sampler(labels)
        keep = [torch.where(p | n)[0] for p, n in zip(pos, neg, strict=True)]
        rois = [r[k] for r, k in zip(rois, keep, strict=True)]
        labels = [lb[k] for lb, k in zip(labels, keep, strict=True)]
        matched_idx = [m[k] for m, k in zip(matched_idx, keep, strict=True)]
        gt = torch.cat([m[k] for m, k in zip(matched_boxes, keep, strict=True)])
        return SampledRoIs(rois, labels, matched_idx, self.box_coder.encode_single(gt, torch.cat(rois)))

    def _predict(
        self, features: dict[str, Tensor], rois: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        pooled = self.box_roi_pool(features, rois, image_sizes)  # (S, C, T, T)
        logits, deltas = self.box_predictor(self.box_head(pooled))
        # Scores and box deltas in at least float32 (bf16 under autocast is too coarse for boxes).
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return logits.to(dtype), deltas.to(dtype)

    def box_losses(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]],
    ) -> tuple[dict[str, Tensor], SampledRoIs]:
        """Fast R-CNN's losses on freshly sampled RoIs, and the sample (for heads built on it)."""
        sampled = self.sample(proposals, targets)
        logits, deltas = self._predict(features, sampled.boxes, image_sizes)
        return fast_rcnn_loss(logits, deltas, torch.cat(sampled.labels), sampled.gt_deltas), sampled

    def detect(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes", "scores", "labels"}`` in resized-image pixels (see :meth:`postprocess`)."""
        logits, deltas = self._predict(features, proposals, image_sizes)
        return self.postprocess(logits, deltas, proposals, image_sizes)

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        """Detections per image (None with ``predict=False``) and losses (whenever ``targets`` is given)."""
        losses: dict[str, Tensor] = {}
        if targets is not None:
            losses, _ = self.box_losses(features, proposals, image_sizes, targets)
        if not predict:
            return None, losses
        return self.detect(features, proposals, image_sizes), losses

    def postprocess(
        self, logits: Tensor, deltas: Tensor, proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes": [N, 4], "scores": [N], "labels": [N]}`` in resized-image pixels."""
        num_classes = logits.shape[-1]
        counts = [p.shape[0] for p in proposals]
        boxes_all = self.box_coder.decode_single(deltas, torch.cat(proposals))  # (S, (K+1)*4)
        boxes_all = boxes_all.reshape(-1, num_classes, 4)  # (S, K+1, 4)
        scores_all = F.softmax(logits, -1)  # (S, K+1)
        out = []
        for boxes, scores, size in zip(
            boxes_all.split(counts), scores_all.split(counts), image_sizes, strict=True
        ):
            boxes = clip_boxes_to_image(boxes, size)[:, 1:].reshape(-1, 4)  # drop background
            labels = torch.arange(1, num_classes, device=logits.device).repeat(scores.shape[0])
            scores = scores[:, 1:].reshape(-1)  # (P*K,), class fastest as boxes and labels
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return out


class BranchRoIHeads(RoIHeads):
    """:class:`RoIHeads` (the box head) plus one per-RoI branch beside it, Mask R-CNN's design
    (its masks, its keypoints): boxes pooled -> ``head`` -> ``predictor`` -> logits
    ``(Q, ., M, M)``. Training: over the positive RoIs of the box head's sample, the loss
    ``loss_{branch}`` (:meth:`branch_loss`); inference: over the detections' boxes, their outputs
    (:meth:`branch_outputs`).

    Args:
        box_roi_pool, box_head, box_predictor: as in :class:`RoIHeads`.
        roi_pool, head, predictor: the branch's pooler, conv head and predictor, kept as
            ``{branch}_roi_pool``, ``{branch}_head``, ``{branch}_predictor`` (torchvision's names).
        **box_settings: :class:`RoIHeads`' keyword settings (thresholds, sampling, NMS).
    """

    branch: ClassVar[str]  # "mask", "keypoint": names the modules and the loss

    def __init__(
        self,
        box_roi_pool: nn.Module | Pooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        roi_pool: nn.Module | Pooler,
        head: nn.Module,
        predictor: nn.Module,
        **box_settings: Any,
    ) -> None:
        super().__init__(box_roi_pool, box_head, box_predictor, **box_settings)
        setattr(self, f"{self.branch}_roi_pool", roi_pool)
        setattr(self, f"{self.branch}_head", head)
        setattr(self, f"{self.branch}_predictor", predictor)

    def branch_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> Tensor:
        """The branch's logits ``(Q, ., M, M)`` of the boxes of every image (image order)."""
        pooled = getattr(self, f"{self.branch}_roi_pool")(features, boxes, image_sizes)  # (Q, C, T, T)
        return getattr(self, f"{self.branch}_predictor")(getattr(self, f"{self.branch}_head")(pooled))

    def branch_loss(self, logits: Tensor, rois: PositiveRoIs, targets: Sequence[dict[str, Tensor]]) -> Tensor:
        """The branch's loss from the ``logits (Q, ., M, M)`` of the positive sampled ``rois`` and
        the (resized) ``targets``."""
        raise NotImplementedError(f"{type(self).__name__} must define branch_loss()")

    def branch_outputs(
        self,
        detections: list[dict[str, Tensor]],
        logits: Tensor,
        boxes: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> None:
        """Add the branch's outputs to ``detections`` (in place) from the ``logits (Q, ., M, M)`` of
        their ``boxes`` (in images of ``image_sizes``)."""
        raise NotImplementedError(f"{type(self).__name__} must define branch_outputs()")

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        """Detections with the branch's outputs (resized-image pixels; None with ``predict=False``)
        and the box losses + ``loss_{branch}`` (whenever ``targets`` are given)."""
        losses: dict[str, Tensor] = {}
        if targets is not None:
            losses, sampled = self.box_losses(features, proposals, image_sizes, targets)
            rois = sampled.positives()
            logits = self.branch_logits(features, rois.boxes, image_sizes)  # (Q, ., M, M)
            losses[f"loss_{self.branch}"] = self.branch_loss(logits, rois, targets)
        if not predict:
            return None, losses
        detections = self.detect(features, proposals, image_sizes)
        boxes = [d["boxes"] for d in detections]
        self.branch_outputs(detections, self.branch_logits(features, boxes, image_sizes), boxes, image_sizes)
        return detections, losses


def fast_rcnn_loss(logits: Tensor, deltas: Tensor, labels: Tensor, gt_deltas: Tensor) -> dict[str, Tensor]:
    """Fast R-CNN's multi-task loss over ``S`` sampled RoIs.

    Args:
        logits (Tensor[S, K+1]), deltas (Tensor[S, (K+1)*4]): predictions.
        labels (int64[S]): 0 background, 1..K; gt_deltas (Tensor[S, 4]): encoded targets.
    """
    loss_cls = F.cross_entropy(logits, labels)
    pos = torch.where(labels > 0)[0]
    per_class = deltas.reshape(deltas.shape[0], -1, 4)  # (S, (K+1)*4) -> (S, K+1, 4)
    box_loss = F.smooth_l1_loss(per_class[pos, labels[pos]], gt_deltas[pos], beta=1 / 9, reduction="sum")
    return {"loss_classifier": loss_cls, "loss_box_reg": box_loss / max(labels.numel(), 1)}
