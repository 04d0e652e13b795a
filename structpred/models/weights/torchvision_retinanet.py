"""torchvision RetinaNet in: our :class:`~structpred.models.retinanet.RetinaNet` with the same tensors.

Supported: ``retinanet_resnet50_fpn`` (v1: P6/P7 from P5, plain towers, L1 box loss) and
``retinanet_resnet50_fpn_v2`` (P6/P7 from C5, GroupNorm towers, GIoU box loss), any weights and
any ``num_classes`` (>= 2: torchvision's count includes a background logit channel, kept as ours
``background_channel``), with their transform sizes and normalisation, anchors, matcher
thresholds, box loss, score / NMS thresholds, ``topk_candidates`` and ``detections_per_img``
carried over, and their frozen parameters and train / eval mode. The torchvision model is only
read (attributes and ``state_dict``); nothing here imports torchvision. Recognised by its
structure (a head with ``classification_head`` and a ``regression_head`` without centre-ness);
a saved ``state_dict`` file by its tensor names (``recognises_state`` / ``state_rules``, used by
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
from ..retinanet import RetinaNet, RetinaNetConfig, build_retinanet
from .renamer import Rule
from .torchvision_detection import (
    _backbone_kind,
    copy_weights,
    counter_skip,
    plain_batch_norm,
    transform_settings,
)

logger = logging.getLogger(__name__)

SUPPORTED = "RetinaNet (retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2)"

# torchvision name -> ours; first match wins, every tensor must match one.
RULES: tuple[Rule, ...] = (
    (r"(backbone\.(?:body|fpn\.inner_blocks|fpn\.layer_blocks)\..+)", r"\1"),
    (r"backbone\.fpn\.extra_blocks\.(p[67]\..+)", r"backbone.fpn.extra_block.\1"),
    (r"(head\.(?:classification_head|regression_head)\..+)", r"\1"),
)
_STATE_MARKER = "head.regression_head.bbox_reg.weight"
_BOX_LOSSES = ("l1", "smooth_l1", "giou")


# ------------------------------------------- shared by the one-stage converters (RetinaNet, FCOS)


def one_stage_settings(tv: Any) -> dict[str, Any]:
    """The settings torchvision's one-stage detectors share: transform (not ``fixed_size``,
    padding to 32), score / NMS thresholds, ``detections_per_img``, ``topk_candidates``, and
    torchvision's logit layout (``background_channel``)."""
    t = tv.transform
    transform = transform_settings(t)
    if int(getattr(t, "size_divisible", 32)) != 32:
        raise ValueError(f"transform.size_divisible {t.size_divisible} is not supported (only 32)")
    return dict(
        **transform,
        score_thresh=float(tv.score_thresh),
        nms_thresh=float(tv.nms_thresh),
        detections_per_img=int(tv.detections_per_img),
        topk_candidates=int(tv.topk_candidates),
        background_channel=True,
    )


def one_stage_pyramid(tv: Any, family: str) -> str:
    """``"p6p7"`` (P6 from P5) or ``"p6p7_c5"`` (from C5) after checking ResNet-50 C3-C5 + FPN +
    ``LastLevelP6P7``."""
    if _backbone_kind(tv) != "resnet50":
        raise ValueError(f"only the ResNet-50 {family} backbone is supported")
    layers = dict(getattr(tv.backbone.body, "return_layers", {}))
    if sorted(layers) != ["layer2", "layer3", "layer4"]:
        raise ValueError(f"backbone returns {sorted(layers)}: only layer2-4 (C3-C5) are supported")
    extra: Any = getattr(tv.backbone.fpn, "extra_blocks", None)
    if type(extra).__name__ != "LastLevelP6P7":
        raise ValueError(f"FPN extra block {type(extra).__name__}: only LastLevelP6P7 is supported")
    return "p6p7" if extra.use_P5 else "p6p7_c5"


def one_stage_backbone(tv: Any, extra_block: str) -> nn.Module:
    """Our ResNet-50 C3-C5 + FPN + ``extra_block`` with ``tv``'s batch norm and FPN width."""
    return resnet50_fpn(
        norm_layer=plain_batch_norm(tv),
        out_channels=int(tv.backbone.out_channels),
        in_keys=("c3", "c4", "c5"),
        extra_block=extra_block,
    )


def object_classes(num_logits: int, family: str) -> int:
    """K object classes of a torchvision one-stage head with ``num_logits`` class channels (its
    count includes the background channel)."""
    if num_logits < 2:
        raise ValueError(
            f"torchvision {family} with num_classes={num_logits}: its count includes the background "
            "channel, so at least 2 are needed for one object class"
        )
    return num_logits - 1


