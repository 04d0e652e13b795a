"""Semantic segmentation from image files and label-map PNGs (VOC ``SegmentationClass``, mask
folders).

An item is ``(image float32[3, H, W] in [0, 1], {"semantic": int64[H, W], "image_id": int64})``
with ``semantic`` in ``0..K-1`` (0 = background) or 255 (ignore), as the semantic segmentation
task expects (``label_map_classes = {"semantic": K}``; ``categories`` names classes ``1..K-1``).
Every pair is checked when the dataset is built: image header readable, mask decodable and of
the image's size, values in range; so nothing fails later, in the middle of training.

Masks: a palette or greyscale PNG holds the class index itself. An RGB(A) mask (what CVAT's
"Segmentation mask" export writes, or a VOC mask saved in colour) is mapped colour -> index
through a colour table (:data:`Colors`: CVAT's ``labelmap.txt``, else the VOC palette); a colour
outside the table is an error naming the file, the colour and a pixel that has it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..formats.labelmap import IGNORE_INDEX, check_lossless, label_values, voc_palette
from ..images import image_size, open_image, read_image
from ..records import Categories, ImageRecord

MAX_CLASSES = 255  # indices 0..254; 255 is ignore
Colors = dict[int, int]  # colour packed as 0xRRGGBB -> class index


def palette_colors(num_classes: int = MAX_CLASSES) -> Colors:
    """The VOC palette's colours of classes ``0..num_classes-1`` and of 255 (ignore)."""
    rgb = voc_palette().to(torch.int64)  # (256, 3)
    packed = (rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]).tolist()  # (256,)
    table = {packed[k]: k for k in range(min(num_classes, MAX_CLASSES))}
    table.setdefault(packed[IGNORE_INDEX], IGNORE_INDEX)
    return table


def _colour_mask(path: Path, im: Image.Image, colors: Colors, source: str) -> Tensor:
    rgb = np.asarray(im.convert("RGB"), dtype=np.int64)  # (H, W, 3)
    packed = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]  # (H, W)
    unique, inverse = np.unique(packed, return_inverse=True)  # (U,), (H*W,)
    lookup = np.array([colors.get(int(u), -1) for u in unique], dtype=np.int64)  # (U,)
    if (lookup < 0).any():
        bad = int(unique[lookup < 0][0])
        y, x = (int(v[0]) for v in np.nonzero(packed == bad))
        colour = (bad >> 16, bad >> 8 & 255, bad & 255)
        raise ValueError(f"{path}: colour {colour} at pixel (y={y}, x={x}) is not a class colour of {source}")
    return torch.from_numpy(lookup[inverse].reshape(packed.shape))  # (H*W,) -> (H, W)


def read_mask(path: Path, colors: Colors | None = None, source: str = "the VOC palette") -> Tensor:
    """A mask as ``int64 Tensor[H, W]`` of class indices: palette/grey images as stored, RGB(A)
    through ``colors`` (refused without). Only lossless files are read, after the header's size
    is checked against ``limits.max_pixels``; ``ValueError`` naming the file otherwise."""
    with open_image(path, "mask") as im:
        check_lossless(path, im, "mask")
        if colors is not None and im.mode in ("RGB", "RGBA"):
            return _colour_mask(path, im, colors, source)
        return torch.from_numpy(label_values(path, im))


def scan_masks(
    pairs: list[tuple[Path, Path]], colors: Colors | None = None, source: str = "the VOC palette"
) -> tuple[list[int], set[int], list[tuple[int, int]]]:
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
        labels = read_mask(mask_path, colors, source)  # (H, W) int64
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
        colors: Colors | None = None,
        source: str = "the VOC palette",
    ) -> None:
        if not 2 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in 2..{MAX_CLASSES} (255 = ignore), got {num_classes}")
        if len(class_names) != num_classes - 1:
            raise ValueError(
                f"{num_classes} classes need {num_classes - 1} names (1..K-1), got {len(class_names)}"
            )
        self.pairs = list(pairs)
        self.colors, self.source = colors, source
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
        labels = read_mask(mask_path, self.colors, self.source)  # (H, W)
        if tuple(labels.shape) != tuple(image.shape[1:]):
            size = tuple(image.shape[1:])
            raise ValueError(f"{mask_path}: mask size {tuple(labels.shape)} != image size {size}")
        return image, {"semantic": labels, "image_id": torch.tensor(index, dtype=torch.int64)}

    def __repr__(self) -> str:
        return f"LabelMapFiles({len(self)} images, {self.label_map_classes['semantic']} classes)"
