"""Batching for the DataLoader: lists, not stacks — images in a batch may differ in size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor


def collate(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])``; models batch internally."""
    for i, item in enumerate(batch):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict)):
            raise ValueError(
                f"batch item {i} must be an (image, target dict) pair, got {type(item).__name__}"
            )
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
