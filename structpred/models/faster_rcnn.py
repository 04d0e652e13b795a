"""Faster R-CNN (Ren, He, Girshick, Sun, 2015): a Region Proposal Network + the Fast R-CNN head.

Shape shorthand:
    B: images, H, W: an original image, Hr, Wr: resized, Hp, Wp: the padded batch,
    K: object classes (background excluded), P: proposals per image.

Pipeline: :class:`~structpred.layers.transform.DetectionTransform` (normalise, resize, pad) ->
backbone (named feature maps, e.g. FPN levels "0".."3", "pool") -> RPN (proposals) ->
RoI heads (pooled RoIs -> classes + boxes) -> boxes scaled back to the original image.

Contract (DESIGN.md §3): ``model(images, targets=None) -> (predictions, losses)``. With targets
the losses ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg`` come
in train *and* eval mode (validation loss for free); predictions (``boxes`` xyxy in original
pixels, ``scores``, ``labels`` 1..K) come in either mode, None only with ``predict=False``
(:mod:`structpred.models.contract`).
Every part is injected; the builders below write the paper's and torchvision's trees out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from ..heads.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from ..heads.rpn import RegionProposalNetwork, RPNHead
from ..layers.poolers import multiscale_pooler
from ..layers.transform import DetectionTransform
from .contract import check_request, checked_targets
from .registry import register_model

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def check_targets(
    targets: Sequence[dict[str, Tensor]], sizes: Sequence[tuple[int, int]], num_classes: int
) -> list[dict[str, Tensor]]:
    """Validated detection targets; partly-outside boxes are clipped to their image.

    Raises ``ValueError`` naming the image and box for: missing keys, boxes not float
    ``[N, 4]``, labels not int ``[N]`` in ``1..num_classes``, degenerate boxes (``x2 <= x1``
    or ``y2 <= y1``) and boxes wholly outside the image. Images without boxes are fine.
    """
    out = []
    for i, (target, (H, W)) in enumerate(zip(targets, sizes, strict=True)):
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
        boxes, labels = target["boxes"], target["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f"targets[{i}]['boxes'] must be Tensor[N, 4], got {getattr(boxes, 'shape', boxes)}"
            )
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] must be float, got {boxes.dtype}")
        if not isinstance(labels, Tensor) or labels.shape != (boxes.shape[0],) or labels.is_floating_point():
            raise ValueError(f"targets[{i}]['labels'] must be an int Tensor[{boxes.shape[0]}]")
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
            raise ValueError(f"targets[{i}]['labels'] must be in 1..{num_classes}, got {labels.tolist()}")
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]) | ~torch.isfinite(boxes).all(1)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            raise ValueError(
                f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} is degenerate (need x2 > x1, y2 > y1)"
            )
        outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= W) | (boxes[:, 1] >= H)
        if bool(outside.any()):
            j = int(outside.nonzero()[0])
            raise ValueError(
                f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} lies outside the {H}x{W} image"
            )
        clipped = torch.stack(
            [
                boxes[:, 0].clamp(0, W),
                boxes[:, 1].clamp(0, H),
                boxes[:, 2].clamp(0, W),
                boxes[:, 3].clamp(0, H),
            ],
            1,
        )
        out.append({**target, "boxes": clipped, "labels": labels.long()})
    return out


class DetectorInput(NamedTuple):
    """A batch after the common start of :meth:`Detector.forward`."""

    features: dict[str, Tensor] | Tensor  # the backbone's maps of the padded batch
    padded_size: tuple[int, int]  # (Hp, Wp)
    image_sizes: list[tuple[int, int]]  # (Hr, Wr) per image, after the resize
    targets: list[dict[str, Tensor]] | None  # validated, in resized pixels


# (detections per image or None, losses)
DetectorOutput = tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]


class Detector(nn.Module):
    """What every box detector here shares (Faster / Mask / Keypoint R-CNN, RetinaNet, FCOS): an
    input ``transform``, a ``backbone``, K = ``num_classes`` object classes, the target checks and
    ``forward``'s frame (DESIGN.md §3): the request and targets checked, the images transformed,
    the backbone run, the model's own :meth:`detect`, the boxes scaled back to the original images.
    """

    transform: DetectionTransform
    backbone: nn.Module
    num_classes: int

    def validate_targets(
        self, targets: Sequence[dict[str, Tensor]], sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """:func:`check_targets` for this model's classes (models with more target keys add theirs)."""
        return check_targets(targets, sizes, self.num_classes)

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> DetectorOutput:
        """Detections per image (None with ``predict=False``) and losses (with ``targets``)."""
        check_request(targets is not None, predict, type(self).__name__)
        checked = checked_targets(images, targets, self.validate_targets)
        batch, image_sizes, original_sizes, resized = self.transform(images, checked)  # (B, 3, Hp, Wp)
        padded_size = (batch.shape[-2], batch.shape[-1])  # (Hp, Wp)
        inputs = DetectorInput(self.backbone(batch), padded_size, image_sizes, resized)
        detections, losses = self.detect(inputs, predict)
        if detections is None:
            return None, losses
        return self.transform.postprocess(detections, image_sizes, original_sizes), losses

    def detect(self, inputs: DetectorInput, predict: bool) -> DetectorOutput:
        """The model's own part: detections in the resized images' pixels (None unless ``predict``)
        and losses (with targets), from the backbone's features of the transformed batch."""
        raise NotImplementedError(f"{type(self).__name__} must define detect()")


