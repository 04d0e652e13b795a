"""RoI test cases shared by ``tests/ops/test_roi.py`` and ``tests/parity/test_roi_parity.py``."""

from __future__ import annotations

import torch
from torch import Tensor


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def edge_rois(H: int, W: int) -> list[list[float]]:
    """Hand-picked RoIs ``(batch, x1, y1, x2, y2)`` in feature cells (N >= 2)."""
    return [
        [0, 0.0, 0.0, W - 1.0, H - 1.0],  # whole map
        [1, 0.0, 0.0, float(W), float(H)],  # whole map, to the far border
        [1, -2.3, -1.6, 3.4, 2.2],  # partly outside, top-left
        [0, W - 2.5, H - 1.5, W + 3.0, H + 2.5],  # partly outside, bottom-right
        [1, W + 1.5, 1.0, W + 4.0, 3.0],  # entirely outside, right
        [0, -6.0, -5.0, -2.5, -1.5],  # entirely outside, top-left
        [1, 1.0, H + 1.25, 4.0, H + 3.0],  # entirely outside, below
        [0, 2.25, 1.75, 2.25, 1.75],  # zero area
        [1, 3.0, 1.0, 3.0, 5.5],  # zero width
        [0, 1.0, 2.0, 6.5, 2.0],  # zero height
        [1, 2.5, 0.5, 4.5, 3.5],  # halves: roi_pool rounds them away from zero
        [0, -0.5, -1.5, 1.5, 2.5],
        [1, 0.2, 0.3, 0.6, 0.9],  # smaller than a cell
        [0, W - 1.2, H - 1.1, W - 0.1, H - 0.05],  # the last row/column clamp
        [1, -1.0, -1.0, 0.5, 0.4],  # between -1 and 0
    ]


def make_rois(
    gen: torch.Generator, N: int, H: int, W: int, scale: float, num_random: int, dtype: torch.dtype
) -> Tensor:
    """Edge-case plus random RoIs, Tensor[K, 5] in image pixels (feature cells / scale)."""
    edge = torch.tensor(edge_rois(H, W), dtype=torch.float64)
    k = num_random
    cx = torch.rand(k, generator=gen, dtype=torch.float64) * 1.5 * W - 0.25 * W
    cy = torch.rand(k, generator=gen, dtype=torch.float64) * 1.5 * H - 0.25 * H
    bw = torch.rand(k, generator=gen, dtype=torch.float64) * 1.2 * W
    bh = torch.rand(k, generator=gen, dtype=torch.float64) * 1.2 * H
    batch = torch.randint(0, N, (k,), generator=gen).to(torch.float64)
    rand = torch.stack([batch, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
    rois = torch.cat([edge, rand])
    rois[:, 1:] /= scale  # scales are powers of two: exact
    return rois.to(dtype)
