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

from ..fcos import FCOS, FCOSConfig, build_fcos
from .renamer import Rule
from .torchvision_detection import copy_weights
from .torchvision_retinanet import RULES as ONE_STAGE_RULES
from .torchvision_retinanet import (
    object_classes,
    one_stage_backbone,
    one_stage_pyramid,
    one_stage_settings,
    one_stage_state_rules,
)

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
    gen = tv.anchor_generator
    shared = one_stage_settings(tv)
    if any(len(s) != 1 for s in gen.sizes) or any(tuple(r) != (1.0,) for r in gen.aspect_ratios):
        raise ValueError(
            f"FCOS needs one square reference box per location, got sizes {gen.sizes}, "
            f"aspect ratios {gen.aspect_ratios}"
        )
    convs, groups = _tower_groups(tv.head.classification_head.conv, "head.classification_head.conv")
    if _tower_groups(tv.head.regression_head.conv, "head.regression_head.conv") != (convs, groups):
        raise ValueError("the classification and regression towers differ: not supported")
    return dict(
        **shared,
        anchor_sizes=tuple(float(s[0]) for s in gen.sizes),
        center_sampling_radius=float(tv.center_sampling_radius),
        num_convs=convs,
        norm_groups=groups,
    )


def convert(tv_model: nn.Module) -> FCOS:
    """Our FCOS with ``tv_model``'s weights, settings, frozen parameters and train / eval mode.

    Raises:
        ValueError: another backbone or pyramid, other head towers, ``num_classes < 2``, a
            ``fixed_size`` transform, or tensors that do not map one to one.
    """
    tv: Any = tv_model
    if one_stage_pyramid(tv, "FCOS") != "p6p7":
        raise ValueError("FPN extra block LastLevelP6P7 from C5: only LastLevelP6P7 from P5 is supported")
    settings = _settings(tv)
    num_classes = object_classes(int(tv.head.classification_head.cls_logits.out_channels), "FCOS")
    model = build_fcos(one_stage_backbone(tv, "p6p7"), num_classes, FCOSConfig(**settings))
    copy_weights(model, tv_model, RULES)
    logger.info("converted torchvision FCOS (%d classes + background channel)", num_classes)
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
    return one_stage_state_rules(model, FCOS, "FCOS", "fcos_resnet50_fpn")
