"""Backbone registry and protocol: any detector or segmenter takes any registered backbone by name.

The protocol (:class:`Backbone`): ``forward_features(x [B, 3, H, W]) -> {name: [B, C, h, w]}``
ordered finest first, ``out_channels: {name: C}`` and ``strides: {name: s}`` with the same
names in the same order (a map's side is ``ceil(H / s)``). Every registered builder accepts
``output_stride`` (32 = none; 16 or 8 dilate the last stages instead of striding, where the
network supports it) besides its own keywords. :func:`get_backbone` checks the protocol.

Adding a backbone is a new file in this package whose builder is decorated with
``@register_backbone("name")``, imported by ``backbones/__init__.py``: every model that takes
``backbone=`` (``fasterrcnn_fpn``, ``maskrcnn_fpn``, ``deeplabv3``...) then runs on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from torch import Tensor, nn

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@runtime_checkable
class Backbone(Protocol):
    """What a backbone offers its necks and heads (see the module doc)."""

    out_channels: dict[str, int]
    strides: dict[str, int]

    def forward_features(self, x: Tensor) -> dict[str, Tensor]: ...


_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register a backbone builder under ``name`` (unique)."""

    def register(fn: Builder) -> Builder:
        if name in _BACKBONES:
            raise ValueError(f"a backbone named {name!r} is already registered")
        _BACKBONES[name] = fn
        return fn

    return register


def check_backbone(module: nn.Module, where: str) -> None:
    """Raise a ``ValueError`` unless ``module`` keeps the :class:`Backbone` protocol."""
    channels, strides = getattr(module, "out_channels", None), getattr(module, "strides", None)
    if not callable(getattr(module, "forward_features", None)):
        raise ValueError(f"{where}: {type(module).__name__} has no forward_features(x)")
    if not isinstance(channels, dict) or not isinstance(strides, dict) or list(channels) != list(strides):
        raise ValueError(f"{where}: out_channels and strides must be dicts over the same map names, "
                         f"got {channels!r} and {strides!r}")
    values = list(strides.values())
    if values != sorted(values):
        raise ValueError(f"{where}: maps must be ordered finest first, got strides {strides}")


def get_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered backbone ``name`` with keyword overrides (e.g. ``output_stride=8``)."""
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(sorted(_BACKBONES))}")
    module = _BACKBONES[name](**kwargs)
    check_backbone(module, f"backbone {name!r}")
    return module


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_BACKBONES)
