"""Batching multi-view inputs: pairs (flow frame0/frame1, stereo left/right) and clips.

Shape shorthand:
    B: items in the batch, V: views per item (2 for a pair, T for a clip), H, W: image size.

Convention (DESIGN.md §3): a pair or clip item is ``Tensor[V, 3, H, W]`` float in [0, 1],
view 0 first (frame0 / left). Unlike single images, the views of a batch must share one size:
models that take pairs or clips stack them, they do not pad.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _describe(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def batch_views(images: Sequence[Tensor] | Tensor, num_views: int | None, where: str) -> Tensor:
    """Validated ``Tensor[B, V, 3, H, W]`` from a list of ``Tensor[V, 3, H, W]`` or a batch.

    Args:
        images: ``B`` items ``Tensor[V, 3, H, W]`` of one size and view count, float in [0, 1],
            or one ``Tensor[B, V, 3, H, W]``.
        num_views: the ``V`` every item must have (2 for a pair); None accepts any ``V >= 1``
            shared by all items.
        where: the caller's name, put at the start of every error message.

    Raises:
        ValueError: one line naming ``where``, the item index and what was wrong (rank, channels,
            dtype, view count, empty or unequal sizes).
    """
    if num_views is not None and (
        isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1
    ):
        raise ValueError(f"{where}: num_views must be a positive int or None, got {num_views!r}")
    if isinstance(images, Tensor):
        if images.dim() != 5:
            raise ValueError(f"{where}: images as a Tensor must be [B, V, 3, H, W], got {_describe(images)}")
        # Checked as a whole, not unbound into B items: under torch.export B stays symbolic (a list
        # of B tensors would fix it to the traced batch). Errors name images[0]: all items share a shape.
        items: list[Tensor] = [images[0]] if images.shape[0] else []
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        raise ValueError(
            f"{where}: images must be a list of Tensor[V, 3, H, W] or a Tensor[B, V, 3, H, W], "
            f"got {type(images).__name__}"
        )
    if not items:
        raise ValueError(f"{where}: images is empty; need at least one Tensor[V, 3, H, W]")
    first: tuple[int, ...] | None = None
    for i, item in enumerate(items):
        if not isinstance(item, Tensor) or item.dim() != 4:
            raise ValueError(f"{where}: images[{i}] must be a Tensor[V, 3, H, W], got {_describe(item)}")
        views, channels, height, width = item.shape
        if channels != 3:
            raise ValueError(f"{where}: images[{i}] must have 3 channels at dim 1, got {tuple(item.shape)}")
        if not item.is_floating_point():
            raise ValueError(f"{where}: images[{i}] must be float in [0, 1], got {item.dtype}")
        if num_views is not None and views != num_views:
            raise ValueError(f"{where}: images[{i}] must have {num_views} views, got {views}")
        if views == 0 or height == 0 or width == 0:
            raise ValueError(f"{where}: images[{i}] is empty: {tuple(item.shape)}")
        if first is None:
            first = tuple(item.shape)
        elif tuple(item.shape) != first:
            raise ValueError(
                f"{where}: images[{i}] is {tuple(item.shape)} but images[0] is {first}; "
                "views in a batch must share one size and view count"
            )
    if isinstance(images, Tensor):
        return images
    return torch.stack(items)  # B x (V, 3, H, W) -> (B, V, 3, H, W)
