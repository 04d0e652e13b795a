"""torchvision segmentation weights in: ``from_torchvision_segmentation(tv_model)``.

Accepts torchvision's ``fcn_resnet50`` and ``deeplabv3_resnet50`` (any weights, any
``num_classes``, with or without ``aux_loss``) and returns our :class:`AtrousSegmenter` with the
same tensors, copied by :func:`structpred.models.convert.copy_weights` with the explicit rename
rules below (it asserts that every tensor finds its place with the same shape, both ways).

torchvision name                          ->  ours
    backbone.*                            ->  net.backbone.*                (same ResNet names)
    classifier.0.convs.{0..3}.{0,1}.*     ->  net.head.aspp.branches.{0..3}.{0,1}.*
    classifier.0.convs.4.{1,2}.*          ->  net.head.aspp.pooling.{0,1}.*  (image pooling)
    classifier.0.project.{0,1}.*          ->  net.head.aspp.project.{0,1}.*
    classifier.{1,2}.* / classifier.4.*   ->  net.head.conv.{0,1}.* / net.head.classifier.*
    FCNHead: {classifier,aux_classifier}.{0,1}.* / .4.*
                                          ->  net.{head,aux_head}.conv.{0,1}.* / .classifier.*

Convention: torchvision's segmentation models take the *normalised* batch (their preset
transform normalises); ours take ``[0, 1]`` images and normalise inside with ImageNet mean / std
(the config's ``image_mean`` / ``image_std``). So ``ours(x)`` equals ``tv((x - mean) / std)``; the
torchvision model's ``out`` is our ``predictions["logits"]``, its ``aux`` our ``predictions["aux"]``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from torch import nn

from .convert import copy_weights
from .deeplab import AtrousSegmenter, DeepLabConfig, build_atrous

logger = logging.getLogger(__name__)

_DEEPLAB_RULES: tuple[tuple[str, str], ...] = (
    (r"^classifier\.0\.convs\.([0-3])\.", r"net.head.aspp.branches.\1."),
    (r"^classifier\.0\.convs\.4\.1\.", "net.head.aspp.pooling.0."),
    (r"^classifier\.0\.convs\.4\.2\.", "net.head.aspp.pooling.1."),
    (r"^classifier\.0\.project\.", "net.head.aspp.project."),
    (r"^classifier\.1\.", "net.head.conv.0."),
    (r"^classifier\.2\.", "net.head.conv.1."),
    (r"^classifier\.4\.", "net.head.classifier."),
)
_FCN_RULES: tuple[tuple[str, str], ...] = (
    (r"^classifier\.([01])\.", r"net.head.conv.\1."),
    (r"^classifier\.4\.", "net.head.classifier."),
)
_COMMON_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.", "net.backbone."),
    (r"^aux_classifier\.([01])\.", r"net.aux_head.conv.\1."),
    (r"^aux_classifier\.4\.", "net.aux_head.classifier."),
)


def _renamer(rules: tuple[tuple[str, str], ...]) -> Any:
    def rename(name: str) -> str:
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, name)
            if n:
                return new
        raise ValueError(f"no rename rule for torchvision tensor {name!r}")

    return rename


def _head_kind(tv_model: nn.Module) -> str:
    """``"deeplabv3"`` or ``"fcn"``, from the classifier's structure (no torchvision import)."""
    classifier = getattr(tv_model, "classifier", None)
    if not isinstance(classifier, nn.Sequential) or not hasattr(tv_model, "backbone"):
        raise ValueError(f"{type(tv_model).__name__} is not a torchvision segmentation model")
    first = type(classifier[0]).__name__
    if first == "ASPP":
        return "deeplabv3"
    if isinstance(classifier[0], nn.Conv2d) and len(classifier) == 5:
        return "fcn"
    raise ValueError(f"unsupported torchvision segmentation head starting with {first}")


def _backbone_dilation(backbone: nn.Module) -> tuple[bool, bool, bool]:
    """Which of layer2..4 are dilated; checks the backbone is a ResNet-50."""
    names: dict[str, Any] = dict(backbone.named_children())
    if not all(f"layer{i}" in names for i in range(1, 5)):
        raise ValueError("the torchvision backbone is not a ResNet (no layer1..layer4)")
    blocks = tuple(len(names[f"layer{i}"]) for i in range(1, 5))
    if blocks != (3, 4, 6, 3) or not hasattr(names["layer1"][0], "conv3"):
        raise ValueError(f"only ResNet-50 backbones are supported, got blocks {blocks}")
    dilated = tuple(names[f"layer{i}"][0].conv2.stride == (1, 1) for i in (2, 3, 4))
    return dilated[0], dilated[1], dilated[2]


def from_torchvision_segmentation(tv_model: nn.Module) -> AtrousSegmenter:
    """Our segmenter with ``tv_model``'s weights, head settings and train / eval mode.

    ``tv_model``: torchvision ``fcn_resnet50(...)`` or ``deeplabv3_resnet50(...)``.
    """
    from ..backbones.resnet import resnet50

    kind = _head_kind(tv_model)
    tv: Any = tv_model
    dilation = _backbone_dilation(tv.backbone)
    num_classes = int(tv.classifier[-1].out_channels)
    aux = getattr(tv, "aux_classifier", None) is not None
    settings: dict[str, Any] = {"head": kind, "num_classes": num_classes, "aux": aux}
    if kind == "deeplabv3":
        aspp = tv.classifier[0]
        settings |= {
            "atrous_rates": tuple(int(branch[0].dilation[0]) for branch in list(aspp.convs)[1:-1]),
            "aspp_channels": int(aspp.project[0].out_channels),
            "dropout": float(aspp.project[3].p),
        }
    config = DeepLabConfig(**settings)
    backbone = resnet50(norm_layer=nn.BatchNorm2d, replace_stride_with_dilation=dilation)
    model = build_atrous(backbone, 2048, 1024, config)
    rules = _COMMON_RULES + (_DEEPLAB_RULES if kind == "deeplabv3" else _FCN_RULES)
    copy_weights(model, tv_model, rename=_renamer(rules))
    model.train(tv_model.training)
    logger.info("converted torchvision %s_resnet50 (%d classes, aux=%s)", kind, num_classes, aux)
    return model
