"""Pieces shared by the dense one-stage detectors (RetinaNet, FCOS, ...).

Shape shorthand:
    B: images, L: feature levels, Hl, Wl: level l's map, A: anchors (or points) per position,
    Nl = Hl*Wl*A: anchors of level l, R = sum_l Nl: anchors of one image, K: object classes
    (background excluded), G: gt boxes of an image, k: candidates kept per level.

Convention: a head's classification output has K channels per anchor, channel ``c`` is label
``c + 1`` (labels 1..K, DESIGN.md §3); anchors and head outputs are ordered (level, y, x,
anchor) with the anchor fastest, the layout of :func:`flatten_levels` and
:func:`~structpred.ops.anchors.anchors_for_image`.

* :func:`conv_tower`: the 3x3 conv (+ norm) + ReLU stack in front of a dense predictor;
  :func:`check_norm_groups`: its GroupNorm setting checked at build.
* :class:`LevelAnchors`: the anchors of a padded batch, cached by geometry;
  :func:`level_maps`: a backbone's maps checked against them.
* :func:`match_anchors`: each anchor's gt index per image (``-1`` background, ``-2`` ignored).
* :func:`dense_detections`: the post-processing (per level: top-k candidates over anchors x
  classes, score threshold, decode; then clip, batched NMS over the levels, keep the best), the
  whole batch at once;
  :func:`sigmoid_prefilter`: its cheap threshold on logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..layers.conv import NormLayer
from ..ops import Matcher, anchors_for_image, batched_nms, box_iou
from .rpn import flatten_levels

__all__ = [
    "LevelAnchors",
    "check_norm_groups",
    "conv_tower",
    "dense_detections",
    "flatten_levels",
    "level_maps",
    "match_anchors",
    "sigmoid_prefilter",
]


def conv_tower(
    channels: int, num_convs: int = 4, norm_layer: NormLayer | None = None, std: float = 0.01
) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, optional norm, ReLU), ``channels`` in and out.

    Names ``{i}.0`` (conv, biased only without a norm), ``{i}.1`` (norm): torchvision's
    ``Conv2dNormActivation`` layout. Conv weights ~ N(0, std), biases 0 (RetinaNet's init).
    """
    blocks = []
    for _ in range(num_convs):
        conv = nn.Conv2d(channels, channels, 3, padding=1, bias=norm_layer is None)
        nn.init.normal_(conv.weight, std=std)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers: list[nn.Module] = [conv]
        if norm_layer is not None:
            layers.append(norm_layer(channels))
        layers.append(nn.ReLU(inplace=True))
        blocks.append(nn.Sequential(*layers))
    return nn.Sequential(*blocks)


def check_norm_groups(channels: int, norm_groups: int, where: str) -> None:
    """Raise a ``ValueError`` naming ``where`` unless GroupNorm(``norm_groups``) fits towers of
    ``channels``: the groups divide the channels and hold two channels or more (0: no norm).

    With one channel per group a 1 x 1 level (P7 of an image under 128 px) gives each group a
    single value, which torch's ``group_norm`` refuses at forward time ("Expected more than 1
    value per channel"), far from the setting that caused it.
    """
    if not norm_groups:
        return
    if channels % norm_groups:
        raise ValueError(f"{where}: norm_groups {norm_groups} must divide the {channels} backbone channels")
    if channels == norm_groups:
        raise ValueError(
            f"{where}: norm_groups {norm_groups} on {channels} channels leaves one channel per group, "
            "a single value per group on a 1x1 level (P7 of images under 128 px), where GroupNorm "
            f"fails; set fewer norm_groups (e.g. {max(channels // 4, 1)}) or more channels (fpn_channels)"
        )


