"""Anchor boxes (Ren et al., Faster R-CNN, 2015), laid out as torchvision's ``AnchorGenerator``.

Shape shorthand:
    A: anchors per position (sizes x aspect ratios) on a level, Hi, Wi: level i's map size.

Convention: an aspect ratio is ``height / width``; a "size" is the side of the square
with the same area. Cell anchors are centred on (0, 0) and rounded to whole pixels
(torchvision's rounding); level ``i`` puts them at ``(x * stride_w, y * stride_h)`` for every
cell, with ``stride = image_size // feature_size`` (integer division). Anchors are ordered
(level, y, x, anchor) with the anchor fastest, matching the ``(B, A*4, H, W)`` head layout
after ``permute(0, 2, 3, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def cell_anchors(
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``A = len(aspect_ratios) * len(sizes)`` anchors of one position, centred on 0.

    Returns:
        Tensor[A, 4]: xyxy, ordered ratio-major (all sizes of ratio 0, then ratio 1...).
    """
    if len(sizes) == 0 or len(aspect_ratios) == 0:
        raise ValueError("sizes and aspect_ratios must be non-empty")
    # Checked on the Python numbers (no tensor-valued branch: torch.export traces this).
    if any(float(s) <= 0 for s in sizes) or any(float(r) <= 0 for r in aspect_ratios):
        raise ValueError(f"sizes and aspect_ratios must be positive, got {sizes}, {aspect_ratios}")
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_ratios = torch.sqrt(ratios)  # h = size * sqrt(r), w = size / sqrt(r): area size^2
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (R, S) -> (A,)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def grid_anchors(
    cell: Tensor, grid_size: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """Place ``cell`` anchors ``[A, 4]`` at every cell of an ``(H, W)`` map.

    Returns:
        Tensor[H*W*A, 4] ordered (y, x, anchor).
    """
    height, width = grid_size
    stride_h, stride_w = stride
    shifts_x = torch.arange(width, dtype=torch.int32, device=cell.device) * stride_w  # (W,)
    shifts_y = torch.arange(height, dtype=torch.int32, device=cell.device) * stride_h  # (H,)
    sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H, W) each
    shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    # (H*W, 1, 4) + (1, A, 4) -> (H*W, A, 4) -> (H*W*A, 4)
    return (shifts + cell.reshape(1, -1, 4)).reshape(-1, 4)


def anchors_for_image(
    image_size: tuple[int, int],
    feature_sizes: Sequence[tuple[int, int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """All anchors of a (padded) image over every feature level.

    Args:
        image_size: (H, W) of the padded batch tensor.
        feature_sizes: (Hi, Wi) of each level.
        sizes, aspect_ratios: per level, e.g. ``((32,), (64,), ...)`` and ``((0.5, 1, 2),) * 5``.
    Returns:
        Tensor[sum_i Hi*Wi*A_i, 4]: xyxy in image pixels, ordered (level, y, x, anchor).
    """
    if not (len(feature_sizes) == len(sizes) == len(aspect_ratios)):
        raise ValueError(
            f"one entry per feature level is needed: got {len(feature_sizes)} feature maps, "
            f"{len(sizes)} size tuples and {len(aspect_ratios)} aspect-ratio tuples"
        )
    out = []
    for (fh, fw), level_sizes, level_ratios in zip(feature_sizes, sizes, aspect_ratios, strict=True):
        if fh <= 0 or fw <= 0:
            raise ValueError(f"feature sizes must be positive, got {(fh, fw)}")
        stride = (image_size[0] // fh, image_size[1] // fw)
        cell = cell_anchors(level_sizes, level_ratios, dtype, device)
        out.append(grid_anchors(cell, (fh, fw), stride))
    return torch.cat(out)


def num_anchors_per_location(
    sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]]
) -> list[int]:
    """``A_i = len(sizes[i]) * len(aspect_ratios[i])`` for each level."""
    return [len(s) * len(a) for s, a in zip(sizes, aspect_ratios, strict=True)]
