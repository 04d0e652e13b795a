"""Peer weights in: ``from_torchvision(tv_model)`` returns the same network as ours, same tensors.

One dispatcher over a list of converters. Each converter has a ``recognises(tv_model)`` that reads
only the module's structure and attributes (nothing in this package imports torchvision) and a
``convert(tv_model)`` that builds our model with the peer's settings and fills every tensor by
explicit rename rules through the one strict renamer, :func:`copy_renamed` (every peer tensor
placed or declared skipped, every one of ours filled exactly once, every shape equal).

Supported: the families listed in :mod:`.families` (torchvision's Faster R-CNN / Mask R-CNN,
FCN / DeepLabV3, ViT / Swin ...); ``from_timm(timm_model)`` does the same for timm's ViT and Swin
classifiers.

Weights files in (fine-tuning): :func:`load_weights` fills a model built by the registry from a
checkpoint of ours or a torchvision ``state_dict`` file through the same rules, re-initialising
only the class-dependent tensors (:mod:`.class_dependent`) when the class count differs;
:func:`freeze` sets ``requires_grad=False`` on the backbone, its first stages or named parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .class_dependent import class_dependent_names
from .families import TIMM_FAMILIES, TORCHVISION_FAMILIES
from .freeze import backbone_stages, freeze
from .load import WeightsReport, load_weights
from .renamer import Rule, copy_renamed, rename_all

__all__ = [
    "Converter",
    "Rule",
    "WeightsReport",
    "backbone_stages",
    "class_dependent_names",
    "copy_renamed",
    "freeze",
    "from_timm",
    "from_torchvision",
    "load_weights",
    "rename_all",
]


@dataclass(frozen=True)
class Converter:
    """One model family: ``supported`` (what it takes, for error messages), ``recognises`` (by
    structure, no import of the peer library) and ``convert`` (the peer's model -> ours)."""

    supported: str
    recognises: Callable[[nn.Module], bool]
    convert: Callable[[nn.Module], nn.Module]


TORCHVISION: tuple[Converter, ...] = tuple(
    Converter(module.SUPPORTED, module.recognises, module.convert) for module in TORCHVISION_FAMILIES
)
TIMM: tuple[Converter, ...] = tuple(
    Converter(module.SUPPORTED, module.recognises, module.convert) for module in TIMM_FAMILIES
)


def from_torchvision(tv_model: nn.Module) -> nn.Module:
    """Our model with the torchvision model's weights, settings, frozen parameters and train / eval mode.

    Detection: ``fasterrcnn_*`` -> ``FasterRCNN``, ``maskrcnn_resnet50_fpn`` -> ``MaskRCNN``.
    Segmentation: ``fcn_resnet50`` / ``deeplabv3_resnet50`` -> ``AtrousSegmenter``.
    Optical flow: ``raft_large`` / ``raft_small`` -> ``RAFT`` (:meth:`~structpred.models.raft.RAFT.flow`
    returns torchvision's list of flows).

    Raises:
        ValueError: no converter recognises ``tv_model`` (the message lists what is supported),
            or the recognised family's converter refuses the variant or its tensors.
    """
    for converter in TORCHVISION:
        if converter.recognises(tv_model):
            return converter.convert(tv_model)
    supported = "; ".join(c.supported for c in TORCHVISION)
    raise ValueError(
        f"{type(tv_model).__name__} is not a torchvision detection model or segmentation model that "
        f"from_torchvision converts. Supported: {supported}"
    )


def from_timm(timm_model: nn.Module) -> nn.Module:
    """Our model with the timm model's weights and settings (ViT and Swin classifiers; see
    :mod:`.families`), in the timm model's train / eval mode. Nothing here imports timm.

    Raises:
        ValueError: no converter recognises ``timm_model`` (the message lists what is supported),
            or the recognised family's converter refuses the variant or its tensors.
    """
    for converter in TIMM:
        if converter.recognises(timm_model):
            return converter.convert(timm_model)
    supported = "; ".join(c.supported for c in TIMM)
    raise ValueError(
        f"{type(timm_model).__name__} is not a timm model that from_timm converts. Supported: {supported}"
    )
