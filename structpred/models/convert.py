"""torchvision weights in: ``from_torchvision(tv_model)`` returns the same network as ours.

The torchvision model is only read (its configuration and ``state_dict``); nothing of it runs in
ours. Every tensor is copied by an explicit name rule, and the copy asserts that every
torchvision tensor found its place with the same shape and that none of ours was left out
(nanoGPT's rule: a checkpoint import that checks every shape).

Supported: ``fasterrcnn_resnet50_fpn``, ``fasterrcnn_mobilenet_v3_large_fpn``,
``fasterrcnn_mobilenet_v3_large_320_fpn`` and ``maskrcnn_resnet50_fpn``, any weights and any
``num_classes``, with their transform, RPN, RoI-head and mask-head settings (score thresholds,
top-n, NMS, sizes) carried over. :func:`from_torchvision` is the one entry point; it recognises
a model family by its structure (no torchvision import), one ``if`` per family.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .faster_rcnn import FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from .mask_rcnn import MaskRCNNConfig, build_mask_rcnn

logger = logging.getLogger(__name__)

# torchvision name -> ours, first match wins; names not listed are identical.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.", r"roi_heads.mask_head.convs.\1."),
)


def _rename(name: str) -> str:
    for pattern, repl in _RENAMES:
        name, n = re.subn(pattern, repl, name)
        if n:
            break
    return name


def _backbone_kind(tv_model: nn.Module) -> str:
    """``"resnet50"`` or ``"mobilenet_v3_large"`` from the torchvision backbone's structure."""
    body = getattr(getattr(tv_model, "backbone", None), "body", None)
    if body is None:
        raise ValueError(f"{type(tv_model).__name__} has no backbone.body: not a torchvision detection model")
    names = dict(body.named_children())
    if "layer4" in names and "layer3" in names:
        blocks = len(names["layer3"])
        first = names["layer1"][0]
        if blocks == 6 and hasattr(first, "conv3"):
            return "resnet50"
        raise ValueError(f"unsupported ResNet backbone ({blocks} blocks in layer3)")
    if any(type(m).__name__ == "InvertedResidual" for m in body.modules()):
        return "mobilenet_v3_large"
    raise ValueError(f"unsupported torchvision backbone {type(body).__name__}")


def _settings(tv_model: Any) -> dict[str, Any]:
    """Our :class:`FasterRCNNConfig` settings from the torchvision model's attributes."""
    t, rpn, roi = tv_model.transform, tv_model.rpn, tv_model.roi_heads
    if getattr(t, "fixed_size", None) is not None:
        raise ValueError("torchvision models with a fixed_size transform are not supported")
    pool = roi.box_roi_pool
    out_size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
    return dict(
        min_size=tuple(t.min_size),
        max_size=int(t.max_size),
        image_mean=tuple(t.image_mean),
        image_std=tuple(t.image_std),
        anchor_sizes=tuple(tuple(s) for s in rpn.anchor_generator.sizes),
        aspect_ratios=tuple(tuple(r) for r in rpn.anchor_generator.aspect_ratios),
        rpn_pre_nms_top_n=dict(rpn._pre_nms_top_n),
        rpn_post_nms_top_n=dict(rpn._post_nms_top_n),
        rpn_nms_thresh=float(rpn.nms_thresh),
        rpn_score_thresh=float(rpn.score_thresh),
        rpn_fg_iou_thresh=float(rpn.proposal_matcher.high_threshold),
        rpn_bg_iou_thresh=float(rpn.proposal_matcher.low_threshold),
        rpn_batch_size_per_image=int(rpn.fg_bg_sampler.batch_size_per_image),
        rpn_positive_fraction=float(rpn.fg_bg_sampler.positive_fraction),
        featmap_names=tuple(pool.featmap_names),
        pool_size=int(out_size),
        sampling_ratio=int(pool.sampling_ratio),
        representation_size=int(roi.box_head.fc7.out_features),
        box_fg_iou_thresh=float(roi.proposal_matcher.high_threshold),
        box_bg_iou_thresh=float(roi.proposal_matcher.low_threshold),
        box_batch_size_per_image=int(roi.fg_bg_sampler.batch_size_per_image),
        box_positive_fraction=float(roi.fg_bg_sampler.positive_fraction),
        bbox_reg_weights=tuple(float(w) for w in roi.box_coder.weights),
        box_score_thresh=float(roi.score_thresh),
        box_nms_thresh=float(roi.nms_thresh),
        box_detections_per_img=int(roi.detections_per_img),
    )