def one_stage_state_rules(
    model: nn.Module, cls: type[nn.Module], family: str, builder: str
) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our ``cls`` ``model`` from a torchvision ``family`` state dict.

    Raises:
        ValueError: ``model`` is not a ``cls``, or not in torchvision's logit layout (as
            ``builder`` builds it).
    """
    if not isinstance(model, cls):
        raise ValueError(f"torchvision {family} weights need a {cls.__name__}, not {type(model).__name__}")
    if not model.background_channel:
        raise ValueError(
            f"torchvision {family} weights need torchvision's logit layout (background_channel=True, "
            f"as {builder} builds it)"
        )
    return RULES, counter_skip(model)


def recognises(tv_model: nn.Module) -> bool:
    """A torchvision ``RetinaNet``: ``transform``, ``backbone``, ``anchor_generator`` and a ``head``
    whose regression branch has ``bbox_reg`` and no centre-ness (that is FCOS)."""
    head = getattr(tv_model, "head", None)
    regression = getattr(head, "regression_head", None)
    return (
        all(hasattr(tv_model, name) for name in ("transform", "backbone", "anchor_generator"))
        and hasattr(head, "classification_head")
        and hasattr(regression, "bbox_reg")
        and not hasattr(regression, "bbox_ctrness")
    )


def _tower(tower: Any, where: str) -> tuple[int, int]:
    """``(num_convs, GroupNorm groups or 0)`` of a tower of ``[Conv2d, (GroupNorm), ReLU]`` blocks."""
    kinds = [[type(m).__name__ for m in block] for block in tower]
    if kinds and all(k == ["Conv2d", "ReLU"] for k in kinds):
        return len(kinds), 0
    if kinds and all(k == ["Conv2d", "GroupNorm", "ReLU"] for k in kinds):
        groups = {int(block[1].num_groups) for block in tower}
        if len(groups) == 1:
            return len(kinds), groups.pop()
    raise ValueError(f"{where} is {kinds[:2]}...: only [Conv2d, (GroupNorm), ReLU] towers are supported")


def _settings(tv: Any) -> dict[str, Any]:
    """Our :class:`RetinaNetConfig` settings from the torchvision model's attributes."""
    gen, matcher = tv.anchor_generator, tv.proposal_matcher
    shared = one_stage_settings(tv)
    if not getattr(matcher, "allow_low_quality_matches", False):
        raise ValueError("only a proposal_matcher with allow_low_quality_matches=True is supported")
    weights = tuple(float(w) for w in tv.box_coder.weights)
    if weights != (1.0, 1.0, 1.0, 1.0) or tuple(tv.head.regression_head.box_coder.weights) != weights:
        raise ValueError(f"box coder weights {weights}: only (1, 1, 1, 1) are supported")
    head = tv.head
    convs, groups = _tower(head.classification_head.conv, "head.classification_head.conv")
    if _tower(head.regression_head.conv, "head.regression_head.conv") != (convs, groups):
        raise ValueError("the classification and regression towers differ: not supported")
    loss = str(getattr(head.regression_head, "_loss_type", "l1"))
    if loss not in _BOX_LOSSES:
        raise ValueError(f"regression loss {loss!r}: only {_BOX_LOSSES} are supported")
    return dict(
        **shared,
        anchor_sizes=tuple(tuple(s) for s in gen.sizes),
        aspect_ratios=tuple(tuple(r) for r in gen.aspect_ratios),
        fg_iou_thresh=float(matcher.high_threshold),
        bg_iou_thresh=float(matcher.low_threshold),
        num_convs=convs,
        norm_groups=groups,
        box_loss=loss,
    )


def convert(tv_model: nn.Module) -> RetinaNet:
    """Our RetinaNet with ``tv_model``'s weights, settings, frozen parameters and train / eval mode.

    Raises:
        ValueError: another backbone or pyramid, other head towers or box coder, ``num_classes <
            2``, a ``fixed_size`` transform, or tensors that do not map one to one.
    """
    tv: Any = tv_model
    extra = one_stage_pyramid(tv, "RetinaNet")
    settings = _settings(tv)
    num_classes = object_classes(int(tv.head.classification_head.num_classes), "RetinaNet")
    model = build_retinanet(one_stage_backbone(tv, extra), num_classes, RetinaNetConfig(**settings))
    copy_weights(model, tv_model, RULES)
    logger.info("converted torchvision RetinaNet (%d classes + background channel)", num_classes)
    return model


# ----------------------------------------------------------------- from a state dict file


def recognises_state(names: Collection[str]) -> bool:
    """A torchvision RetinaNet ``state_dict``: its box regression conv and P6 names, no centre-ness."""
    return (
        _STATE_MARKER in names
        and "backbone.fpn.extra_blocks.p6.weight" in names
        and "head.regression_head.bbox_ctrness.weight" not in names
    )


def state_family(names: Collection[str]) -> str:
    """``"torchvision RetinaNet"``."""
    return "torchvision RetinaNet"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our RetinaNet ``model`` from a torchvision RetinaNet state dict
    (v1 or v2: build ours with the matching builder).

    Raises:
        ValueError: ``model`` is not our RetinaNet, or not in torchvision's logit layout.
    """
    return one_stage_state_rules(model, RetinaNet, "RetinaNet", "retinanet_resnet50_fpn")