class FasterRCNN(Detector):
    """transform -> backbone -> rpn -> roi_heads, each injected (see the module docstring).

    Args:
        backbone: ``images [B, 3, Hp, Wp] -> dict[str, Tensor]`` with ``out_channels``.
        rpn: a :class:`RegionProposalNetwork` over all the backbone's maps.
        roi_heads: a :class:`RoIHeads`.
        transform: a :class:`DetectionTransform`.
        num_classes: K, object classes (background excluded).
    """

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        transform: DetectionTransform,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.transform, self.backbone, self.rpn, self.roi_heads = transform, backbone, rpn, roi_heads
        self.num_classes = num_classes

    def detect(self, inputs: DetectorInput, predict: bool) -> DetectorOutput:
        """RPN proposals, then the RoI heads (see :meth:`Detector.detect`)."""
        features, padded_size, image_sizes, targets = inputs
        if isinstance(features, Tensor):
            features = {"0": features}
        proposals, _, rpn_losses = self.rpn(features, padded_size, image_sizes, targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_sizes, targets, predict=predict)
        return detections, {**rpn_losses, **roi_losses}


@dataclass
class FasterRCNNConfig:
    """The knobs of :func:`build_faster_rcnn` (torchvision's defaults)."""

    min_size: int | Sequence[int] = 800
    max_size: int = 1333
    image_mean: Sequence[float] = (0.485, 0.456, 0.406)
    image_std: Sequence[float] = (0.229, 0.224, 0.225)
    anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),) * 5
    rpn_objectness: str = "sigmoid"  # or "softmax": the paper's 2k scores
    rpn_pre_nms_top_n: dict[str, int] = field(default_factory=lambda: {"training": 2000, "testing": 1000})
    rpn_post_nms_top_n: dict[str, int] = field(default_factory=lambda: {"training": 2000, "testing": 1000})
    rpn_nms_thresh: float = 0.7
    rpn_score_thresh: float = 0.0
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    featmap_names: Sequence[str] = ("0", "1", "2", "3")
    roi_op: str = "align"  # or "pool": quantised RoIPool (Mask R-CNN's ablation)
    pool_size: int = 7
    sampling_ratio: int = 2
    representation_size: int = 1024
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100


