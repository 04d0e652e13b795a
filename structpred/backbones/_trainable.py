"""Freezing a transformer backbone by units (ViT: the embedding, then one unit per block; Swin: the
patch embedding, then one unit per stage), with the rule of the CNN backbones' ``trainable_layers``
(torchvision's ``trainable_backbone_layers``): the *last* ``trainable_layers`` units keep
``requires_grad``, every earlier one is frozen; 0 freezes them all.

A unit is a list of names relative to the backbone (a submodule, e.g. ``blocks.3``, or a parameter,
e.g. ``cls_token``); together the units cover every parameter of the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ._common import check_trainable_layers


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def set_trainable_units(
    module: nn.Module, units: Sequence[Sequence[str]], trainable_layers: int, where: str
) -> None:
    """Set ``requires_grad`` of ``module``'s parameters: those of the last ``trainable_layers``
    ``units`` train, those of the earlier units are frozen.

    Raises:
        ValueError: ``trainable_layers`` outside ``0..len(units)`` (named with ``where``).
    """
    check_trainable_layers(trainable_layers, len(units), where)
    frozen = [name for unit in units[: len(units) - trainable_layers] for name in unit]
    covered = [name for unit in units for name in unit]
    for name, p in module.named_parameters():
        assert any(_under(name, c) for c in covered), f"{where}: parameter {name} is in no unit"
        p.requires_grad_(not any(_under(name, f) for f in frozen))
