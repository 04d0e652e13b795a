"""The torchvision and timm model families ``from_torchvision``, ``from_timm`` and ``load_weights``
convert: one module each.

A family module provides ``SUPPORTED`` (what it takes, for error messages), ``recognises(tv_model)``
and ``convert(tv_model)`` (a built torchvision model, recognised by its structure: nothing here
imports torchvision or timm), and ``recognises_state(names)``, ``state_family(names)`` and
``state_rules(model, names)`` (a saved ``state_dict`` file, recognised by its tensor names), and
optionally ``adapt_state(model, state) -> state`` (tensors changed before renaming, e.g. a ViT
position table resampled to another input size). A new
family is a new module plus its line here.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    timm_swin,
    timm_vit,
    torchvision_detection,
    torchvision_fcos,
    torchvision_raft,
    torchvision_retinanet,
    torchvision_segmentation,
    torchvision_swin,
    torchvision_vit,
)

# In the order they are tried (a family recognised by a more specific structure comes first).
TORCHVISION_FAMILIES: tuple[ModuleType, ...] = (
    torchvision_fcos,  # before any family recognised by a one-stage head: FCOS's has centre-ness
    torchvision_retinanet,
    torchvision_detection,
    torchvision_segmentation,
    torchvision_vit,  # classifiers: recognised by their own structure, disjoint from the above
    torchvision_swin,
    torchvision_raft,  # optical flow: recognised by its corr_block / update_block
)

# timm's classifiers (``from_timm``; ``load_weights`` on a timm state dict file).
TIMM_FAMILIES: tuple[ModuleType, ...] = (timm_vit, timm_swin)
