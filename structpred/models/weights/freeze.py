"""Freeze parts of a model for fine-tuning: ``freeze(model, "backbone:2")``.

Spec: a comma list of parts, each one of

- ``backbone``: the whole feature extractor (a detector's ``backbone.body`` — not its FPN —, a
  segmenter's ``net.backbone``, a classifier's ``features``);
- ``backbone:N``: its first ``N`` stages counting the stem as one, so torchvision's
  ``trainable_backbone_layers=T`` of a ResNet (5 units: stem, layer1..layer4) is
  ``backbone:{5 - T}``; a MobileNetV3 has 6 (torchvision's ``stage_indices``), a VGG-16 5 conv
  blocks (split at the max-pools);
- a parameter-name prefix, e.g. ``rpn`` or ``roi_heads.box_head`` (whole dotted components).

Only ``requires_grad`` changes: batch-norm layers keep their own semantics (a trainable
``BatchNorm2d`` still updates its running statistics in training mode; ``FrozenBatchNorm2d``
has no parameters to freeze). Parameters with ``requires_grad=False`` get no gradient; whether
the optimizer skips them is the engine's business.
"""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["backbone_stages", "freeze"]

# Where the feature extractor sits, by model family (first that exists wins).
_BACKBONE_PATHS = ("backbone.body", "net.backbone", "backbone", "features")


def _find_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    modules = dict(model.named_modules())
    for path in _BACKBONE_PATHS:
        if path in modules:
            return path, modules[path]
    raise ValueError(
        f"{type(model).__name__} has no backbone ({' / '.join(_BACKBONE_PATHS)}); "
        "freeze by parameter-name prefixes instead"
    )


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def backbone_stages(model: nn.Module) -> list[list[str]]:
    """The backbone's stages, stem first, each as the full names of the modules it holds."""
    path, body = _find_backbone(model)
    children = list(body.named_children())
    names = [n for n, _ in children]
    groups: list[list[str]]
    stage_indices = getattr(body, "stage_indices", None)
    units = getattr(body, "layer_units", None)
    if callable(units):  # ViT, Swin: the embedding, then each block / stage (the backbone's own units)
        groups = units()
    elif all(f"layer{i}" in names for i in range(1, 5)):  # ResNet, NarrowNet: stem + layer1..4
        first = names.index("layer1")
        stem = [n for n, m in children[:first] if _has_params(m)]
        groups = [stem, *([f"layer{i}"] for i in range(1, 5))]
    elif isinstance(stage_indices, list):  # MobileNetV3Features: torchvision's stage boundaries
        bounds = [*stage_indices, len(children)]
        groups = [names[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    elif "features" in names and isinstance(dict(children)["features"], nn.Sequential):  # VGG-16
        feats = list(dict(children)["features"].named_children())
        groups, current = [], []
        for n, m in feats:
            current.append(f"features.{n}")
            if isinstance(m, nn.MaxPool2d):
                groups.append(current)
                current = []
        if current:
            groups.append(current)
    else:  # a plain Sequential of stages
        groups = [[n] for n, m in children if _has_params(m)]
    return [[f"{path}.{n}" for n in group] for group in groups]


def _resolve(model: nn.Module, part: str) -> list[str]:
    """The module / parameter prefixes one part of a spec names."""
    if part == "backbone":
        return [_find_backbone(model)[0]]
    if part.startswith("backbone:"):
        count = part.split(":", 1)[1]
        stages = backbone_stages(model)
        if not count.isdigit() or not 0 <= int(count) <= len(stages):
            raise ValueError(
                f"freeze {part!r}: N must be an integer in 0..{len(stages)} "
                f"({type(model).__name__}'s backbone has {len(stages)} stages, stem included)"
            )
        return [name for stage in stages[: int(count)] for name in stage]
    params = [n for n, _ in model.named_parameters()]
    if not any(n == part or n.startswith(part + ".") for n in params):
        tops = sorted({n.split(".")[0] for n in params})
        raise ValueError(
            f"freeze {part!r}: no parameter of {type(model).__name__} is named so or below it; "
            f"parts: backbone, backbone:N, or a prefix such as {', '.join(tops)}"
        )
    return [part]


def freeze(model: nn.Module, spec: str) -> list[str]:
    """Set ``requires_grad=False`` on the parts of ``model`` that ``spec`` names; return the frozen
    prefixes (full dotted module / parameter names).

    Raises:
        ValueError: an empty spec, an unknown part (the message lists the model's top-level
            parts), ``backbone`` on a model without one, or ``backbone:N`` out of range.
    """
    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in parts):
        raise ValueError(
            f"freeze spec {spec!r}: expected backbone, backbone:N or parameter-name prefixes, comma separated"
        )
    prefixes: list[str] = []
    for part in parts:
        for prefix in _resolve(model, part):
            if prefix not in prefixes:
                prefixes.append(prefix)
    frozen = 0
    for name, p in model.named_parameters():
        if any(name == pre or name.startswith(pre + ".") for pre in prefixes):
            p.requires_grad_(False)
            frozen += p.numel()
    logger.info("froze %s (%d parameters)", ", ".join(prefixes) or "nothing", frozen)
    return prefixes