class LevelAnchors:
    """Anchors of a padded batch over its feature levels, the last geometry cached.

    Args:
        sizes, aspect_ratios: per level, e.g. ``((32, 40, 50), ...)`` and ``((0.5, 1, 2),) * 5``.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]]) -> None:
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"{len(sizes)} anchor size tuples but {len(aspect_ratios)} ratio tuples")
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self._key: tuple | None = None
        self._anchors: Tensor | None = None

    @property
    def num_anchors(self) -> list[int]:
        """A per level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def __call__(
        self, padded_size: tuple[int, int], maps: Sequence[Tensor], dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """All anchors ``(R, 4)`` (xyxy, padded-image pixels) of a batch with feature ``maps``."""
        sizes = tuple((int(m.shape[-2]), int(m.shape[-1])) for m in maps)
        device = maps[0].device
        if torch.compiler.is_exporting():  # no cache: a traced tensor must not outlive the trace
            return anchors_for_image(padded_size, sizes, self.sizes, self.aspect_ratios, dtype, device)
        key = (tuple(padded_size), sizes, dtype, device)
        if self._anchors is None or key != self._key:
            self._anchors = anchors_for_image(
                padded_size, sizes, self.sizes, self.aspect_ratios, dtype, device
            )
            self._key = key
        return self._anchors


def level_maps(features: dict[str, Tensor] | Tensor, anchors: LevelAnchors, where: str) -> list[Tensor]:
    """A backbone's maps as a list (finest first; a lone map is one level), one per anchor level.

    Raises ``ValueError`` naming ``where`` (the model) when the counts differ.
    """
    maps = [features] if isinstance(features, Tensor) else list(features.values())
    L = len(anchors.sizes)
    if len(maps) != L:
        raise ValueError(f"{where}: the backbone gives {len(maps)} maps but anchors are set for {L} levels")
    return maps


def match_anchors(anchors: Tensor, targets: Sequence[dict[str, Tensor]], matcher: Matcher) -> Tensor:
    """Each anchor's matched gt per image, ``int64[B, R]``: ``0..G-1``, ``-1`` background,
    ``-2`` ignored (between the thresholds). Images without boxes are all background."""
    out = []
    for target in targets:
        gt = target["boxes"].to(anchors)
        if gt.shape[0] == 0:
            out.append(torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device))
        else:
            out.append(matcher(box_iou(gt, anchors)))  # (G, R) -> (R,)
    return torch.stack(out)


def sigmoid_prefilter(score_thresh: float) -> float | None:
    """A logit at or below which ``sigmoid(logit) > score_thresh`` cannot hold, float rounding
    allowed for (a 1e-3 margin), for :func:`dense_detections`; None outside ``[1e-6, 0.999]``."""
    if not 1e-6 <= score_thresh <= 0.999:
        return None
    return math.log(score_thresh / (1.0 - score_thresh)) - 1e-3


