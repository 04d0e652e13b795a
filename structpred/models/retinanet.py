"""RetinaNet (Lin, Goyal, Girshick, He, Dollár, 2017): dense anchors, focal loss, one stage.

Shape shorthand:
    B: images, H, W: an original image, Hp, Wp: the padded batch, L: pyramid levels (P3-P7),
    Hl, Wl: level l's map, A: anchors per position (3 sizes x 3 ratios), R = sum_l Hl*Wl*A:
    anchors of an image, K: object classes (background excluded), C: class logit channels per
    anchor (K, or K + 1 in torchvision's layout).

Pipeline: :class:`~structpred.layers.transform.DetectionTransform` (normalise, resize, pad) ->
backbone + FPN (P3-P5, and P6, P7 by stride-2 convs from P5 (v1) or C5 (v2)) ->
:class:`~structpred.heads.retinanet_head.RetinaNetHead` (A*C sigmoid logits and A*4 deltas at
every position of every level) -> per level the ``topk_candidates`` best (anchor, class)
scores over ``score_thresh``, boxes decoded on their anchors, clipped, NMS per class over the
levels, the best ``detections_per_img`` (:func:`~structpred.heads.one_stage.dense_detections`)
-> boxes scaled back to the original image. Training:
:func:`~structpred.heads.one_stage.match_anchors` (IoU 0.5 / 0.4, low-quality matches) and
:func:`~structpred.heads.retinanet_head.retinanet_loss` (focal + L1 or GIoU).

Anchors: sizes ``(s, int(s 2^(1/3)), int(s 2^(2/3)))`` for s = 32..512 on P3..P7 (torchvision
truncates to whole pixels: 32, 40, 50, ...), ratios 0.5, 1, 2.

Classes: ``num_classes`` = K object classes, labels 1..K. ``background_channel=True`` is
torchvision's layout: C = K + 1 logits, channel c is label c and channel 0 is never a target
(torchvision's ``num_classes`` counts it; it is trained as a negative everywhere, as there);
we never predict it (torchvision would, as label 0, only if that channel's score passed the
threshold). ``False`` (our from-scratch models): C = K, channel c is label c + 1.

Contract (DESIGN.md §3): ``model(images, targets=None) -> (predictions, losses)``; with targets
the losses ``loss_classification`` and ``loss_bbox_regression`` (torchvision's names) come in
train *and* eval mode; predictions in either mode, None only with ``predict=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.one_stage import (
    LevelAnchors,
    check_norm_groups,
    dense_detections,
    level_maps,
    match_anchors,
    sigmoid_prefilter,
)
from ..heads.retinanet_head import BOX_LOSSES, RetinaNetHead, retinanet_loss
from ..layers.transform import DetectionTransform
from ..ops import BoxCoder, Matcher
from .faster_rcnn import Detector, DetectorInput, DetectorOutput, check_num_classes, make_config
from .registry import register_model


class RetinaNet(Detector):
    """transform -> backbone -> head -> (loss | post-processing), each injected.

    Args:
        backbone: ``images [B, 3, Hp, Wp] -> dict[str, Tensor]`` (L maps, finest first) with
            ``out_channels``.
        head: a :class:`RetinaNetHead` with C = K (+1 with ``background_channel``) classes.
        transform: a :class:`DetectionTransform`.
        num_classes: K, object classes (background excluded).
        anchor_sizes, aspect_ratios: per level (see the module docstring).
        background_channel: torchvision's logit layout (see the module docstring).
        box_loss: ``"l1"`` (v1), ``"giou"`` (v2) or ``"smooth_l1"``.
        score_thresh, nms_thresh, detections_per_img, fg_iou_thresh, bg_iou_thresh,
            topk_candidates: torchvision's settings of the same names.
    """

    class_dependent_tensors: tuple[str, ...] = (r"head\.classification_head\.cls_logits\.(?:weight|bias)",)

    def __init__(
        self,
        backbone: nn.Module,
        head: RetinaNetHead,
        transform: DetectionTransform,
        num_classes: int,
        anchor_sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        *,
        background_channel: bool = False,
        box_loss: str = "l1",
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 300,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.4,
        topk_candidates: int = 1000,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"RetinaNet: box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        self.transform, self.backbone, self.head = transform, backbone, head
        self.num_classes = num_classes
        self.background_channel = background_channel
        self.anchors = LevelAnchors(anchor_sizes, aspect_ratios)
        per_level = set(self.anchors.num_anchors)
        if per_level != {head.classification_head.num_anchors}:
            raise ValueError(
                f"RetinaNet: the head predicts {head.classification_head.num_anchors} anchors per "
                f"position, the anchor settings give {sorted(per_level)}"
            )
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.box_loss = box_loss
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates

    def detect(self, inputs: DetectorInput, predict: bool) -> DetectorOutput:
        """The head at every level, then matching and the loss (with ``targets``) and the
        post-processing (:meth:`~structpred.models.faster_rcnn.Detector.detect`)."""
        features, padded_size, image_sizes, targets = inputs
        maps = level_maps(features, self.anchors, "RetinaNet")
        logits, deltas = self.head(maps)  # (B, R, C), (B, R, 4)
        # Box geometry in at least float32 (under bf16 autocast the maps are bf16).
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        anchors = self.anchors(padded_size, maps, dtype)  # (R, 4)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            matched = match_anchors(anchors, targets, self.matcher)  # (B, R)
            losses = retinanet_loss(
                logits.to(dtype), deltas.to(dtype), anchors, matched, targets, self.box_coder,
                self.box_loss, label_offset=0 if self.background_channel else 1,
            )  # fmt: skip
        if not predict:
            return None, losses
        per_level = [
            int(m.shape[-2]) * int(m.shape[-1]) * n
            for m, n in zip(maps, self.anchors.num_anchors, strict=True)
        ]
        return self.postprocess(logits.to(dtype), deltas.to(dtype), anchors, per_level, image_sizes), losses

    def postprocess(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        per_level: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Detections in the resized images' pixels (see the module docstring); ``logits (B, R, C)``,
        ``deltas (B, R, 4)``, ``anchors (R, 4)``, ``per_level`` the anchors of each level."""
        if self.background_channel:
            logits = logits[..., 1:]  # (B, R, K + 1) -> (B, R, K): channel 0 is no class
        return dense_detections(
            logits.split(list(per_level), 1),
            deltas.split(list(per_level), 1),
            anchors.split(list(per_level), 0),
            self.box_coder.decode_single,
            image_sizes,
            score_thresh=self.score_thresh,
            topk_candidates=self.topk_candidates,
            nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img,
            activation=torch.sigmoid,  # ranked by logit, sigmoid on the candidates only
            prefilter=sigmoid_prefilter(self.score_thresh),
        )


