"""Mask R-CNN (He, Gkioxari, Dollár, Girshick, 2017): Faster R-CNN + a per-RoI mask branch.

Shape shorthand:
    B: images, H, W: an original image, N: gt objects (targets) or detections (predictions),
    K: object classes (background excluded), M: mask resolution of the head (28).

Pipeline: Faster R-CNN's (:mod:`structpred.models.faster_rcnn`) with
:class:`~structpred.heads.mask_head.MaskRoIHeads` as the RoI heads: the box head as before,
plus pooled RoIs (RoIAlign 14 x 14) -> four 3x3 convs -> 2x deconv -> ``K+1`` masks of 28 x 28.
``roi_op="pool"`` swaps RoIAlign for the quantised RoIPool in both poolers (the paper's
ablation, Table 2c).

Contract (DESIGN.md §3): ``model(images, targets=None) -> (predictions, losses)``. Targets need
``masks`` ``uint8[N, H, W]`` (bool accepted) beside ``boxes`` and ``labels``; the losses are
Faster R-CNN's plus ``loss_mask``, in train *and* eval mode. Predictions (eval mode) have
torchvision's keys: ``boxes`` (original pixels), ``labels``, ``scores`` and ``masks`` float
``[N, 1, H, W]``, each detection's mask probability pasted into the original image (threshold
at 0.5 for binary masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.mask_head import MaskHead, MaskPredictor, MaskRoIHeads
from ..heads.rpn import RegionProposalNetwork
from ..layers.poolers import multiscale_pooler
from ..layers.transform import DetectionTransform
from .faster_rcnn import (
    NARROW_SETTINGS,
    FasterRCNN,
    FasterRCNNConfig,
    any_backbone_fpn,
    box_head_parts,
    box_settings,
    build_rpn,
    build_transform,
    check_num_classes,
    make_config,
    narrow_backbone,
)
from .registry import register_model


def check_masks(
    targets: Sequence[dict[str, Tensor]], sizes: Sequence[tuple[int, int]]
) -> list[dict[str, Tensor]]:
    """Targets (already box-checked) whose ``masks`` are ``uint8[N, H, W]`` for their image.

    Raises ``ValueError`` naming the image for a missing ``masks``, a wrong shape (not one
    ``H x W`` mask per box) or a non-binary dtype; bool masks are converted to uint8.
    """
    out = []
    for i, (target, (H, W)) in enumerate(zip(targets, sizes, strict=True)):
        n = target["boxes"].shape[0]
        masks = target.get("masks")
        if masks is None:
            raise ValueError(f"targets[{i}] has no 'masks': Mask R-CNN needs uint8[N, H, W] masks")
        if not isinstance(masks, Tensor) or tuple(masks.shape) != (n, H, W):
            got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(
                f"targets[{i}]['masks'] must be uint8[N, H, W] = [{n}, {H}, {W}] (one per box, the "
                f"image's size), got {got}"
            )
        if masks.dtype not in (torch.uint8, torch.bool):
            raise ValueError(f"targets[{i}]['masks'] must be uint8 (binary), got {masks.dtype}")
        out.append({**target, "masks": masks.to(torch.uint8)})
    return out


class MaskRCNN(FasterRCNN):
    """Faster R-CNN whose RoI heads also predict masks; see the module docstring.

    Args: as :class:`~structpred.models.faster_rcnn.FasterRCNN`, with ``roi_heads`` a
        :class:`~structpred.heads.mask_head.MaskRoIHeads`.
    """


    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: MaskRoIHeads,
        transform: DetectionTransform,
        num_classes: int,
    ) -> None:
        if not isinstance(roi_heads, MaskRoIHeads):
            raise ValueError(f"roi_heads must be a MaskRoIHeads, got {type(roi_heads).__name__}")
        super().__init__(backbone, rpn, roi_heads, transform, num_classes)

    def validate_targets(
        self, targets: Sequence[dict[str, Tensor]], sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Faster R-CNN's checks, then the masks' (:func:`check_masks`)."""
        return check_masks(super().validate_targets(targets, sizes), sizes)