def _ties_by_index(top: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """``top`` (decreasing) and ``idx`` with equal scores reordered by increasing ``idx``
    (``topk`` leaves them in any order)."""
    idx, by_index = idx.sort(dim=-1)
    top = top.gather(-1, by_index)
    by_score = top.sort(dim=-1, descending=True, stable=True).indices
    return top.gather(-1, by_score), idx.gather(-1, by_score)


def _level_candidates(level_scores: Tensor, k: int, prefilter: float | None) -> list[tuple[Tensor, Tensor]]:
    """Per image the ``k`` best scores of ``(B, Nl, K)`` and their flat ``anchor * K + class``
    index, by decreasing score, ties by index."""
    B, N, K = level_scores.shape
    if torch.compiler.is_exporting():  # shapes known before the data; ONNX has no stable sort
        top, idx = level_scores.reshape(B, N * K).topk(min(k, N * K), dim=1)  # (B, Nl*K) -> (B, k)
        return list(zip(top.unbind(0), idx.unbind(0), strict=True))
    if prefilter is None:
        top, idx = _ties_by_index(*level_scores.reshape(B, N * K).topk(min(k, N * K), dim=1))
        return list(zip(top.unbind(0), idx.unbind(0), strict=True))
    out = []
    for s in level_scores:  # (Nl, K); may be a strided view (no copy of the whole level)
        mask = s > prefilter  # (Nl, K)
        vals = s[mask]  # (M,) in flat order
        idx = mask.flatten().nonzero()[:, 0]  # (M,) increasing flat indices
        top, pos = _ties_by_index(*vals.topk(min(k, idx.numel())))  # pos order = idx order
        out.append((top, idx[pos]))
    return out


def dense_detections(
    scores: Sequence[Tensor],
    regression: Sequence[Tensor],
    anchors: Sequence[Tensor],
    decode: Callable[[Tensor, Tensor], Tensor],
    image_sizes: Sequence[tuple[int, int]],
    *,
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    detections_per_img: int,
    activation: Callable[[Tensor], Tensor] | None = None,
    prefilter: float | None = None,
) -> list[dict[str, Tensor]]:
    """Detections of a dense head, torchvision's one-stage post-processing.

    Per image and level: the ``topk_candidates`` best (anchor, class) scores ``> score_thresh``,
    their boxes decoded; then over all levels boxes clipped to the image, NMS per class
    (``nms_thresh``), the ``detections_per_img`` best kept.

    Args:
        scores: per level ``(B, Nl, K)``: probabilities, or logits with ``activation`` (any
            increasing map to probabilities, e.g. ``torch.sigmoid``: applied to the candidates
            only).
        regression: per level ``(B, Nl, 4)`` box regression.
        anchors: per level ``(Nl, 4)`` reference boxes (shared by the batch).
        decode: ``(regression [M, 4], anchors [M, 4]) -> boxes [M, 4]`` xyxy.
        image_sizes: ``(H, W)`` per image, the boxes' clipping bounds.
        prefilter: with ``activation``, a value of ``scores`` at or below which the activated
            score cannot pass ``score_thresh`` (e.g. :func:`sigmoid_prefilter`): those are dropped
            before the top-k. Without ``activation`` it is ``score_thresh`` itself.
    Returns:
        Per image ``{"boxes": [D, 4], "scores": [D], "labels": [D]}`` (labels 1..K), by
        decreasing score; equal scores in (level, anchor, class) order (torchvision leaves
        their order to ``topk``, so exactly tied scores may come out in another order there).

    The prefilter then top-k keeps the same candidates as torchvision's threshold-then-top-k:
    what it lets through beyond the threshold ranks below every survivor and is dropped by the
    exact threshold after the activation. Under ``torch.export`` the top-k of all scores is taken
    instead (the same candidates: the top-k of the survivors are the survivors among the top-k),
    with a shape known before the data.

    Eager, with a prefilter, the whole batch is done at once (:func:`_batched`: one pass per level,
    one NMS call with the images as categories); under export, or without a prefilter, image by
    image (:func:`_per_image`). Both give the same detections (scores and boxes may differ in the
    last bit: the activation and decoding run on other sets of elements); only when several
    candidates tie for a level's k-th place may they keep another of them (``topk``'s choice).
    """
    if activation is None and prefilter is None:
        prefilter = score_thresh
    settings = (score_thresh, topk_candidates, nms_thresh, detections_per_img, activation)
    if prefilter is None or torch.compiler.is_exporting():
        return _per_image(scores, regression, anchors, decode, image_sizes, prefilter, *settings)
    return _batched(scores, regression, anchors, decode, image_sizes, prefilter, *settings)


def _per_image(
    scores: Sequence[Tensor],
    regression: Sequence[Tensor],
    anchors: Sequence[Tensor],
    decode: Callable[[Tensor, Tensor], Tensor],
    image_sizes: Sequence[tuple[int, int]],
    prefilter: float | None,
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    detections_per_img: int,
    activation: Callable[[Tensor], Tensor] | None,
) -> list[dict[str, Tensor]]:
    """:func:`dense_detections` image by image and level by level: under ``torch.export`` (shapes
    known before the data) and without a prefilter (the top-k of every anchor x class)."""
    B = len(image_sizes)
    per_image: list[tuple[list[Tensor], list[Tensor], list[Tensor]]] = [([], [], []) for _ in range(B)]
    for level_scores, level_reg, level_anchors in zip(scores, regression, anchors, strict=True):
        K = level_scores.shape[-1]
        candidates = _level_candidates(level_scores, topk_candidates, prefilter)
        for (image_boxes, image_scores, image_labels), reg, (top, idx) in zip(
            per_image, level_reg, candidates, strict=True
        ):
            anchor = torch.div(idx, K, rounding_mode="floor")  # (k,)
            image_boxes.append(decode(reg[anchor], level_anchors[anchor]))  # (k, 4)
            image_scores.append(activation(top) if activation is not None else top)
            image_labels.append(idx % K + 1)
    out = []
    for (boxes_l, scores_l, labels_l), (h, w) in zip(per_image, image_sizes, strict=True):
        boxes = torch.cat(boxes_l)  # (C, 4), C candidates over the levels
        bounds = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum(boxes.clamp(min=0), bounds)  # x in [0, W], y in [0, H]
        s, lab = torch.cat(scores_l), torch.cat(labels_l)
        keep = torch.where(s > score_thresh)[0]
        b, s, lab = boxes[keep], s[keep], lab[keep]
        kept = batched_nms(b, s, lab, nms_thresh)[:detections_per_img]
        out.append({"boxes": b[kept], "scores": s[kept], "labels": lab[kept]})
    return out


def _batched(
    scores: Sequence[Tensor],
    regression: Sequence[Tensor],
    anchors: Sequence[Tensor],
    decode: Callable[[Tensor, Tensor], Tensor],
    image_sizes: Sequence[tuple[int, int]],
    prefilter: float,
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    detections_per_img: int,
    activation: Callable[[Tensor], Tensor] | None,
) -> list[dict[str, Tensor]]:
    """:func:`dense_detections` for the whole batch at once: the same detections as
    :func:`_per_image` (one NMS call, images kept apart by their category offsets), without its
    loop over images x levels (a few dozen small ops each)."""
    B, L, K = len(image_sizes), len(scores), scores[0].shape[-1]
    device = scores[0].device
    offsets = [0]
    for level_scores in scores:
        offsets.append(offsets[-1] + level_scores.shape[1])
    values, image, anchor, label, group = [], [], [], [], []
    for level, level_scores in enumerate(scores):  # (B, Nl, K)
        mask = level_scores > prefilter
        values.append(level_scores[mask])  # (M_l,) in (image, anchor, class) order
        b, a, c = mask.nonzero().unbind(1)  # (M_l,) each
        image.append(b)
        anchor.append(a + offsets[level])  # index into the R anchors of an image
        label.append(c + 1)
        group.append(b * L + level)
    top, b, a, lab, g = (torch.cat(t) for t in (values, image, anchor, label, group))  # (M,)
    counts = torch.bincount(g, minlength=B * L)  # candidates per (image, level)
    if g.numel() and int(counts.max()) > topk_candidates:  # rank them: the best k of each
        # per (image, level) by decreasing score, equal scores in index order (two stable sorts)
        order = torch.sort(top, descending=True, stable=True).indices
        order = order[torch.sort(g[order], stable=True).indices]
        top, b, a, lab, g = top[order], b[order], a[order], lab[order], g[order]
        rank = torch.arange(g.numel(), device=device) - (counts.cumsum(0) - counts)[g]
        top, b, a, lab = (
            top[rank < topk_candidates],
            b[rank < topk_candidates],
            a[rank < topk_candidates],
            lab[rank < topk_candidates],
        )
    # the order within an image, (level, index) or (level, score, index), gives NMS the same
    # ties: it takes boxes by decreasing score, equal scores in (level, index) order either way
    s = activation(top) if activation is not None else top
    keep = torch.where(s > score_thresh)[0]
    s, b, a, lab = s[keep], b[keep], a[keep], lab[keep]
    reg = torch.cat(list(regression), 1)  # L x (B, Nl, 4) -> (B, R, 4)
    boxes = decode(reg[b, a], torch.cat(list(anchors), 0)[a])  # (M', 4)
    bounds = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=boxes.dtype, device=device)
    boxes = torch.minimum(boxes.clamp(min=0), bounds[b])  # x in [0, W], y in [0, H]
    kept = batched_nms(boxes, s, b * (K + 1) + lab, nms_thresh)  # by decreasing score
    kept = kept[torch.sort(b[kept], stable=True).indices]  # by image, then decreasing score
    per_image = torch.bincount(b[kept], minlength=B)  # (B,)
    rank = torch.arange(kept.numel(), device=device) - (per_image.cumsum(0) - per_image)[b[kept]]
    kept = kept[rank < detections_per_img]
    out = []
    for idx in kept.split(per_image.clamp(max=detections_per_img).tolist()):
        out.append({"boxes": boxes[idx], "scores": s[idx], "labels": lab[idx]})
    return out
