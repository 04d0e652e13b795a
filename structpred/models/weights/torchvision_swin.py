"""Scaffold (issue 17): weights in for this family are being written."""

from __future__ import annotations

from collections.abc import Collection

from torch import nn

from .renamer import Rule

SUPPORTED = "Swin (swin_t)"


def recognises(peer_model: nn.Module) -> bool:
    """Not yet: the family is being written."""
    return False


def convert(peer_model: nn.Module) -> nn.Module:
    raise ValueError(f"{SUPPORTED}: conversion not written yet")


def recognises_state(names: Collection[str]) -> bool:
    return False


def state_family(names: Collection[str]) -> str:
    return f"torchvision {SUPPORTED}"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    raise ValueError(f"{SUPPORTED}: state files not supported yet")
