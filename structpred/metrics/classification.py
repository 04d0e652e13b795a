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
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros(self.num_classes, dtype=torch.int64)
        self.total = torch.zeros(self.num_classes, dtype=torch.int64)

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        if not preds:
            return
        pred = torch.stack([p["labels"].reshape(()) for p in preds]).cpu()
        true = torch.stack([t["labels"].reshape(()) for t in targets]).cpu()
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
