"""torchvision FCN / DeepLabV3 in: our :class:`AtrousSegmenter` with the same tensors.

Supported: ``fcn_resnet50`` and ``deeplabv3_resnet50`` (any weights, any ``num_classes``, with
or without ``aux_loss``), with their dilation, ASPP rates, widths and dropout, frozen parameters
and train / eval mode. The torchvision model is only read (attributes and ``state_dict``);
nothing here imports torchvision. The family is recognised by its structure. A saved
``state_dict`` file goes through the same rules (``recognises_state`` / ``state_rules``, used by
:func:`~structpred.models.weights.load_weights`), recognised by its tensor names.

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
torchvision model's ``out`` is our ``predictions["logits"]``, its ``aux`` our auxiliary logits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from torch import nn

from ...backbones.resnet import resnet50
from ..deeplab import AtrousSegmenter, DeepLabConfig, build_atrous
from .renamer import Rule, copy_renamed

logger = logging.getLogger(__name__)

SUPPORTED = "FCN (fcn_resnet50) and DeepLabV3 (deeplabv3_resnet50), with or without aux_loss"

# torchvision name -> ours; first match wins, every tensor must match one.
_COMMON_RULES: tuple[Rule, ...] = (
    (r"backbone\.(.+)", r"net.backbone.\1"),
    (r"aux_classifier\.([01])\.(.+)", r"net.aux_head.conv.\1.\2"),
    (r"aux_classifier\.4\.(.+)", r"net.aux_head.classifier.\1"),
)
DEEPLAB_RULES: tuple[Rule, ...] = _COMMON_RULES + (
    (r"classifier\.0\.convs\.([0-3])\.(.+)", r"net.head.aspp.branches.\1.\2"),
    (r"classifier\.0\.convs\.4\.1\.(.+)", r"net.head.aspp.pooling.0.\1"),
    (r"classifier\.0\.convs\.4\.2\.(.+)", r"net.head.aspp.pooling.1.\1"),
    (r"classifier\.0\.project\.(.+)", r"net.head.aspp.project.\1"),
    (r"classifier\.1\.(.+)", r"net.head.conv.0.\1"),
    (r"classifier\.2\.(.+)", r"net.head.conv.1.\1"),
    (r"classifier\.4\.(.+)", r"net.head.classifier.\1"),
)
FCN_RULES: tuple[Rule, ...] = _COMMON_RULES + (
    (r"classifier\.([01])\.(.+)", r"net.head.conv.\1.\2"),
    (r"classifier\.4\.(.+)", r"net.head.classifier.\1"),
)


def _head_kind(tv_model: nn.Module) -> str:
    """``"deeplabv3"`` or ``"fcn"``, from the classifier's structure."""
    classifier = getattr(tv_model, "classifier", None)
    if not isinstance(classifier, nn.Sequential) or not hasattr(tv_model, "backbone"):
        raise ValueError(f"{type(tv_model).__name__} is not a torchvision segmentation model")
    first = type(classifier[0]).__name__
    if first == "ASPP":
        return "deeplabv3"
    if isinstance(classifier[0], nn.Conv2d) and len(classifier) == 5:
        return "fcn"
    raise ValueError(f"unsupported torchvision segmentation head starting with {first}")


def recognises(tv_model: nn.Module) -> bool:
    """A torchvision FCN / DeepLabV3: a ``backbone``, an ``aux_classifier`` attribute (maybe
    ``None``) and a ``classifier`` that is an ASPP head or FCN's 5-layer head."""
    if not hasattr(tv_model, "aux_classifier"):
        return False
    try:
        _head_kind(tv_model)
    except ValueError:
        return False
    return True


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
    """Our segmenter with ``tv_model``'s weights, head settings, frozen parameters and train / eval mode.

    ``tv_model``: torchvision ``fcn_resnet50(...)`` or ``deeplabv3_resnet50(...)``.

    Raises:
        ValueError: not an FCN / DeepLabV3, a backbone other than ResNet-50, or tensors that do
            not map one to one.
    """
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
    model = build_atrous(backbone, config)
    copy_renamed(model, tv_model, DEEPLAB_RULES if kind == "deeplabv3" else FCN_RULES)
    model.train(tv_model.training)
    logger.info("converted torchvision %s_resnet50 (%d classes, aux=%s)", kind, num_classes, aux)
    return model


convert = from_torchvision_segmentation


# ----------------------------------------------------------------- from a state dict file
_DEEPLAB_MARKER = "classifier.0.convs.0.0.weight"  # ASPP's 1x1 branch


def recognises_state(names: Collection[str]) -> bool:
    """A torchvision FCN / DeepLabV3 ``state_dict``: a ResNet ``backbone.*`` and ``classifier.4``."""
    return "backbone.conv1.weight" in names and "classifier.4.weight" in names


def state_family(names: Collection[str]) -> str:
    """``"torchvision DeepLabV3"`` or ``"torchvision FCN"`` from the tensor names."""
    return "torchvision DeepLabV3" if _DEEPLAB_MARKER in names else "torchvision FCN"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our :class:`AtrousSegmenter` ``model`` from a torchvision FCN /
    DeepLabV3 state dict with tensors ``names``.

    Raises:
        ValueError: ``model`` is not an AtrousSegmenter, or its head (ASPP or FCN) is not the file's.
    """
    net = getattr(model, "net", None)
    if not isinstance(model, AtrousSegmenter) or net is None:
        raise ValueError(
            f"torchvision segmentation weights need an AtrousSegmenter, not {type(model).__name__}"
        )
    deeplab_file = _DEEPLAB_MARKER in names
    deeplab_model = hasattr(net.head, "aspp")
    if deeplab_file != deeplab_model:
        ours = "DeepLabV3 (ASPP)" if deeplab_model else "FCN"
        raise ValueError(f"the file holds {state_family(names)} weights but the model's head is {ours}")
    return (DEEPLAB_RULES if deeplab_file else FCN_RULES), ()
