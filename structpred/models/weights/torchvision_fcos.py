"""torchvision FCOS in: our :class:`~structpred.models.fcos.FCOS` with the same tensors.

Supported: ``fcos_resnet50_fpn``, any weights and any ``num_classes`` (>= 2: torchvision's count
includes a background logit channel, kept as ours ``background_channel``), with its transform
sizes and normalisation, reference sizes, centre-sampling radius, score / NMS thresholds,
``topk_candidates`` and ``detections_per_img`` carried over, and its frozen parameters and
train / eval mode. The torchvision model is only read (attributes and ``state_dict``); nothing
here imports torchvision. Recognised by its structure (a head with a centre-ness branch); a
saved ``state_dict`` file by its tensor names (``recognises_state`` / ``state_rules``, used by
:func:`~structpred.models.weights.load_weights`).

torchvision name                                    ->  ours
    backbone.body.*, backbone.fpn.{inner,layer}_blocks.*  ->  the same
    backbone.fpn.extra_blocks.{p6,p7}.*             ->  backbone.fpn.extra_block.{p6,p7}.*
    head.{classification_head,regression_head}.*    ->  the same
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from torch import nn

from ...backbones.fpn import resnet50_fpn
from ..fcos import FCOS, FCOSConfig, build_fcos
from .renamer import Rule, copy_renamed
from .torchvision_detection import _BN_COUNTER, _backbone_kind
from .torchvision_retinanet import RULES as ONE_STAGE_RULES

logger = logging.getLogger(__name__)

SUPPORTED = "FCOS (fcos_resnet50_fpn)"

# torchvision's one-stage detectors share their names: RetinaNet's rules, first match wins.
RULES: tuple[Rule, ...] = ONE_STAGE_RULES
_STATE_MARKER = "head.regression_head.bbox_ctrness.weight"


def recognises(tv_model: nn.Module) -> bool:
    """A torchvision ``FCOS``: ``transform``, ``backbone``, ``anchor_generator`` and a ``head``
    whose regression branch has ``bbox_ctrness``."""
    head = getattr(tv_model, "head", None)
    return (
        all(hasattr(tv_model, name) for name in ("transform", "backbone", "anchor_generator"))
        and hasattr(getattr(head, "regression_head", None), "bbox_ctrness")
    )


def _tower_groups(tower: Any, where: str) -> tuple[int, int]:
    """``(num_convs, GroupNorm groups)`` of a ``[Conv2d, GroupNorm, ReLU] * n`` tower."""
    kinds = [type(m).__name__ for m in tower]
    n = len(kinds) // 3
    if n == 0 or kinds != ["Conv2d", "GroupNorm", "ReLU"] * n:
        raise ValueError(f"{where} is {kinds[:6]}...: only [Conv2d, GroupNorm, ReLU] towers are supported")
    return n, int(tower[1].num_groups)


def _settings(tv: Any) -> dict[str, Any]:
    """Our :class:`FCOSConfig` settings from the torchvision model's attributes."""
    t, gen = tv.transform, tv.anchor_generator
    if getattr(t, "fixed_size", None) is not None:
        raise ValueError("torchvision models with a fixed_size transform are not supported")
    if int(getattr(t, "size_divisible", 32)) != 32:
        raise ValueError(f"transform.size_divisible {t.size_divisible} is not supported (only 32)")
    if any(len(s) != 1 for s in gen.sizes) or any(tuple(r) != (1.0,) for r in gen.aspect_ratios):
        raise ValueError(
            f"FCOS needs one square reference box per location, got sizes {gen.sizes}, "
            f"aspect ratios {gen.aspect_ratios}"
        )
    convs, groups = _tower_groups(tv.head.classification_head.conv, "head.classification_head.conv")
    if _tower_groups(tv.head.regression_head.conv, "head.regression_head.conv") != (convs, groups):
        raise ValueError("the classification and regression towers differ: not supported")
    return dict(
        min_size=tuple(t.min_size),
        max_size=int(t.max_size),
        image_mean=tuple(t.image_mean),
        image_std=tuple(t.image_std),
        anchor_sizes=tuple(float(s[0]) for s in gen.sizes),
        center_sampling_radius=float(tv.center_sampling_radius),
        score_thresh=float(tv.score_thresh),
        nms_thresh=float(tv.nms_thresh),
        detections_per_img=int(tv.detections_per_img),
        topk_candidates=int(tv.topk_candidates),
        num_convs=convs,
        norm_groups=groups,
        background_channel=True,
    )