def check_num_classes(num_classes: int) -> None:
    """Raise unless ``num_classes`` (object classes, background excluded) is an int >= 1."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes (object classes, background excluded) must be >= 1, got {num_classes!r}"
        )


def build_rpn(channels: int, c: FasterRCNNConfig) -> RegionProposalNetwork:
    """The RPN of config ``c`` over ``channels``-wide feature maps."""
    num_anchors = len(c.anchor_sizes[0]) * len(c.aspect_ratios[0])
    return RegionProposalNetwork(
        RPNHead(channels, num_anchors, c.rpn_objectness),
        c.anchor_sizes,
        c.aspect_ratios,
        pre_nms_top_n=dict(c.rpn_pre_nms_top_n),
        post_nms_top_n=dict(c.rpn_post_nms_top_n),
        nms_thresh=c.rpn_nms_thresh,
        score_thresh=c.rpn_score_thresh,
        fg_iou_thresh=c.rpn_fg_iou_thresh,
        bg_iou_thresh=c.rpn_bg_iou_thresh,
        batch_size_per_image=c.rpn_batch_size_per_image,
        positive_fraction=c.rpn_positive_fraction,
    )


def box_head_parts(
    channels: int, num_classes: int, c: FasterRCNNConfig
) -> tuple[nn.Module, TwoMLPHead, FastRCNNPredictor]:
    """The box pooler (``c.roi_op``), the two-FC head and the predictor for K object classes."""
    pooler = multiscale_pooler(c.roi_op, c.featmap_names, c.pool_size, c.sampling_ratio)
    head = TwoMLPHead(channels * c.pool_size**2, c.representation_size)
    return pooler, head, FastRCNNPredictor(c.representation_size, num_classes + 1)


def box_settings(c: FasterRCNNConfig) -> dict[str, Any]:
    """:class:`RoIHeads`' keyword settings (sampling, regression weights, post-processing)."""
    return {
        "fg_iou_thresh": c.box_fg_iou_thresh,
        "bg_iou_thresh": c.box_bg_iou_thresh,
        "batch_size_per_image": c.box_batch_size_per_image,
        "positive_fraction": c.box_positive_fraction,
        "bbox_reg_weights": c.bbox_reg_weights,
        "score_thresh": c.box_score_thresh,
        "nms_thresh": c.box_nms_thresh,
        "detections_per_img": c.box_detections_per_img,
    }


def build_transform(c: FasterRCNNConfig) -> DetectionTransform:
    """The input transform of config ``c`` (normalise, resize, pad)."""
    return DetectionTransform(c.min_size, c.max_size, c.image_mean, c.image_std)


def build_faster_rcnn(
    backbone: nn.Module, num_classes: int, config: FasterRCNNConfig | None = None
) -> FasterRCNN:
    """The module tree, written out: FPN-style backbone with ``out_channels``, K object classes."""
    check_num_classes(num_classes)
    c = config or FasterRCNNConfig()
    channels = int(backbone.out_channels)  # type: ignore[arg-type]
    roi_heads = RoIHeads(*box_head_parts(channels, num_classes, c), **box_settings(c))
    return FasterRCNN(backbone, build_rpn(channels, c), roi_heads, build_transform(c), num_classes)


# ---------------------------------------------------------------------------- builders
# ``num_classes`` counts object classes (background excluded; torchvision's COCO 91 = 90 + 1).


Config = TypeVar("Config", bound="DataclassInstance")


def make_config(cls: type[Config], overrides: dict[str, Any], model: str = "Faster R-CNN") -> Config:
    """``cls``'s defaults with keyword overrides; unknown names are a ``ValueError``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {model} settings {unknown}; known: {sorted(known)}")
    return cls(**overrides)


def _config(**overrides: Any) -> FasterRCNNConfig:
    return make_config(FasterRCNNConfig, overrides)


@register_model(task="detection", peer_weights=("torchvision",))
def fasterrcnn_resnet50_fpn(num_classes: int = 90, trainable_layers: int = 3, **config: Any) -> FasterRCNN:
    """Faster R-CNN, ResNet-50 (frozen BN) + FPN, torchvision's layout (load its weights with
    :func:`~structpred.models.from_torchvision`)."""
    from ..backbones.fpn import resnet50_fpn

    return build_faster_rcnn(resnet50_fpn(trainable_layers=trainable_layers), num_classes, _config(**config))


_MOBILE_ANCHORS = {"anchor_sizes": ((32, 64, 128, 256, 512),) * 3, "aspect_ratios": ((0.5, 1.0, 2.0),) * 3}


@register_model(task="detection", peer_weights=("torchvision",))
def fasterrcnn_mobilenet_v3_large_fpn(
    num_classes: int = 90, trainable_layers: int = 3, **config: Any
) -> FasterRCNN:
    """Faster R-CNN, MobileNetV3-Large + FPN (2 levels + pool), 800 px, as torchvision's."""
    from ..backbones.fpn import mobilenet_v3_large_fpn

    settings = {**_MOBILE_ANCHORS, "rpn_score_thresh": 0.05, **config}
    backbone = mobilenet_v3_large_fpn(trainable_layers=trainable_layers)
    return build_faster_rcnn(backbone, num_classes, _config(**settings))


