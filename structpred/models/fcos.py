"""FCOS (Tian, Shen, Chen, He, 2019): fully convolutional one-stage detection, no anchors.

Shape shorthand:
    B: images, H, W: an original image, Hp, Wp: the padded batch, L: pyramid levels (P3-P7),
    Hl, Wl: level l's map, R = sum_l Hl*Wl: locations of an image, K: object classes
    (background excluded), C: class logit channels (K, or K + 1 in torchvision's layout).

Pipeline: :class:`~structpred.layers.transform.DetectionTransform` (normalise, resize, pad) ->
backbone + FPN (P3-P5 and the extra P6, P7 convs) -> :class:`~structpred.heads.fcos_head.FCOSHead`
at every location of every level: C class logits, 4 distances (l, t, r, b) to the box sides, a
centre-ness logit -> scores ``sqrt(sigmoid(class) * sigmoid(centre-ness))`` -> per level the
best ``topk_candidates`` over ``score_thresh``, boxes decoded, clipped, NMS per class, the best
``detections_per_img`` (:func:`~structpred.heads.one_stage.dense_detections`) -> boxes scaled
back to the original image. Training: :func:`~structpred.heads.fcos_head.match_locations` and
:func:`~structpred.heads.fcos_head.fcos_loss` (focal, GIoU, centre-ness BCE).

Each location carries a square reference box of side ``anchor_sizes[l]`` (8..128 px, the
level's stride) centred at ``(x * stride, y * stride)``, as torchvision's one-anchor
``AnchorGenerator``: it scales the regressed distances (torchvision's normalised
``BoxLinearCoder``), the centre-sampling radius and the level's scale range.

Classes: ``num_classes`` = K object classes, labels 1..K. ``background_channel=True`` is
torchvision's layout: C = K + 1 logits where channel c is label c and channel 0 is never a
target (torchvision's ``num_classes`` counts it); we never predict it (torchvision would, as
label 0, only if that untrained channel fired). ``False`` (our from-scratch models): C = K,
channel c is label c + 1.

Contract (DESIGN.md §3): ``model(images, targets=None) -> (predictions, losses)``; with targets
the losses ``loss_classification``, ``loss_bbox_regression``, ``loss_bbox_ctrness`` come in
train *and* eval mode; predictions in either mode, None only with ``predict=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.fcos_head import FCOSClassificationHead, FCOSHead, FCOSRegressionHead, fcos_loss, match_locations
from ..heads.one_stage import LevelAnchors, check_norm_groups, dense_detections, level_maps
from ..layers.transform import DetectionTransform
from ..ops.box_coder import decode_linear
from .faster_rcnn import Detector, DetectorInput, DetectorOutput, check_num_classes, make_config
from .registry import register_model
from .retinanet import narrow_p6p7_pyramid, p6p7_pyramid


class FCOS(Detector):
    """transform -> backbone -> head -> (loss | post-processing), each injected.

    Args:
        backbone: ``images [B, 3, Hp, Wp] -> dict[str, Tensor]`` (L maps, finest first) with
            ``out_channels``.
        head: an :class:`FCOSHead` with ``num_classes`` (+1 with ``background_channel``) logits.
        transform: a :class:`DetectionTransform`.
        num_classes: K, object classes (background excluded).
        anchor_sizes: the side of each level's reference boxes, e.g. ``(8, 16, 32, 64, 128)``.
        background_channel: torchvision's logit layout (see the module docstring).
        center_sampling_radius, score_thresh, nms_thresh, detections_per_img, topk_candidates:
            torchvision's settings of the same names.
    """

    class_dependent_tensors: tuple[str, ...] = (r"head\.classification_head\.cls_logits\.(?:weight|bias)",)

    def __init__(
        self,
        backbone: nn.Module,
        head: FCOSHead,
        transform: DetectionTransform,
        num_classes: int,
        anchor_sizes: Sequence[float] = (8, 16, 32, 64, 128),
        *,
        background_channel: bool = False,
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.2,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.transform, self.backbone, self.head = transform, backbone, head
        self.num_classes = num_classes
        self.background_channel = background_channel
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        # one square reference box per location: one size and aspect ratio 1 per level
        self.anchors = LevelAnchors([(s,) for s in self.anchor_sizes], [(1.0,)] * len(self.anchor_sizes))
        self.center_sampling_radius = center_sampling_radius
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates

    def detect(self, inputs: DetectorInput, predict: bool) -> DetectorOutput:
        """The head at every level, then the loss (with ``targets``) and the post-processing
        (:meth:`~structpred.models.faster_rcnn.Detector.detect`)."""
        features, padded_size, image_sizes, targets = inputs
        maps = level_maps(features, self.anchors, "FCOS")
        cls_logits, regression, ctrness = self.head(maps)  # (B, R, C), (B, R, 4), (B, R)
        # Losses and boxes in float32 under autocast: bf16 would put 256 px boxes on a 1-2 px grid.
        cls_logits, regression, ctrness = cls_logits.float(), regression.float(), ctrness.float()
        references = self.anchors(padded_size, maps)  # (R, 4) float32
        num_per_level = [int(m.shape[-2]) * int(m.shape[-1]) for m in maps]
        losses: dict[str, Tensor] = {}
        if targets is not None:
            losses = self.compute_loss(cls_logits, regression, ctrness, references, num_per_level, targets)
        if not predict:
            return None, losses
        detections = self.postprocess(cls_logits, regression, ctrness, references, num_per_level, image_sizes)
        return detections, losses

    def compute_loss(
        self,
        cls_logits: Tensor,
        regression: Tensor,
        ctrness: Tensor,
        references: Tensor,
        num_per_level: Sequence[int],
        targets: Sequence[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """Match every image's locations to its boxes, then :func:`fcos_loss`."""
        boxes = [t["boxes"].to(references) for t in targets]
        matched = [match_locations(references, num_per_level, b, self.center_sampling_radius) for b in boxes]
        offset = 0 if self.background_channel else 1  # label -> logit channel
        channels = [t["labels"] - offset for t in targets]
        return fcos_loss(cls_logits, regression, ctrness, references, boxes, channels, matched)

    def postprocess(
        self,
        cls_logits: Tensor,
        regression: Tensor,
        ctrness: Tensor,
        references: Tensor,
        num_per_level: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Detections in the resized images' pixels (see the module docstring)."""
        if self.background_channel:
            cls_logits = cls_logits[..., 1:]  # (B, R, K + 1) -> (B, R, K): channel 0 is no class
        scores = torch.sqrt(torch.sigmoid(cls_logits) * torch.sigmoid(ctrness)[..., None])  # (B, R, K)
        return dense_detections(
            scores.split(list(num_per_level), 1),
            regression.split(list(num_per_level), 1),
            references.split(list(num_per_level), 0),
            decode_linear,
            image_sizes,
            score_thresh=self.score_thresh,
            topk_candidates=self.topk_candidates,
            nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img,
        )


@dataclass
class FCOSConfig:
    """The knobs of :func:`build_fcos` (torchvision's defaults)."""

    min_size: int | Sequence[int] = 800
    max_size: int = 1333
    image_mean: Sequence[float] = (0.485, 0.456, 0.406)
    image_std: Sequence[float] = (0.229, 0.224, 0.225)
    anchor_sizes: Sequence[float] = (8, 16, 32, 64, 128)
    center_sampling_radius: float = 1.5
    score_thresh: float = 0.2
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    topk_candidates: int = 1000
    num_convs: int = 4
    norm_groups: int = 32  # GroupNorm groups in the head towers
    prior_probability: float = 0.01
    background_channel: bool = False


def build_fcos(backbone: nn.Module, num_classes: int, config: FCOSConfig | None = None) -> FCOS:
    """The module tree, written out: a backbone with ``out_channels`` and L = ``len(anchor_sizes)``
    maps, K object classes."""
    check_num_classes(num_classes)
    c = config or FCOSConfig()
    channels = int(backbone.out_channels)  # type: ignore[arg-type]
    if c.norm_groups < 1:
        raise ValueError(f"FCOS: norm_groups must be >= 1 (the towers' GroupNorm), got {c.norm_groups}")
    check_norm_groups(channels, c.norm_groups, "FCOS")
    norm = partial(nn.GroupNorm, c.norm_groups)
    num_logits = num_classes + 1 if c.background_channel else num_classes
    classification = FCOSClassificationHead(channels, num_logits, c.num_convs, c.prior_probability, norm)
    regression = FCOSRegressionHead(channels, c.num_convs, norm)
    head = FCOSHead(channels, num_logits, classification_head=classification, regression_head=regression)
    transform = DetectionTransform(c.min_size, c.max_size, c.image_mean, c.image_std)
    return FCOS(
        backbone, head, transform, num_classes, c.anchor_sizes,
        background_channel=c.background_channel, center_sampling_radius=c.center_sampling_radius,
        score_thresh=c.score_thresh, nms_thresh=c.nms_thresh, detections_per_img=c.detections_per_img,
        topk_candidates=c.topk_candidates,
    )  # fmt: skip


# ---------------------------------------------------------------------------- builders


def _config(**overrides: Any) -> FCOSConfig:
    # make_config's type variable is bound to FasterRCNNConfig; it only reads dataclass fields
    return make_config(FCOSConfig, overrides, "FCOS")


_C3_C5 = ("c3", "c4", "c5")  # + P6, P7 from P5 ("p6p7"), as torchvision


@register_model(task="detection", peer_weights=("torchvision",))
def fcos_resnet50_fpn(num_classes: int = 90, trainable_layers: int = 3, **config: Any) -> FCOS:
    """FCOS, ResNet-50 (frozen BN) + FPN P3-P7, torchvision's layout (``background_channel``:
    K + 1 logits); load its weights with :func:`~structpred.models.from_torchvision`."""
    from ..backbones.fpn import resnet50_fpn

    backbone = resnet50_fpn(trainable_layers=trainable_layers, in_keys=_C3_C5, extra_block="p6p7")
    return build_fcos(backbone, num_classes, _config(**{"background_channel": True, **config}))


@register_model(task="detection")
def fcos_fpn(
    num_classes: int = 6,
    backbone: str = "resnet18",
    fpn_channels: int = 256,
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> FCOS:
    """FCOS over any registered backbone (``structpred.backbones.list_backbones()``): its last
    three maps + FPN (``fpn_channels``) + P6, P7; torchvision's settings unless overridden (any
    :class:`FCOSConfig` field)."""
    neck = p6p7_pyramid(backbone, fpn_channels, backbone_args)
    return build_fcos(neck, num_classes, _config(**config))


# The from-scratch CPU model: 256 px like the narrow Faster R-CNN (the shapes world's 128 px
# doubled), a 32-channel FPN with GroupNorm(8) towers; mAP integrates the whole
# precision-recall curve, so low-score detections are kept (0.05; `structpred predict` draws
# only scores >= 0.5).
NARROW_SETTINGS: dict[str, Any] = {
    "min_size": 256,
    "max_size": 256,
    "norm_groups": 8,
    "score_thresh": 0.05,
}


@register_model(task="detection")
def fcos_narrow_fpn(num_classes: int = 6, width: int = 16, fpn_channels: int = 32, **config: Any) -> FCOS:
    """The small from-scratch FCOS for CPU training: the narrow 4-stage backbone's C3-C5 + FPN
    (32 channels) + P6, P7, GroupNorm(8) towers, 256 px (:data:`NARROW_SETTINGS`)."""
    neck = narrow_p6p7_pyramid(width, fpn_channels)
    return build_fcos(neck, num_classes, _config(**{**NARROW_SETTINGS, **config}))