def copy_weights(ours: nn.Module, tv_model: nn.Module, rename: Callable[[str], str] | None = None) -> None:
    """Copy every torchvision tensor into ``ours`` by ``rename`` (default: :data:`_RENAMES`); assert
    names and shapes. ``convert_segmentation`` passes its own ``rename``."""
    rename = rename or _rename
    theirs = {rename(k): v for k, v in tv_model.state_dict().items()}
    mine = ours.state_dict()
    if not any(k.endswith("num_batches_tracked") for k in mine):  # frozen BN has no counter
        theirs = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(mine) - set(theirs))
    unexpected = sorted(set(theirs) - set(mine))
    if missing or unexpected:
        raise ValueError(
            f"weights do not map 1:1: ours without a torchvision tensor {missing[:8]}, "
            f"torchvision tensors without a place {unexpected[:8]}"
        )
    for name, value in theirs.items():
        if mine[name].shape != value.shape:
            raise ValueError(
                f"{name}: torchvision shape {tuple(value.shape)} != ours {tuple(mine[name].shape)}"
            )
    with torch.no_grad():
        for name, value in theirs.items():
            mine[name].copy_(value)
    # The same parameters are frozen as in the torchvision model.
    tv_grad = {rename(k): p.requires_grad for k, p in tv_model.named_parameters()}
    for name, p in ours.named_parameters():
        p.requires_grad_(tv_grad.get(name, p.requires_grad))


def _mask_settings(roi: Any) -> dict[str, Any]:
    """Our :class:`MaskRCNNConfig`'s mask-branch settings from torchvision's ``roi_heads``."""
    pool, head, predictor = roi.mask_roi_pool, roi.mask_head, roi.mask_predictor
    for i, block in enumerate(head):
        kinds = [type(m).__name__ for m in block]
        if kinds != ["Conv2d", "ReLU"]:
            raise ValueError(
                f"mask_head[{i}] is {kinds}: only conv + ReLU mask heads are supported "
                "(not maskrcnn_resnet50_fpn_v2's normalised ones)"
            )
    if type(pool).__name__ != "MultiScaleRoIAlign":
        raise ValueError(f"unsupported mask_roi_pool {type(pool).__name__}")
    out_size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
    if tuple(pool.featmap_names) != tuple(roi.box_roi_pool.featmap_names):
        raise ValueError("mask and box poolers read different feature maps; not supported")
    return {
        "mask_pool_size": int(out_size),
        "mask_sampling_ratio": int(pool.sampling_ratio),
        "mask_layers": tuple(int(block[0].out_channels) for block in head),
        "mask_dilation": int(head[0][0].dilation[0]),
        "mask_dim_reduced": int(predictor.conv5_mask.out_channels),
    }


def _is_detection(tv_model: nn.Module) -> bool:
    """A torchvision ``GeneralizedRCNN`` (Faster / Mask R-CNN): transform, backbone, rpn, roi_heads."""
    return all(hasattr(tv_model, name) for name in ("transform", "backbone", "rpn", "roi_heads"))


def _detection_from_torchvision(tv_model: nn.Module) -> FasterRCNN:
    """Our Faster R-CNN, or Mask R-CNN when the RoI heads have a mask branch."""
    from ..layers.fpn import mobilenet_v3_large_fpn, resnet50_fpn

    kind = _backbone_kind(tv_model)
    tv: Any = tv_model
    settings = _settings(tv)
    num_classes = int(tv.roi_heads.box_predictor.cls_score.out_features) - 1
    # torchvision uses plain (trainable) batch norm when built without pretrained weights.
    plain_bn = any(isinstance(m, nn.BatchNorm2d) for m in tv.backbone.modules())
    norm = nn.BatchNorm2d if plain_bn else None
    # Which parameters train is copied from the torchvision model by copy_weights.
    build = resnet50_fpn if kind == "resnet50" else mobilenet_v3_large_fpn
    backbone = build(norm_layer=norm)
    model: FasterRCNN
    if getattr(tv.roi_heads, "mask_predictor", None) is not None:
        config = MaskRCNNConfig(**settings, **_mask_settings(tv.roi_heads))
        model = build_mask_rcnn(backbone, num_classes, config)
    else:
        model = build_faster_rcnn(backbone, num_classes, FasterRCNNConfig(**settings))
    copy_weights(model, tv_model)
    model.train(tv_model.training)
    logger.info(
        "converted torchvision %s %s (%d classes + background)", kind, type(model).__name__, num_classes
    )
    return model


def from_torchvision(tv_model: nn.Module) -> nn.Module:
    """Our model with the torchvision model's weights and settings (its train/eval mode too).

    Detection: ``fasterrcnn_*`` -> :class:`FasterRCNN`, ``maskrcnn_resnet50_fpn`` -> ``MaskRCNN``.
    Segmentation: ``fcn_resnet50`` / ``deeplabv3_resnet50`` -> ``AtrousSegmenter`` (see
    :mod:`structpred.models.convert_segmentation`).
    """
    if _is_detection(tv_model):
        return _detection_from_torchvision(tv_model)
    from torchvision.models.segmentation import FCN, DeepLabV3  # the peer's classes, read only

    if isinstance(tv_model, DeepLabV3 | FCN):
        from .convert_segmentation import from_torchvision_segmentation

        return from_torchvision_segmentation(tv_model)
    raise ValueError(
        f"{type(tv_model).__name__} is not a torchvision detection model (Faster / Mask R-CNN) "
        "or segmentation model (FCN / DeepLabV3) that structpred converts"
    )
