"""torchvision Faster / Mask / Keypoint R-CNN in: our :class:`FasterRCNN` / ``MaskRCNN`` /
``KeypointRCNN`` with the same tensors.

Supported: ``fasterrcnn_resnet50_fpn``, ``fasterrcnn_mobilenet_v3_large_fpn``,
``fasterrcnn_mobilenet_v3_large_320_fpn``, ``maskrcnn_resnet50_fpn`` and
``keypointrcnn_resnet50_fpn``, any weights, any ``num_classes`` (and ``num_keypoints``), with
their transform, RPN, RoI-head, mask-head and keypoint-head settings (sizes, anchors,
top-n, NMS and score thresholds, sampler sizes, box coder weights) carried over, and their
train / eval mode and frozen parameters. The torchvision model is only read (attributes and
``state_dict``); nothing here imports torchvision. The family is recognised by its structure.
A saved ``state_dict`` file goes through the same rules (``recognises_state`` / ``state_rules``,
used by :func:`~structpred.models.weights.load_weights`), recognised by its tensor names.

torchvision name                                  ->  ours
    backbone.{body,fpn}.*                         ->  the same (our FPN builders use its names)
    rpn.head.conv.0.0.*                           ->  rpn.head.conv.*
    rpn.head.{cls_logits,bbox_pred}.*             ->  the same
    roi_heads.box_head.{fc6,fc7}.*                ->  the same
    roi_heads.box_predictor.{cls_score,bbox_pred}.*  ->  the same
    roi_heads.mask_head.{i}.0.*                   ->  roi_heads.mask_head.convs.{i}.*
    roi_heads.mask_predictor.*                    ->  the same
    roi_heads.keypoint_head.{2i}.*                ->  roi_heads.keypoint_head.convs.{i}.*
    roi_heads.keypoint_predictor.*                ->  the same
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from torch import nn

from ...backbones.fpn import mobilenet_v3_large_fpn, resnet50_fpn
from ..faster_rcnn import FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from ..keypoint_rcnn import KeypointRCNNConfig, build_keypoint_rcnn
from ..mask_rcnn import MaskRCNNConfig, build_mask_rcnn
from .renamer import Rule, copy_renamed

logger = logging.getLogger(__name__)

SUPPORTED = (
    "Faster R-CNN (fasterrcnn_resnet50_fpn, fasterrcnn_mobilenet_v3_large_fpn, "
    "fasterrcnn_mobilenet_v3_large_320_fpn), Mask R-CNN (maskrcnn_resnet50_fpn) and Keypoint "
    "R-CNN (keypointrcnn_resnet50_fpn)"
)
# torchvision's keypoint head is a Sequential of (conv, ReLU) pairs: conv i sits at index 2i.
_KEYPOINT_CONVS = 64  # rules for up to this many convs (torchvision's has 8)

# torchvision name -> ours; first match wins, every tensor must match one.
RULES: tuple[Rule, ...] = (
    (r"(backbone\.(?:body|fpn)\..+)", r"\1"),
    (r"rpn\.head\.conv\.0\.0\.(.+)", r"rpn.head.conv.\1"),
    (r"(rpn\.head\.(?:cls_logits|bbox_pred)\..+)", r"\1"),
    (r"(roi_heads\.box_head\.fc[67]\..+)", r"\1"),
    (r"(roi_heads\.box_predictor\.(?:cls_score|bbox_pred)\..+)", r"\1"),
    (r"roi_heads\.mask_head\.(\d+)\.0\.(.+)", r"roi_heads.mask_head.convs.\1.\2"),
    (r"(roi_heads\.mask_predictor\.(?:conv5_mask|mask_fcn_logits)\..+)", r"\1"),
    *(
        (rf"roi_heads\.keypoint_head\.{2 * i}\.(weight|bias)", rf"roi_heads.keypoint_head.convs.{i}.\1")
        for i in range(_KEYPOINT_CONVS)
    ),
    (r"(roi_heads\.keypoint_predictor\.kps_score_lowres\..+)", r"\1"),
)
# Skipped only when our model keeps no batch-norm counter (frozen BN) while theirs does.
_BN_COUNTER = r".*\.num_batches_tracked"


def recognises(tv_model: nn.Module) -> bool:
    """A torchvision ``GeneralizedRCNN``: ``transform``, ``backbone``, ``rpn`` and ``roi_heads``."""
    return all(hasattr(tv_model, name) for name in ("transform", "backbone", "rpn", "roi_heads"))


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


def transform_settings(t: Any) -> dict[str, Any]:
    """Our transform settings from a torchvision ``GeneralizedRCNNTransform`` (not ``fixed_size``)."""
    if getattr(t, "fixed_size", None) is not None:
        raise ValueError("torchvision models with a fixed_size transform are not supported")
    return dict(
        min_size=tuple(t.min_size),
        max_size=int(t.max_size),
        image_mean=tuple(t.image_mean),
        image_std=tuple(t.image_std),
    )


def plain_batch_norm(tv_model: Any) -> type[nn.BatchNorm2d] | None:
    """``nn.BatchNorm2d`` when the torchvision backbone has plain (trainable) batch norm, as it is
    built without pretrained weights (and always in RetinaNet v2); None (ours frozen) otherwise."""
    return nn.BatchNorm2d if any(isinstance(m, nn.BatchNorm2d) for m in tv_model.backbone.modules()) else None


def counter_skip(model: nn.Module) -> tuple[str, ...]:
    """The source names to skip: the batch-norm counters when ``model`` keeps none (frozen BN)."""
    counters = any(name.endswith("num_batches_tracked") for name in model.state_dict())
    return () if counters else (_BN_COUNTER,)


def copy_weights(model: nn.Module, tv_model: nn.Module, rules: tuple[Rule, ...]) -> None:
    """``tv_model``'s tensors into ``model`` by ``rules`` (which parameters train comes with them),
    then its train / eval mode."""
    copy_renamed(model, tv_model, rules, skip=counter_skip(model))
    model.train(tv_model.training)


def _settings(tv_model: Any) -> dict[str, Any]:
    """Our :class:`FasterRCNNConfig` settings from the torchvision model's attributes."""
    rpn, roi = tv_model.rpn, tv_model.roi_heads
    transform = transform_settings(tv_model.transform)
    if not all(hasattr(roi.box_head, fc) for fc in ("fc6", "fc7")):
        raise ValueError(
            f"box head {type(roi.box_head).__name__}: only the two-layer MLP box head is supported "
            "(not the _v2 models' conv heads)"
        )
    pool = roi.box_roi_pool
    out_size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
    return dict(
        **transform,
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


def _keypoint_settings(roi: Any) -> dict[str, Any]:
    """Our :class:`KeypointRCNNConfig`'s keypoint-branch settings from torchvision's ``roi_heads``."""
    pool, head, predictor = roi.keypoint_roi_pool, roi.keypoint_head, roi.keypoint_predictor
    kinds = [type(m).__name__ for m in head]
    if kinds != ["Conv2d", "ReLU"] * (len(kinds) // 2) or not kinds or len(kinds) > 2 * _KEYPOINT_CONVS:
        raise ValueError(
            f"keypoint_head is {kinds[:6]}...: only (conv 3x3, ReLU) keypoint heads are supported"
        )
    convs = list(head)[::2]
    if any(c.kernel_size != (3, 3) or c.padding != (1, 1) or c.dilation != (1, 1) for c in convs):
        raise ValueError("keypoint_head: only 3x3 convs with padding 1 are supported")
    if type(pool).__name__ != "MultiScaleRoIAlign":
        raise ValueError(f"unsupported keypoint_roi_pool {type(pool).__name__}")
    if tuple(pool.featmap_names) != tuple(roi.box_roi_pool.featmap_names):
        raise ValueError("keypoint and box poolers read different feature maps; not supported")
    deconv = getattr(predictor, "kps_score_lowres", None)
    if type(predictor).__name__ != "KeypointRCNNPredictor" or deconv is None:
        raise ValueError(f"unsupported keypoint_predictor {type(predictor).__name__}")
    if deconv.kernel_size != (4, 4) or deconv.stride != (2, 2) or deconv.padding != (1, 1):
        raise ValueError("keypoint_predictor: only a 4x4 stride-2 transposed conv is supported")
    out_size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
    return {
        "keypoint_pool_size": int(out_size),
        "keypoint_sampling_ratio": int(pool.sampling_ratio),
        "keypoint_layers": tuple(int(c.out_channels) for c in convs),
        "keypoint_up_scale": int(predictor.up_scale),
    }


def convert(tv_model: nn.Module) -> FasterRCNN:
    """Our Faster R-CNN, or Mask R-CNN / Keypoint R-CNN when the RoI heads have a mask / keypoint
    branch, with ``tv_model``'s weights, settings, frozen parameters and train / eval mode.

    Raises:
        ValueError: an unsupported variant (both mask and keypoint heads, another backbone, the
            ``_v2`` heads, a ``fixed_size`` transform), or tensors that do not map one to one.
    """
    tv: Any = tv_model
    has_keypoints = getattr(tv.roi_heads, "keypoint_predictor", None) is not None
    has_masks = getattr(tv.roi_heads, "mask_predictor", None) is not None
    if has_keypoints and has_masks:
        raise ValueError("a torchvision model with both mask and keypoint heads is not supported")
    kind = _backbone_kind(tv_model)
    settings = _settings(tv)
    num_classes = int(tv.roi_heads.box_predictor.cls_score.out_features) - 1
    build = resnet50_fpn if kind == "resnet50" else mobilenet_v3_large_fpn
    backbone = build(norm_layer=plain_batch_norm(tv))
    model: FasterRCNN
    if has_masks:
        config = MaskRCNNConfig(**settings, **_mask_settings(tv.roi_heads))
        model = build_mask_rcnn(backbone, num_classes, config)
    elif has_keypoints:
        keypoint_config = KeypointRCNNConfig(**settings, **_keypoint_settings(tv.roi_heads))
        num_keypoints = int(tv.roi_heads.keypoint_predictor.kps_score_lowres.out_channels)
        model = build_keypoint_rcnn(backbone, num_classes, num_keypoints, keypoint_config)
    else:
        model = build_faster_rcnn(backbone, num_classes, FasterRCNNConfig(**settings))
    copy_weights(model, tv_model, RULES)
    logger.info(
        "converted torchvision %s %s (%d classes + background)", kind, type(model).__name__, num_classes
    )
    return model


# ----------------------------------------------------------------- from a state dict file
_STATE_MARKER = "rpn.head.conv.0.0.weight"  # torchvision's RPN conv sits in Sequential(Conv2dNormActivation)


def recognises_state(names: Collection[str]) -> bool:
    """A torchvision Faster / Mask / Keypoint R-CNN ``state_dict``: its RPN conv and box predictor
    names."""
    return _STATE_MARKER in names and "roi_heads.box_predictor.cls_score.weight" in names


def state_family(names: Collection[str]) -> str:
    """``"torchvision Mask R-CNN"``, ``"torchvision Keypoint R-CNN"`` or ``"torchvision Faster
    R-CNN"`` from the tensor names."""
    if any(n.startswith("roi_heads.mask_predictor.") for n in names):
        return "torchvision Mask R-CNN"
    if any(n.startswith("roi_heads.keypoint_predictor.") for n in names):
        return "torchvision Keypoint R-CNN"
    return "torchvision Faster R-CNN"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our Faster / Mask / Keypoint R-CNN ``model`` from a torchvision state dict
    with tensors ``names`` (the batch-norm counters are skipped when our norm keeps none).

    Raises:
        ValueError: ``model`` is not our Faster / Mask / Keypoint R-CNN.
    """
    if not isinstance(model, FasterRCNN):
        raise ValueError(
            f"torchvision detection weights need a Faster / Mask / Keypoint R-CNN, not {type(model).__name__}"
        )
    return RULES, counter_skip(model)