def octave_anchor_sizes(bases: Sequence[int] = (32, 64, 128, 256, 512)) -> tuple[tuple[int, ...], ...]:
    """Per level ``(s, int(s 2^(1/3)), int(s 2^(2/3)))``: three scales an octave apart in thirds,
    truncated to whole pixels as torchvision's ``_default_anchorgen``."""
    return tuple((s, int(s * 2 ** (1.0 / 3)), int(s * 2 ** (2.0 / 3))) for s in bases)


@dataclass
class RetinaNetConfig:
    """The knobs of :func:`build_retinanet` (torchvision's v1 defaults)."""

    min_size: int | Sequence[int] = 800
    max_size: int = 1333
    image_mean: Sequence[float] = (0.485, 0.456, 0.406)
    image_std: Sequence[float] = (0.229, 0.224, 0.225)
    anchor_sizes: Sequence[Sequence[float]] = octave_anchor_sizes()
    aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),) * 5
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 300
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    topk_candidates: int = 1000
    num_convs: int = 4
    norm_groups: int = 0  # GroupNorm groups in the head towers (0: no norm, v1; 32: v2)
    prior_probability: float = 0.01
    box_loss: str = "l1"  # "giou" in v2
    background_channel: bool = False


def build_retinanet(
    backbone: nn.Module, num_classes: int, config: RetinaNetConfig | None = None
) -> RetinaNet:
    """The module tree, written out: a backbone with ``out_channels`` and one map per anchor
    level, K object classes."""
    check_num_classes(num_classes)
    c = config or RetinaNetConfig()
    channels = int(backbone.out_channels)  # type: ignore[arg-type]
    check_norm_groups(channels, c.norm_groups, "RetinaNet")
    if len(c.anchor_sizes) != len(c.aspect_ratios):
        raise ValueError(
            f"RetinaNet: {len(c.anchor_sizes)} anchor size tuples but {len(c.aspect_ratios)} ratio tuples"
        )
    norm = partial(nn.GroupNorm, c.norm_groups) if c.norm_groups else None
    num_anchors = len(c.anchor_sizes[0]) * len(c.aspect_ratios[0])
    num_logits = num_classes + 1 if c.background_channel else num_classes
    head = RetinaNetHead(channels, num_anchors, num_logits, norm, c.prior_probability, c.num_convs)
    transform = DetectionTransform(c.min_size, c.max_size, c.image_mean, c.image_std)
    return RetinaNet(
        backbone, head, transform, num_classes, c.anchor_sizes, c.aspect_ratios,
        background_channel=c.background_channel, box_loss=c.box_loss, score_thresh=c.score_thresh,
        nms_thresh=c.nms_thresh, detections_per_img=c.detections_per_img,
        fg_iou_thresh=c.fg_iou_thresh, bg_iou_thresh=c.bg_iou_thresh, topk_candidates=c.topk_candidates,
    )  # fmt: skip


# ---------------------------------------------------------------------------- builders


def _config(**overrides: Any) -> RetinaNetConfig:
    # make_config's type variable is bound to FasterRCNNConfig; it only reads dataclass fields
    return make_config(RetinaNetConfig, overrides, "RetinaNet")


