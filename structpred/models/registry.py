"""Model registry: a plain dict of builder functions, filled by ``@register_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Builder) -> Builder:
    """Register a builder under its function name; names are unique."""
    name = fn.__name__
    if name in _BUILDERS:
        raise ValueError(f"a model named {name!r} is already registered")
    _BUILDERS[name] = fn
    return fn


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword overrides of its defaults."""
    if name not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS)) or "none yet"
        raise ValueError(f"unknown model {name!r}; registered models: {known}")
    return _BUILDERS[name](**kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_BUILDERS)