def _check_pyramid(tv: Any) -> None:
    """ResNet-50 C3-C5 + FPN + P6/P7 from P5, as ``fcos_resnet50_fpn``."""
    if _backbone_kind(tv) != "resnet50":
        raise ValueError("only the ResNet-50 FCOS backbone is supported")
    layers = dict(getattr(tv.backbone.body, "return_layers", {}))
    if sorted(layers) != ["layer2", "layer3", "layer4"]:
        raise ValueError(f"backbone returns {sorted(layers)}: only layer2-4 (C3-C5) are supported")
    extra = getattr(tv.backbone.fpn, "extra_blocks", None)
    if type(extra).__name__ != "LastLevelP6P7" or not getattr(extra, "use_P5", False):
        raise ValueError(f"FPN extra block {type(extra).__name__}: only LastLevelP6P7 from P5 is supported")


def convert(tv_model: nn.Module) -> FCOS:
    """Our FCOS with ``tv_model``'s weights, settings, frozen parameters and train / eval mode.

    Raises:
        ValueError: another backbone or pyramid, other head towers, ``num_classes < 2``, a
            ``fixed_size`` transform, or tensors that do not map one to one.
    """
    tv: Any = tv_model
    _check_pyramid(tv)
    settings = _settings(tv)
    logits = int(tv.head.classification_head.cls_logits.out_channels)
    if logits < 2:
        raise ValueError(
            f"torchvision FCOS with num_classes={logits}: its count includes the background "
            "channel, so at least 2 are needed for one object class"
        )
    # torchvision uses plain (trainable) batch norm when built without pretrained weights.
    plain_bn = any(isinstance(m, nn.BatchNorm2d) for m in tv.backbone.modules())
    backbone = resnet50_fpn(
        norm_layer=nn.BatchNorm2d if plain_bn else None,
        out_channels=int(tv.backbone.out_channels),
        in_keys=("c3", "c4", "c5"),
        extra_block="p6p7",
    )
    model = build_fcos(backbone, logits - 1, FCOSConfig(**settings))
    counters = any(name.endswith("num_batches_tracked") for name in model.state_dict())
    copy_renamed(model, tv_model, RULES, skip=() if counters else (_BN_COUNTER,))
    model.train(tv_model.training)
    logger.info("converted torchvision FCOS (%d classes + background channel)", logits - 1)
    return model


# ----------------------------------------------------------------- from a state dict file


def recognises_state(names: Collection[str]) -> bool:
    """A torchvision FCOS ``state_dict``: its centre-ness conv and P6 / P7 names."""
    return _STATE_MARKER in names and "backbone.fpn.extra_blocks.p6.weight" in names


def state_family(names: Collection[str]) -> str:
    """``"torchvision FCOS"``."""
    return "torchvision FCOS"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our FCOS ``model`` from a torchvision FCOS state dict.

    Raises:
        ValueError: ``model`` is not our FCOS, or not in torchvision's logit layout.
    """
    if not isinstance(model, FCOS):
        raise ValueError(f"torchvision FCOS weights need an FCOS, not {type(model).__name__}")
    if not model.background_channel:
        raise ValueError(
            "torchvision FCOS weights need torchvision's logit layout (background_channel=True, "
            "as fcos_resnet50_fpn builds it)"
        )
    counters = any(name.endswith("num_batches_tracked") for name in model.state_dict())
    return RULES, () if counters else (_BN_COUNTER,)