_C3_C5 = ("c3", "c4", "c5")  # + P6, P7, as torchvision's returned_layers=[2, 3, 4]


def p6p7_pyramid(backbone: str, fpn_channels: int, backbone_args: dict[str, Any] | None) -> nn.Module:
    """The registered ``backbone``'s three coarsest maps (as C3-C5) + FPN of ``fpn_channels`` + P6,
    P7 from P5: the one-stage detectors' pyramid (RetinaNet's, FCOS's) over any backbone."""
    from ..backbones.fpn import BackboneWithFPN
    from ..backbones.registry import get_backbone

    body = get_backbone(backbone, **(backbone_args or {}))
    keys = list(body.out_channels)[-3:]  # type: ignore[arg-type]  # the three coarsest, as C3-C5
    return BackboneWithFPN(body, keys, fpn_channels, extra_block="p6p7")


def narrow_p6p7_pyramid(width: int, fpn_channels: int) -> nn.Module:
    """The narrow 4-stage backbone (widths ``width`` .. ``8 width``): C3-C5 + FPN of
    ``fpn_channels`` + P6, P7 from P5."""
    from ..backbones.fpn import BackboneWithFPN
    from ..backbones.narrow import NarrowNet

    body = NarrowNet((width, 2 * width, 4 * width, 8 * width))
    return BackboneWithFPN(body, _C3_C5, fpn_channels, extra_block="p6p7")


@register_model(task="detection", peer_weights=("torchvision",))
def retinanet_resnet50_fpn(num_classes: int = 90, trainable_layers: int = 3, **config: Any) -> RetinaNet:
    """RetinaNet v1, ResNet-50 (frozen BN) + FPN P3-P5 + P6, P7 from P5, torchvision's layout
    (``background_channel``: K + 1 logits); load its weights with
    :func:`~structpred.models.from_torchvision`."""
    from ..backbones.fpn import resnet50_fpn

    backbone = resnet50_fpn(trainable_layers=trainable_layers, in_keys=_C3_C5, extra_block="p6p7")
    return build_retinanet(backbone, num_classes, _config(**{"background_channel": True, **config}))


@register_model(task="detection", peer_weights=("torchvision",))
def retinanet_resnet50_fpn_v2(num_classes: int = 90, trainable_layers: int = 3, **config: Any) -> RetinaNet:
    """RetinaNet v2 (torchvision's): ResNet-50 with batch norm + FPN P3-P5 + P6, P7 from C5,
    GroupNorm(32) head towers, GIoU box loss, torchvision's layout (``background_channel``)."""
    from ..backbones.fpn import resnet50_fpn

    backbone = resnet50_fpn(
        trainable_layers=trainable_layers, in_keys=_C3_C5, extra_block="p6p7_c5", norm_layer=nn.BatchNorm2d
    )
    settings = {"background_channel": True, "norm_groups": 32, "box_loss": "giou", **config}
    return build_retinanet(backbone, num_classes, _config(**settings))


@register_model(task="detection")
def retinanet_fpn(
    num_classes: int = 6,
    backbone: str = "resnet18",
    fpn_channels: int = 256,
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> RetinaNet:
    """RetinaNet over any registered backbone (``structpred.backbones.list_backbones()``): its last
    three maps + FPN (``fpn_channels``) + P6, P7 from P5; torchvision's v1 settings unless
    overridden (any :class:`RetinaNetConfig` field)."""
    neck = p6p7_pyramid(backbone, fpn_channels, backbone_args)
    return build_retinanet(neck, num_classes, _config(**config))


# The from-scratch CPU model: 256 px like the narrow Faster R-CNN (the shapes world's 128 px
# doubled); P3-P7 anchors from 16 px (the smallest shapes, 4 px at 128 px, are 8 px across at
# 256 px: 16 px anchors reach IoU >= 0.4 with them only through low-quality matches, as the
# paper's 32 px anchors on COCO's smallest objects); GroupNorm(8) towers of 32 channels; mAP
# integrates the whole precision-recall curve, so low-score detections are kept (0.05; `structpred
# predict` draws only scores >= 0.5).
NARROW_SETTINGS: dict[str, Any] = {
    "min_size": 256,
    "max_size": 256,
    "anchor_sizes": octave_anchor_sizes((16, 32, 64, 128, 256)),
    "norm_groups": 8,
    "detections_per_img": 100,
}


@register_model(task="detection")
def retinanet_narrow_fpn(
    num_classes: int = 6, width: int = 16, fpn_channels: int = 32, **config: Any
) -> RetinaNet:
    """The small from-scratch RetinaNet for CPU training: the narrow 4-stage backbone's C3-C5 +
    FPN (32 channels) + P6, P7, GroupNorm(8) towers, 256 px (:data:`NARROW_SETTINGS`)."""
    neck = narrow_p6p7_pyramid(width, fpn_channels)
    return build_retinanet(neck, num_classes, _config(**{**NARROW_SETTINGS, **config}))
