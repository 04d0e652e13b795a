"""Inputs shared by the semantic-segmenter tests (FCN, DeepLab)."""

from __future__ import annotations

import torch
from torch import Tensor

from structpred.data import ShapesWorld


def shapes_batch(n: int = 2, size: int = 64) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """``n`` shapes-world images ``[n, 3, size, size]`` and targets holding only ``semantic``."""
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    return torch.stack([im for im, _ in items]), [{"semantic": t["semantic"]} for _, t in items]


def random_labels(B: int, H: int, W: int, K: int = 7, seed: int = 0) -> list[dict[str, Tensor]]:
    """``B`` targets with uniformly random ``semantic`` labels ``0..K-1`` of size ``H x W``."""
    g = torch.Generator().manual_seed(seed)
    return [{"semantic": torch.randint(0, K, (H, W), generator=g)} for _ in range(B)]
