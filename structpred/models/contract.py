"""The forward contract every model keeps (DESIGN.md §3), in one place.

``model(inputs, targets=None, *, predict=True) -> (predictions, losses)``:

* ``predictions``: the task's prediction structure (see :mod:`structpred.tasks`), computed the
  same way in train and eval mode (the mode only switches dropout, batch-norm statistics and
  the sizes a paper sets per phase, such as the RPN's top-n). ``None`` exactly when the caller
  passed ``predict=False``: the engine's training step asks for losses only and so skips
  inference-only work (detection post-processing, a CRF).
* ``losses``: ``{"loss_*": scalar}`` whenever ``targets`` are given, in either mode; ``{}``
  without targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor


def check_request(has_targets: bool, predict: bool, where: str) -> None:
    """Raise a ``ValueError`` for a call that asks for nothing (no targets and ``predict=False``)."""
    if not predict and not has_targets:
        raise ValueError(f"{where}: predict=False without targets asks for neither predictions nor losses")


def image_sizes(images: Sequence[Tensor] | Tensor) -> list[tuple[int, int]]:
    """``(H, W)`` of each image of a list of ``Tensor[3, H, W]`` or a ``Tensor[B, 3, H, W]``."""
    if isinstance(images, Tensor):
        return [(int(images.shape[-2]), int(images.shape[-1]))] * images.shape[0]
    return [(int(im.shape[-2]), int(im.shape[-1])) for im in images]


Targets = TypeVar("Targets")


def checked_targets(
    images: Sequence[Tensor] | Tensor,
    targets: Sequence[Targets] | None,
    validate: Callable[[Sequence[Targets], list[tuple[int, int]]], list[Targets]],
) -> list[Targets] | None:
    """``validate(targets, sizes)`` after checking there is one target per image (``None`` passes).

    Every detector's forward starts with this: a ``ValueError`` for a count mismatch, then the
    model's own target validation against each image's size.
    """
    if targets is None:
        return None
    sizes = image_sizes(images)
    if len(targets) != len(sizes):
        raise ValueError(f"{len(targets)} targets for {len(sizes)} images")
    return validate(targets, sizes)


def flow_targets(targets: object, B: int, H: int, W: int, where: str) -> tuple[Tensor, Tensor]:
    """The optical-flow task's targets, checked and stacked: ``(flow [B, 2, H, W], valid bool[B, H, W])``.

    Each of the ``B`` dicts needs ``flow`` float ``[2, H, W]`` (px) and may carry ``valid`` bool
    ``[H, W]`` (all pixels when absent); a pixel with a non-finite flow is not valid. ``where``
    (the model's name) starts every error message.
    """
    if not isinstance(targets, (list, tuple)) or len(targets) != B:
        n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"{where}: {n} targets for {B} pairs")
    flows, valids = [], []
    for i, t in enumerate(targets):
        flow = t.get("flow") if isinstance(t, dict) else None
        if not isinstance(flow, Tensor) or tuple(flow.shape) != (2, H, W) or not flow.is_floating_point():
            got = tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__
            raise ValueError(f"{where}: targets[{i}]['flow'] must be a float Tensor[2, {H}, {W}], got {got}")
        valid = t.get("valid")
        if valid is None:
            valid = torch.ones(H, W, dtype=torch.bool, device=flow.device)
        if not isinstance(valid, Tensor) or tuple(valid.shape) != (H, W):
            got = tuple(valid.shape) if isinstance(valid, Tensor) else type(valid).__name__
            raise ValueError(f"{where}: targets[{i}]['valid'] must be a bool Tensor[{H}, {W}], got {got}")
        flows.append(flow)
        valids.append(valid.bool().to(flow.device) & torch.isfinite(flow).all(0))
    return torch.stack(flows), torch.stack(valids)  # (B, 2, H, W), (B, H, W)
