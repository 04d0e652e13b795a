"""Top-1 accuracy for single-value classification heads."""

from __future__ import annotations

import torch
from torch import Tensor


class Accuracy:
    """Top-1 accuracy over ``update`` calls, overall and per class.

    ``preds``: per item a dict with ``labels`` (predicted class, int scalar); ``targets``: per
    item a dict with ``labels`` (true class, int scalar).
    """

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget every item seen so far."""
        self.correct = torch.zeros(self.num_classes, dtype=torch.int64)
        self.total = torch.zeros(self.num_classes, dtype=torch.int64)

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Add a batch: one dict per item in each list, ``labels`` an integer scalar (or [1])."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        if not preds:
            return
        pred = _labels(preds, "preds")  # (N,)
        true = _labels(targets, "targets")
        if bool(((true < 0) | (true >= self.num_classes)).any()):
            raise ValueError(
                f"target labels must be in [0, {self.num_classes}), got {true.unique().tolist()}"
            )
        self.total += torch.bincount(true, minlength=self.num_classes)
        self.correct += torch.bincount(true[pred == true], minlength=self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        """``accuracy`` (overall) and ``accuracy_per_class`` (NaN for unseen classes)."""
        per_class = self.correct.double() / self.total.double()  # NaN where total == 0
        overall = self.correct.sum().double() / self.total.sum().clamp(min=1).double()
        return {"accuracy": overall.float(), "accuracy_per_class": per_class.float()}


def _labels(items: list[dict[str, Tensor]], name: str) -> Tensor:
    """The items' ``labels`` as one int64 vector ``[N]``; ``ValueError`` naming the first bad item."""
    out = []
    for i, d in enumerate(items):
        t = d.get("labels") if isinstance(d, dict) else None
        if not isinstance(t, Tensor):
            raise ValueError(f"{name}[{i}] must be a dict with a Tensor 'labels', got {d!r:.80}")
        if t.numel() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(
                f"{name}[{i}]['labels'] must be one integer class, got {t.dtype} {tuple(t.shape)}"
            )
        out.append(t.detach().reshape(()).to(torch.int64).cpu())
    return torch.stack(out)
