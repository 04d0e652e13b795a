"""Region Proposal Network (Ren et al., Faster R-CNN, 2015).

Shape shorthand:
    B: images, L: feature levels, A: anchors per position, Hl, Wl: level l's map,
    R = sum_l Hl*Wl*A: anchors of one image, G: gt boxes of an image, P: proposals kept.

A 3x3 conv slides over every level; at each position two sibling 1x1 convs give, for each of
the k = A anchors, an objectness and 4 box deltas. Two forms of the objectness:
``objectness="sigmoid"`` (torchvision's: k logits, binary cross-entropy) or ``"softmax"``
(the paper's: 2k scores, a 2-way softmax per anchor; the object probability ranks proposals).
Proposals: decode deltas on anchors, per level keep the ``pre_nms_top_n`` best, clip, drop tiny
and low-scoring boxes, NMS per level, keep the ``post_nms_top_n`` best over all levels. Loss:
anchors matched to gts at IoU 0.7 / 0.3 (plus each gt's best anchors), 256 sampled per image
half positive, cross-entropy + smooth L1 (beta 1/9) over the sampled anchors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import (
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
    anchors_for_image,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then ``cls_logits`` (A or 2A channels) and ``bbox_pred`` (4A) 1x1 convs.

    Channel layout is anchor-major: channel ``a * C + c`` is class ``c`` of anchor ``a``.
    """

    def __init__(self, in_channels: int, num_anchors: int, objectness: str = "sigmoid") -> None:
        super().__init__()
        if objectness not in ("sigmoid", "softmax"):
            raise ValueError(f"objectness must be 'sigmoid' or 'softmax', got {objectness!r}")
        self.objectness = objectness
        self.num_anchors = num_anchors
        per_anchor = 1 if objectness == "sigmoid" else 2
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * per_anchor, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)  # type: ignore[arg-type]

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: logits ``(B, A*C, Hl, Wl)`` and deltas ``(B, A*4, Hl, Wl)``."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def flatten_levels(per_level: Sequence[Tensor], C: int) -> Tensor:
    """Per level ``(B, A*C, Hl, Wl)`` -> ``(B, R, C)`` ordered (level, y, x, anchor), as the anchors."""
    out = []
    for t in per_level:
        B, AC, H, W = t.shape
        t = t.view(B, AC // C, C, H, W).permute(0, 3, 4, 1, 2)  # (B, A, C, H, W) -> (B, H, W, A, C)
        out.append(t.reshape(B, -1, C))  # (B, H*W*A, C)
    return torch.cat(out, dim=1)


class RegionProposalNetwork(nn.Module):
    """Anchors + head + proposal selection + loss. See the module docstring.

    Args:
        head: an :class:`RPNHead` (its ``num_anchors`` must equal sizes x ratios per level).
        anchor_sizes, aspect_ratios: per level, e.g. ``((32,), (64,), ...)``, ``((0.5, 1, 2),) * 5``.
        pre_nms_top_n, post_nms_top_n: ``{"training": n, "testing": n}`` (pre is per level).
        nms_thresh, score_thresh, min_size: proposal selection.
        fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction: the loss's sampling.
    """

    def __init__(
        self,
        head: RPNHead,
        anchor_sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        pre_nms_top_n: dict[str, int] | None = None,
        post_nms_top_n: dict[str, int] | None = None,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        min_size: float = 1e-3,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
    ) -> None:
        super().__init__()
        if len(anchor_sizes) != len(aspect_ratios):
            raise ValueError(f"{len(anchor_sizes)} anchor size tuples but {len(aspect_ratios)} ratio tuples")
        per_level = {len(s) * len(r) for s, r in zip(anchor_sizes, aspect_ratios, strict=True)}
        if per_level != {head.num_anchors}:
            raise ValueError(
                f"head predicts {head.num_anchors} anchors per position, anchors give {per_level}"
            )
        self.head = head
        self.anchor_sizes = tuple(tuple(s) for s in anchor_sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self.post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh, self.score_thresh, self.min_size = nms_thresh, score_thresh, min_size
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        # Anchors depend only on the geometry: keep the last one (batches usually repeat it).
        self._anchor_key: tuple | None = None
        self._anchors: Tensor | None = None

    def anchors(
        self, padded_size: tuple[int, int], maps: Sequence[Tensor], dtype: torch.dtype | None = None
    ) -> Tensor:
        """All anchors ``(R, 4)`` of a padded batch whose feature maps are ``maps`` (their dtype
        unless ``dtype`` is given)."""
        sizes = tuple((m.shape[-2], m.shape[-1]) for m in maps)
        dtype = dtype or maps[0].dtype
        if torch.compiler.is_exporting():  # no cache: a traced tensor must not outlive the trace
            return anchors_for_image(
                padded_size, sizes, self.anchor_sizes, self.aspect_ratios, dtype=dtype, device=maps[0].device
            )
        key = (tuple(padded_size), sizes, dtype, maps[0].device)
        if self._anchors is None or key != self._anchor_key:
            self._anchors = anchors_for_image(
                padded_size, sizes, self.anchor_sizes, self.aspect_ratios, dtype=dtype,
                device=maps[0].device,
            )
            self._anchor_key = key
        return self._anchors

    def _mode(self) -> str:
        return "training" if self.training else "testing"

    def forward(
        self,
        features: dict[str, Tensor],
        padded_size: tuple[int, int],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
        """Proposals ``[P, 4]`` and their object probabilities ``[P]`` per image, and the losses.

        Losses (``loss_objectness``, ``loss_rpn_box_reg``) come whenever ``targets`` is given.
        """
        maps = list(features.values())
        logits, deltas = self.head(maps)
        C = 1 if self.head.objectness == "sigmoid" else 2
        # Box geometry in at least float32: under bf16 autocast the maps are bf16, whose 8-bit
        # mantissa would put anchors, proposals and regression targets on a 1-2 px grid.
        dtype = torch.promote_types(maps[0].dtype, torch.float32)
        anchors = self.anchors(padded_size, maps, dtype)  # (R, 4)
        per_level = [m.shape[-2] * m.shape[-1] * self.head.num_anchors for m in maps]
        pred_logits = flatten_levels(logits, C).to(dtype)  # (B, R, C)
        pred_deltas = flatten_levels(deltas, 4).to(dtype)  # (B, R, 4)
        if C == 1:
            object_logit = pred_logits[..., 0]  # (B, R)
        else:  # log-odds of the 2-way softmax: p(object) = sigmoid(s1 - s0)
            object_logit = pred_logits[..., 1] - pred_logits[..., 0]
        # Proposals do not backpropagate into the deltas (the paper's approximate joint training).
        boxes, scores = self._select(
            pred_deltas.detach(), object_logit.detach(), anchors, image_sizes, per_level
        )
        losses: dict[str, Tensor] = {}
        if targets is not None:
            losses = self._loss(anchors, pred_logits, pred_deltas, targets)
        return boxes, scores, losses

    def _select(
        self,
        deltas: Tensor,
        logit: Tensor,
        anchors: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Top-n per level, decode, clip, drop small / low boxes, NMS per (image, level), top-n.

        ``deltas (B, R, 4)``, ``logit (B, R)``, ``anchors (R, 4)``. Only the top-n candidates are
        decoded, and one NMS call serves the whole batch (each image's levels are its own classes).
        """
        B = deltas.shape[0]
        device = logit.device
        pre_n = self.pre_nms_top_n[self._mode()]
        top_idx, levels, offset = [], [], 0
        for level, ob in enumerate(logit.split(per_level, dim=1)):
            k = min(pre_n, ob.shape[1])
            top_idx.append(ob.topk(k, dim=1).indices + offset)  # (B, k)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=device))
            offset += ob.shape[1]
        idx = torch.cat(top_idx, dim=1)  # (B, K)
        K = idx.shape[1]
        rows = torch.arange(B, device=device)[:, None]
        probs = torch.sigmoid(logit[rows, idx])  # (B, K)
        candidates = self.box_coder.decode_single(
            deltas[rows, idx].reshape(-1, 4), anchors[idx.reshape(-1)]
        ).view(B, K, 4)  # (B*K, 4) -> (B, K, 4)
        candidates = torch.stack(
            [clip_boxes_to_image(c, size) for c, size in zip(candidates, image_sizes, strict=True)]
        )  # (B, K, 4)
        flat, probs = candidates.reshape(-1, 4), probs.reshape(-1)  # (B*K, 4), (B*K,)
        keep = remove_small_boxes(flat, self.min_size)
        keep = keep[probs[keep] >= self.score_thresh]
        # Class of a candidate: (image, level), so NMS never crosses images or levels.
        group = (rows * len(per_level) + torch.cat(levels)[None, :]).reshape(-1)[keep]  # (B*K,)
        kept = keep[batched_nms(flat[keep], probs[keep], group, self.nms_thresh)]  # by score
        image_of = torch.div(kept, K, rounding_mode="floor")
        post_n = self.post_nms_top_n[self._mode()]
        out_boxes, out_scores = [], []
        for i in range(B):
            mine = kept[image_of == i][:post_n]  # decreasing score, as a per-image NMS
            out_boxes.append(flat[mine])
            out_scores.append(probs[mine])
        return out_boxes, out_scores

    def _loss(
        self, anchors: Tensor, pred_logits: Tensor, pred_deltas: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        R = anchors.shape[0]
        labels: list[Tensor] = []  # per image (R,): 1 object, 0 background, -1 ignored
        matches: list[tuple[Tensor, Tensor] | None] = []  # per image: gt boxes, matched gt (R,)
        for target in targets:
            gt_boxes = target["boxes"].to(anchors)
            if gt_boxes.numel() == 0:  # an all-background image: every anchor is negative
                labels.append(torch.zeros(R, device=anchors.device))
                matches.append(None)
                continue
            matched = self.matcher(box_iou(gt_boxes, anchors))  # (R,)
            label = (matched >= 0).to(anchors.dtype)
            labels.append(label.masked_fill_(matched == Matcher.BETWEEN_THRESHOLDS, -1.0))
            matches.append((gt_boxes, matched))
        samples = self.sampler.sample_indices(labels)  # per image: sorted (pos, neg) into (R,)
        pos_idx = torch.cat([pos + i * R for i, (pos, _) in enumerate(samples)])  # into (B*R,)
        sampled = torch.cat([pos_idx, *(neg + i * R for i, (_, neg) in enumerate(samples))])
        all_labels = torch.cat(labels)  # (B*R,)
        # Regression targets of the sampled positives only (not of every anchor).
        pos_gt = []  # (P_i, 4) per image that has gts
        for match, (pos, _) in zip(matches, samples, strict=True):
            if match is not None:
                gt_boxes, matched = match
                pos_gt.append(gt_boxes[matched[pos]])
        gt_deltas = self.box_coder.encode_single(
            torch.cat(pos_gt) if pos_gt else anchors.new_zeros(0, 4), anchors[pos_idx % R]
        )
        logits = pred_logits.reshape(-1, pred_logits.shape[-1])  # (B, R, C) -> (B*R, C)
        box_loss = F.smooth_l1_loss(
            pred_deltas.reshape(-1, 4)[pos_idx], gt_deltas, beta=1 / 9, reduction="sum"
        ) / max(sampled.numel(), 1)
        if logits.shape[1] == 1:
            obj_loss = F.binary_cross_entropy_with_logits(logits[sampled, 0], all_labels[sampled])
        else:
            obj_loss = F.cross_entropy(logits[sampled], all_labels[sampled].long())
        return {"loss_objectness": obj_loss, "loss_rpn_box_reg": box_loss}
