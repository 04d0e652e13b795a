"""Keypoint R-CNN (He, Gkioxari, Dollár, Girshick, 2017): Mask R-CNN's keypoint head ("human pose").

Shape shorthand:
    B: images, H, W: an original image, N: gt objects (targets) or detections (predictions),
    K: keypoints per object (``num_keypoints``), M: heatmap side of the head (56).

Pipeline: Faster R-CNN's (:mod:`structpred.models.faster_rcnn`) with
:class:`~structpred.heads.keypoint_head.KeypointRoIHeads` as the RoI heads: the box head as
before, plus pooled RoIs (RoIAlign 14 x 14) -> eight 3x3 convs of 512 -> 2x deconv -> 2x
bilinear -> ``K`` heatmaps of 56 x 56, one-hot targets, cross-entropy over each heatmap's
pixels. The transform (:class:`KeypointTransform`) scales target keypoints to the resized image
and predicted ones back.

Contract (DESIGN.md §3, the keypoint task): ``model(images, targets=None) -> (predictions,
losses)``. Targets need ``keypoints`` float ``[N, K, 3]`` = ``(x, y, v)`` in pixels beside
``boxes`` and ``labels`` (``v = 0``: not labelled, ignored; ``v > 0``: labelled, COCO's 1 and 2
alike); the losses are Faster R-CNN's plus ``loss_keypoint``, in train *and* eval mode.
Predictions have torchvision's keys: ``boxes`` (original pixels), ``labels``, ``scores``,
``keypoints`` float ``[N, K, 3]`` = ``(x, y, 1)`` in original pixels and ``keypoints_scores``
``[N, K]`` (the heatmap logit at the keypoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.keypoint_head import KeypointHead, KeypointPredictor, KeypointRoIHeads
from ..heads.rpn import RegionProposalNetwork
from ..layers.poolers import multiscale_pooler
from ..layers.transform import DetectionTransform
from ..ops.keypoints import resize_keypoints
from .faster_rcnn import (
    NARROW_SETTINGS,
    FasterRCNN,
    FasterRCNNConfig,
    any_backbone_fpn,
    box_head_parts,
    box_settings,
    build_rpn,
    check_num_classes,
    make_config,
    narrow_backbone,
)
from .registry import register_model


def check_keypoints(targets: Sequence[dict[str, Tensor]], num_keypoints: int) -> list[dict[str, Tensor]]:
    """Targets (already box-checked) whose ``keypoints`` are float ``[N, K, 3]``, finite.

    Raises ``ValueError`` naming the image for a missing ``keypoints``, a wrong shape (not one
    ``K x 3`` row per box, or another ``K`` than the model's), a non-float dtype or a
    non-finite value.
    """
    out = []
    for i, target in enumerate(targets):
        n = target["boxes"].shape[0]
        kps = target.get("keypoints")
        if kps is None:
            raise ValueError(
                f"targets[{i}] has no 'keypoints': Keypoint R-CNN needs float [N, K, 3] keypoints"
            )
        if not isinstance(kps, Tensor) or tuple(kps.shape) != (n, num_keypoints, 3):
            got = tuple(kps.shape) if isinstance(kps, Tensor) else type(kps).__name__
            raise ValueError(
                f"targets[{i}]['keypoints'] must be float [N, K, 3] = [{n}, {num_keypoints}, 3] "
                f"(one row per box, the model's {num_keypoints} keypoints), got {got}"
            )
        if not kps.is_floating_point():
            raise ValueError(f"targets[{i}]['keypoints'] must be float (x, y, visibility), got {kps.dtype}")
        if not bool(torch.isfinite(kps).all()):
            raise ValueError(f"targets[{i}]['keypoints'] has non-finite values")
        out.append(target)
    return out


class KeypointTransform(DetectionTransform):
    """:class:`DetectionTransform` that also scales target ``keypoints`` to the resized image
    and predicted ``keypoints`` back to the original one (torchvision's transform does both)."""

    def forward(
        self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict[str, Tensor]] | None = None
    ) -> tuple[Tensor, list[tuple[int, int]], list[tuple[int, int]], list[dict[str, Tensor]] | None]:
        batch, sizes, original_sizes, out_targets = super().forward(images, targets)
        for target, size, original in zip(out_targets or [], sizes, original_sizes, strict=False):
            if "keypoints" in target:
                target["keypoints"] = resize_keypoints(target["keypoints"], original, size)
        return batch, sizes, original_sizes, out_targets

    def postprocess(
        self,
        predictions: list[dict[str, Tensor]],
        sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        predictions = super().postprocess(predictions, sizes, original_sizes)
        for pred, size, original in zip(predictions, sizes, original_sizes, strict=True):
            if "keypoints" in pred:
                pred["keypoints"] = resize_keypoints(pred["keypoints"], size, original)
        return predictions


class KeypointRCNN(FasterRCNN):
    """Faster R-CNN whose RoI heads also predict ``K`` keypoints per detection; see the module
    docstring.

    Args: as :class:`~structpred.models.faster_rcnn.FasterRCNN`, with ``roi_heads`` a
        :class:`~structpred.heads.keypoint_head.KeypointRoIHeads` and ``num_keypoints`` its K.
    """

    # Only the box predictor depends on the number of classes: the keypoint predictor's
    # K maps depend on the number of keypoints, which fine-tuning to other classes keeps.
    class_dependent_tensors: tuple[str, ...] = (
        r"roi_heads\.box_predictor\.(?:cls_score|bbox_pred)\.(?:weight|bias)",
    )

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: KeypointRoIHeads,
        transform: KeypointTransform,
        num_classes: int,
        num_keypoints: int,
    ) -> None:
        if not isinstance(roi_heads, KeypointRoIHeads):
            raise ValueError(f"roi_heads must be a KeypointRoIHeads, got {type(roi_heads).__name__}")
        if not isinstance(transform, KeypointTransform):
            raise ValueError(f"transform must be a KeypointTransform, got {type(transform).__name__}")
        super().__init__(backbone, rpn, roi_heads, transform, num_classes)
        self.num_keypoints = num_keypoints

    def validate_targets(
        self, targets: Sequence[dict[str, Tensor]], sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Faster R-CNN's checks, then the keypoints' (:func:`check_keypoints`)."""
        return check_keypoints(super().validate_targets(targets, sizes), self.num_keypoints)


@dataclass
class KeypointRCNNConfig(FasterRCNNConfig):
    """:class:`FasterRCNNConfig` plus the keypoint branch (torchvision's defaults; its
    ``keypointrcnn_resnet50_fpn`` draws the training size from 640..800)."""

    min_size: int | Sequence[int] = (640, 672, 704, 736, 768, 800)
    keypoint_pool_size: int = 14
    keypoint_sampling_ratio: int = 2
    keypoint_layers: Sequence[int] = (512,) * 8
    keypoint_up_scale: int = 2


def check_num_keypoints(num_keypoints: int) -> None:
    """Raise unless ``num_keypoints`` (K, keypoints per object) is an int >= 1."""
    if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) or num_keypoints < 1:
        raise ValueError(f"num_keypoints must be an int >= 1, got {num_keypoints!r}")


def build_keypoint_rcnn(
    backbone: nn.Module, num_classes: int, num_keypoints: int, config: KeypointRCNNConfig | None = None
) -> KeypointRCNN:
    """The module tree, written out: FPN-style backbone with ``out_channels``, K object classes,
    ``num_keypoints`` keypoints per object."""
    check_num_classes(num_classes)
    check_num_keypoints(num_keypoints)
    c = config or KeypointRCNNConfig()
    if len(c.keypoint_layers) == 0:
        raise ValueError("keypoint_layers must name at least one conv width")
    channels = int(backbone.out_channels)  # type: ignore[arg-type]
    roi_heads = KeypointRoIHeads(
        *box_head_parts(channels, num_classes, c),
        multiscale_pooler(c.roi_op, c.featmap_names, c.keypoint_pool_size, c.keypoint_sampling_ratio),
        KeypointHead(channels, c.keypoint_layers),
        KeypointPredictor(c.keypoint_layers[-1], num_keypoints, c.keypoint_up_scale),
        **box_settings(c),
    )
    transform = KeypointTransform(c.min_size, c.max_size, c.image_mean, c.image_std)
    return KeypointRCNN(backbone, build_rpn(channels, c), roi_heads, transform, num_classes, num_keypoints)


# ---------------------------------------------------------------------------- builders
# ``num_classes`` counts object classes (background excluded; torchvision's 2 = person + background).


def _config(**overrides: Any) -> KeypointRCNNConfig:
    return make_config(KeypointRCNNConfig, overrides, "Keypoint R-CNN")


@register_model(task="keypoints", peer_weights=("torchvision",))
def keypointrcnn_resnet50_fpn(
    num_classes: int = 1, num_keypoints: int = 17, trainable_layers: int = 3, **config: Any
) -> KeypointRCNN:
    """Keypoint R-CNN, ResNet-50 (frozen BN) + FPN, torchvision's layout (COCO persons, 17
    keypoints; load its weights with :func:`~structpred.models.from_torchvision`)."""
    from ..backbones.fpn import resnet50_fpn

    backbone = resnet50_fpn(trainable_layers=trainable_layers)
    return build_keypoint_rcnn(backbone, num_classes, num_keypoints, _config(**config))


@register_model(task="keypoints")
def keypointrcnn_narrow_fpn(
    num_classes: int = 6, num_keypoints: int = 5, width: int = 16, fpn_channels: int = 32, **config: Any
) -> KeypointRCNN:
    """The small from-scratch CPU model: ``fasterrcnn_narrow_fpn``'s backbone and settings
    (:data:`~structpred.models.faster_rcnn.NARROW_SETTINGS`, 256 px) with a keypoint head as
    narrow as the FPN (four 3x3 convs of ``2 * fpn_channels``; 14 x 14 RoIAlign -> 56 x 56
    heatmaps). Defaults: the shapes world's 6 classes and 5 keypoint slots."""
    narrow = {"keypoint_layers": (2 * fpn_channels,) * 4}
    settings = {**NARROW_SETTINGS, **narrow, **config}
    return build_keypoint_rcnn(
        narrow_backbone(width, fpn_channels), num_classes, num_keypoints, _config(**settings)
    )


@register_model(task="keypoints")
def keypointrcnn_fpn(
    num_classes: int = 6,
    num_keypoints: int = 5,
    backbone: str = "resnet18",
    fpn_channels: int = 256,
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> KeypointRCNN:
    """Keypoint R-CNN + FPN over any registered backbone (``structpred.backbones.list_backbones()``);
    torchvision's settings unless overridden (any :class:`KeypointRCNNConfig` field)."""
    neck, settings = any_backbone_fpn(backbone, fpn_channels, backbone_args, config)
    return build_keypoint_rcnn(neck, num_classes, num_keypoints, _config(**settings))