@register_model(task="detection", peer_weights=("torchvision",))
def fasterrcnn_mobilenet_v3_large_320_fpn(
    num_classes: int = 90, trainable_layers: int = 3, **config: Any
) -> FasterRCNN:
    """The same at 320 px with 150 proposals at test time (torchvision's low-resolution model)."""
    settings = {
        "min_size": 320,
        "max_size": 640,
        "rpn_pre_nms_top_n": {"training": 2000, "testing": 150},
        "rpn_post_nms_top_n": {"training": 2000, "testing": 150},
        **config,
    }
    return fasterrcnn_mobilenet_v3_large_fpn(num_classes, trainable_layers, **settings)


# The small from-scratch CPU model's settings, shared by every model built on it (Mask R-CNN too).
# Images resized to 256 px (the shapes world's 128 px doubled: its smallest objects, 4 px across,
# then cover a whole stride-4 cell), anchors 8..203 px, a lighter RPN (300 / 150 proposals per
# level / image in training) and box head (64 sampled RoIs, one bilinear sample per RoIAlign
# bin). Each choice was measured; see experiments/RESULTS.md.
NARROW_SETTINGS: dict[str, Any] = {
    "min_size": 256,
    "max_size": 256,
    # Three sizes per level, 2^(1/3) apart, from 8 px: the smallest objects at 256 px.
    "anchor_sizes": tuple(tuple(round(s * 2 ** (k / 3), 1) for k in range(3)) for s in (8, 16, 32, 64, 128)),
    "rpn_pre_nms_top_n": {"training": 300, "testing": 300},
    "rpn_post_nms_top_n": {"training": 150, "testing": 100},
    "rpn_batch_size_per_image": 128,
    "sampling_ratio": 1,
    "representation_size": 256,
    "box_batch_size_per_image": 64,
    # mAP integrates the whole precision-recall curve: keep the low-score tail for scoring, as
    # YOLO's validation does (0.001); `structpred predict` still draws only scores >= 0.5.
    "box_score_thresh": 0.001,
}


def narrow_backbone(width: int = 16, fpn_channels: int = 32) -> nn.Module:
    """The narrow 4-stage backbone (widths ``width`` .. ``8 width``) + FPN of ``fpn_channels``."""
    from ..backbones.fpn import narrow_fpn

    return narrow_fpn(out_channels=fpn_channels, widths=(width, 2 * width, 4 * width, 8 * width))


def any_backbone_fpn(
    backbone: str, fpn_channels: int, backbone_args: dict[str, Any] | None, config: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """The registered ``backbone`` + FPN, and ``config`` with anchors and pooled levels defaulted to
    its pyramid (one anchor level per FPN output, the RoI pooler over all but ``"pool"``)."""
    from ..backbones.fpn import fpn_backbone

    neck = fpn_backbone(backbone, out_channels=fpn_channels, **(backbone_args or {}))
    levels = [str(i) for i in range(len(neck.in_keys))]  # FPN outputs "0".."L-1", then "pool"
    sizes = (32, 64, 128, 256, 512)
    anchors: dict[str, Any]
    if len(levels) == 4:  # torchvision's per-level anchors fit a 4-level pyramid + pool
        anchors = {"anchor_sizes": tuple((s,) for s in sizes)}
    else:  # every size at every level, as torchvision's MobileNet detectors
        anchors = {"anchor_sizes": (sizes,) * (len(levels) + 1)}
    anchors["aspect_ratios"] = ((0.5, 1.0, 2.0),) * (len(levels) + 1)
    return neck, {**anchors, "featmap_names": tuple(levels), **config}


@register_model(task="detection")
def fasterrcnn_fpn(
    num_classes: int = 6,
    backbone: str = "resnet18",
    fpn_channels: int = 256,
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> FasterRCNN:
    """Faster R-CNN + FPN over any registered backbone (``structpred.backbones.list_backbones()``);
    torchvision's settings unless overridden (any :class:`FasterRCNNConfig` field)."""
    neck, settings = any_backbone_fpn(backbone, fpn_channels, backbone_args, config)
    return build_faster_rcnn(neck, num_classes, _config(**settings))


@register_model(task="detection")
def fasterrcnn_narrow_fpn(
    num_classes: int = 6, width: int = 16, fpn_channels: int = 32, **config: Any
) -> FasterRCNN:
    """The small from-scratch model for CPU training: a narrow 4-stage backbone + FPN (32 channels),
    with :data:`NARROW_SETTINGS` (256 px, a lighter RPN and box head)."""
    backbone = narrow_backbone(width, fpn_channels)
    return build_faster_rcnn(backbone, num_classes, _config(**{**NARROW_SETTINGS, **config}))