@dataclass
class MaskRCNNConfig(FasterRCNNConfig):
    """:class:`FasterRCNNConfig` plus the mask branch (torchvision's defaults)."""

    mask_pool_size: int = 14
    mask_sampling_ratio: int = 2
    mask_layers: Sequence[int] = (256, 256, 256, 256)
    mask_dilation: int = 1
    mask_dim_reduced: int = 256


def build_mask_rcnn(backbone: nn.Module, num_classes: int, config: MaskRCNNConfig | None = None) -> MaskRCNN:
    """The module tree, written out: FPN-style backbone with ``out_channels``, K object classes."""
    check_num_classes(num_classes)
    c = config or MaskRCNNConfig()
    channels = int(backbone.out_channels)  # type: ignore[arg-type]
    roi_heads = MaskRoIHeads(
        *box_head_parts(channels, num_classes, c),
        multiscale_pooler(c.roi_op, c.featmap_names, c.mask_pool_size, c.mask_sampling_ratio),
        MaskHead(channels, c.mask_layers, c.mask_dilation),
        MaskPredictor(c.mask_layers[-1], c.mask_dim_reduced, num_classes + 1),
        **box_settings(c),
    )
    return MaskRCNN(backbone, build_rpn(channels, c), roi_heads, build_transform(c), num_classes)


# ---------------------------------------------------------------------------- builders
# ``num_classes`` counts object classes (background excluded; torchvision's COCO 91 = 90 + 1).


def _config(**overrides: Any) -> MaskRCNNConfig:
    return make_config(MaskRCNNConfig, overrides, "Mask R-CNN")


@register_model(task="instance_segmentation", peer_weights=("torchvision",))
def maskrcnn_resnet50_fpn(num_classes: int = 90, trainable_layers: int = 3, **config: Any) -> MaskRCNN:
    """Mask R-CNN, ResNet-50 (frozen BN) + FPN, torchvision's layout (load its weights with
    :func:`~structpred.models.from_torchvision`)."""
    from ..backbones.fpn import resnet50_fpn

    return build_mask_rcnn(resnet50_fpn(trainable_layers=trainable_layers), num_classes, _config(**config))


@register_model(task="instance_segmentation")
def maskrcnn_narrow_fpn(
    num_classes: int = 6, width: int = 16, fpn_channels: int = 32, **config: Any
) -> MaskRCNN:
    """The small from-scratch CPU model: ``fasterrcnn_narrow_fpn``'s backbone and settings
    (:data:`~structpred.models.faster_rcnn.NARROW_SETTINGS`) with a mask head as narrow as the
    FPN (four 3x3 convs of ``fpn_channels``; 14 x 14 RoIAlign -> 28 x 28 masks). Detections
    below 0.05 are dropped (torchvision's threshold): each one kept pastes a full-image mask."""
    narrow_mask = {
        "mask_layers": (fpn_channels,) * 4, "mask_dim_reduced": fpn_channels, "box_score_thresh": 0.05,
    }  # fmt: skip
    settings = {**NARROW_SETTINGS, **narrow_mask, **config}
    return build_mask_rcnn(narrow_backbone(width, fpn_channels), num_classes, _config(**settings))


@register_model(task="instance_segmentation")
def maskrcnn_fpn(
    num_classes: int = 6,
    backbone: str = "resnet18",
    fpn_channels: int = 256,
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> MaskRCNN:
    """Mask R-CNN + FPN over any registered backbone (``structpred.backbones.list_backbones()``);
    torchvision's settings unless overridden (any :class:`MaskRCNNConfig` field)."""
    neck, settings = any_backbone_fpn(backbone, fpn_channels, backbone_args, config)
    return build_mask_rcnn(neck, num_classes, _config(**settings))
