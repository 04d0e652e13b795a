"""Semantic segmentation from image files and label-map PNGs (VOC ``SegmentationClass``, mask
folders).

An item is ``(image float32[3, H, W] in [0, 1], {"semantic": int64[H, W], "image_id": int64})``
with ``semantic`` in ``0..K-1`` (0 = background) or 255 (ignore), as the semantic segmentation
task expects (``label_map_classes = {"semantic": K}``; ``categories`` names classes ``1..K-1``).
Every pair is checked when the dataset is built: image header readable, mask decodable and of
the image's size, values in range; so nothing fails later, in the middle of training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..formats.labelmap import IGNORE_INDEX, read_label_map
from ..images import image_size, read_image
from ..records import Categories, ImageRecord

MAX_CLASSES = 255  # indices 0..254; 255 is ignore


def scan_masks(pairs: list[tuple[Path, Path]]) -> tuple[list[int], set[int], list[tuple[int, int]]]:
    """Decode every mask once: per mask its largest class index (255 = ignore left out, -1 if
    none), the set of values over all masks, and per pair the image's ``(H, W)``; sizes are
    checked on the way.

    Raises ``ValueError`` naming the file on an unreadable image header or mask, or a mask whose
    size is not its image's.
    """
    maxima: list[int] = []
    seen: set[int] = set()
    sizes: list[tuple[int, int]] = []
    for image_path, mask_path in pairs:
        height, width = image_size(image_path)
        labels = read_label_map(mask_path)  # (H, W) int64
        if tuple(labels.shape) != (height, width):
            raise ValueError(
                f"{mask_path}: mask is {labels.shape[0]} x {labels.shape[1]} (H x W) but its image "
                f"{image_path.name} is {height} x {width}"
            )
        values = torch.unique(labels).tolist()
        seen.update(values)
        maxima.append(max((v for v in values if v != IGNORE_INDEX), default=-1))
        sizes.append((height, width))
    return maxima, seen, sizes


def check_range(pairs: list[tuple[Path, Path]], maxima: list[int], num_classes: int, source: str) -> None:
    """Raise ``ValueError`` naming the first mask holding a value outside ``0..K-1`` and 255."""
    for (_, mask_path), top in zip(pairs, maxima, strict=True):
        if top >= num_classes:
            raise ValueError(
                f"{mask_path}: class index {top} is outside 0..{num_classes - 1} "
                f"({num_classes} classes from {source}; 255 = ignore)"
            )


class LabelMapFiles(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Pairs of (image file, label-map PNG) with ``num_classes`` classes (background included).

    ``categories`` names classes ``1..K-1``; ``pairs`` are not checked here (the layouts check
    them with :func:`scan_masks` / :func:`check_range` before building this). ``records`` holds
    one object-less :class:`ImageRecord` per image (file, size, ``image_id`` = index), for
    callers that list a dataset's image files (``structpred predict --data``).
    """

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        class_names: list[str],
        num_classes: int,
        sizes: list[tuple[int, int]] | None = None,
    ) -> None:
        if not 2 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in 2..{MAX_CLASSES} (255 = ignore), got {num_classes}")
        if len(class_names) != num_classes - 1:
            raise ValueError(
                f"{num_classes} classes need {num_classes - 1} names (1..K-1), got {len(class_names)}"
            )
        self.pairs = list(pairs)
        shapes = sizes if sizes is not None else [(0, 0)] * len(self.pairs)
        self.records = [
            ImageRecord.empty(str(image), h, w, image_id=i)
            for i, ((image, _), (h, w)) in enumerate(zip(self.pairs, shapes, strict=True))
        ]
        self.categories = Categories(list(class_names))
        self.label_map_classes = {"semantic": num_classes}

    def __len__(self) -> int:
        return len(self.pairs)

    def image_path(self, index: int) -> Path:
        """The image file of item ``index``."""
        return self.pairs[index][0]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)  # (3, H, W)
        labels = read_label_map(mask_path)  # (H, W)
        if tuple(labels.shape) != tuple(image.shape[1:]):
            size = tuple(image.shape[1:])
            raise ValueError(f"{mask_path}: mask size {tuple(labels.shape)} != image size {size}")
        return image, {"semantic": labels, "image_id": torch.tensor(index, dtype=torch.int64)}

    def __repr__(self) -> str:
        return f"LabelMapFiles({len(self)} images, {self.label_map_classes['semantic']} classes)"
