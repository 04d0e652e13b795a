"""Keypoint geometry for the joint transforms: flip with renaming, scale, crop.

Shape shorthand: N objects, K keypoints per object, L labels (rows of a per-label permutation).

Convention: keypoints are float ``[N, K, 3]`` = (x, y, visibility) in continuous pixel
coordinates (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, like box edges); visibility 0
means unlabelled and such points are written (0, 0, 0), as COCO writes them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def unlabelled_to_zero(kpts: Tensor) -> Tensor:
    """Keypoints ``[N, K, 3]`` with every visibility-0 point set to (0, 0, 0)."""
    return kpts * (kpts[..., 2:] > 0)


def flip_keypoints(kpts: Tensor, labels: Tensor | None, perm: Tensor, width: int) -> Tensor:
    """Mirror keypoints ``[N, K, 3]`` (``x -> W - x``) and rename them by ``perm``.

    ``perm`` is int ``[K]`` (every object alike, COCO's flip_pairs as a permutation) or
    ``[L, K]`` (row = the object's label): point ``j`` of the flipped object is point
    ``perm[j]`` of the original. ``ValueError`` on a bad permutation or label.
    """
    N, K, _ = kpts.shape
    perm = torch.as_tensor(perm, dtype=torch.int64, device=kpts.device)
    if perm.dim() == 1:
        perm = perm[None]  # (K,) -> (1, K): every object alike
        rows = torch.zeros(N, dtype=torch.int64, device=kpts.device)
    else:
        if labels is None:
            raise ValueError("HorizontalFlip: a per-label keypoint_flip [L, K] needs target['labels']")
        rows = labels.to(torch.int64)
        if N and (int(rows.min()) < 0 or int(rows.max()) >= perm.shape[0]):
            raise ValueError(
                f"HorizontalFlip: keypoint_flip has {perm.shape[0]} label rows; a label is {int(rows.max())}"
            )
    ok = perm.dim() == 2 and perm.shape[-1] == K
    ok = ok and bool((perm.sort(-1).values == torch.arange(K, device=perm.device)).all())
    if not ok:
        raise ValueError(
            f"HorizontalFlip: keypoint_flip rows must be permutations of 0..{K - 1}, got {perm.tolist()}"
        )
    mirrored = torch.stack([width - kpts[..., 0], kpts[..., 1], kpts[..., 2]], -1)  # (N, K, 3)
    idx = perm[rows][:, :, None].expand(N, K, 3)  # (N, K) -> (N, K, 3)
    return unlabelled_to_zero(torch.gather(mirrored, 1, idx))


def crop_keypoints(kpts: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """Keypoints ``[N, K, 3]`` moved into a crop window; points outside it become unlabelled."""
    x, y = kpts[..., 0] - left, kpts[..., 1] - top
    inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    vis = torch.where(inside, kpts[..., 2], torch.zeros_like(kpts[..., 2]))
    return unlabelled_to_zero(torch.stack([x, y, vis], -1))


def scale_keypoints(kpts: Tensor, sx: float, sy: float) -> Tensor:
    """Keypoints ``[N, K, 3]`` scaled by ``(sx, sy)`` (a resize)."""
    return unlabelled_to_zero(kpts * kpts.new_tensor([sx, sy, 1.0]))
