"""Model registry: a plain dict of builder functions, each registered with the task it solves.

A builder declares its task by name (``@register_model(task="detection")``); the task itself
(target keys, prediction keys, metric, ``num_classes`` convention, predict writer) lives in
:mod:`structpred.tasks`, which sits above the models: a model names its task and never imports
it. ``peer_weights`` names the ecosystems whose weights the model loads (``"torchvision"``:
:func:`structpred.models.from_torchvision` converts the peer's model into this builder's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a builder without building it."""

    name: str
    task: str
    builder: Callable[..., nn.Module]
    peer_weights: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """The first line of the builder's docstring."""
        doc = (self.builder.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_MODELS: dict[str, ModelInfo] = {}


def register_model(*, task: str, peer_weights: Sequence[str] = ()) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under its function name for ``task``; names are unique."""
    if not isinstance(task, str) or not task:
        raise ValueError(f"register_model needs a task name, got {task!r}")

    def register(fn: Builder) -> Builder:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = ModelInfo(name, task, fn, tuple(peer_weights))
        return fn

    return register


def model_info(name: str) -> ModelInfo:
    """The registration of model ``name`` (``ValueError`` listing the known names)."""
    if name not in _MODELS:
        known = ", ".join(sorted(_MODELS)) or "none yet"
        raise ValueError(f"unknown model {name!r}; registered models: {known}")
    return _MODELS[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword overrides of its defaults."""
    return model_info(name).builder(**kwargs)


def parameter_count(name: str, **kwargs: Any) -> int:
    """Parameters of model ``name`` with its default settings, counted without allocating them
    (the model is built on PyTorch's ``meta`` device)."""
    with torch.device("meta"):
        model = get_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def list_models(task: str | None = None) -> list[str]:
    """Names of the registered models (of ``task``, if given), sorted."""
    return sorted(name for name, info in _MODELS.items() if task is None or info.task == task)
