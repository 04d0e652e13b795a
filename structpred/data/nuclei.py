"""Cell nuclei with instance masks: the 2-D example image shipped in ``stardist==0.9.2``.

Files (``<site-packages>/stardist/data/images/``; BSD-3, image from the 2018 Data Science Bowl):
``img2d.tif`` is a 512 x 512 grey image stored as uint16 but holding 8-bit values (0..235), and
``mask2d.tif`` the 512 x 512 uint16 label image of its 125 nuclei (0 = background; ids 1..183,
not contiguous; id 129 has a stray 2-pixel piece touching it only at a corner: one instance).

Image: divided by 255 (the file's values are 8-bit) and repeated to 3 channels. Targets per crop:
``masks uint8[N, c, c]`` (one per nucleus id present), ``boxes`` tight around them
(:func:`~structpred.data.real.masks_to_boxes`), ``labels`` all 1 (``"nucleus"``), ``semantic
int64[c, c]`` (1 on every nucleus pixel, 0 elsewhere; no ignore pixels). A nucleus cut by the crop
keeps its visible part; it is dropped from ``masks`` (not from ``semantic``) if fewer than
``min_pixels`` of it are visible.

Split (fixed, spatial, disjoint): ``train`` = top half (rows 0..255, all columns), ``val`` =
bottom-left quadrant, ``test`` = bottom-right quadrant; ``"all"`` = the whole image (with
``crop=512``: one item holding all 125 nuclei). Crops lie on a grid inside their region, the last
row/column shifted back to the region's edge (:func:`~structpred.data.real.grid_starts`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .real import SPLITS, Transform, check_file, check_split, grid_starts, masks_to_boxes, package_data_dir
from .records import Categories

logger = logging.getLogger(__name__)

PACKAGE_PIN = "stardist==0.9.2"
SIZE = 512
# Per split, the region (top, left, height, width) its crops are laid in.
SPLIT_REGIONS: dict[str, tuple[int, int, int, int]] = {
    "train": (0, 0, 256, 512),
    "val": (256, 0, 256, 256),
    "test": (256, 256, 256, 256),
    "all": (0, 0, 512, 512),
}


def data_dir() -> Path:
    """``<site-packages>/stardist/data/images``; ``FileNotFoundError`` if stardist is not installed."""
    return package_data_dir("stardist", "data", "images", pin=PACKAGE_PIN)


@functools.lru_cache(maxsize=4)
def _read(root: Path) -> tuple[Tensor, Tensor]:
    import tifffile  # optional dependency, needed only here

    image_path, mask_path = check_file(root / "img2d.tif"), check_file(root / "mask2d.tif")
    try:
        pixels = np.asarray(tifffile.imread(image_path))
        ids = np.asarray(tifffile.imread(mask_path))
    except (OSError, ValueError) as err:  # tifffile raises TiffFileError (a ValueError) on garbage
        raise ValueError(f"{root}: cannot read img2d.tif / mask2d.tif ({err})") from err
    if pixels.ndim != 2:
        raise ValueError(f"{image_path}: expected a 2-D grey image, got shape {pixels.shape}")
    if ids.shape != pixels.shape:
        raise ValueError(f"{mask_path}: label image shape {ids.shape} != image shape {pixels.shape}")
    if ids.dtype.kind not in "ui":
        raise ValueError(f"{mask_path}: label image must be integer, got {ids.dtype}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{image_path}: values {pixels.min()}..{pixels.max()} are not 8-bit (0..255)")
    if ids.min() < 0:
        raise ValueError(f"{mask_path}: negative instance id {ids.min()}")
    grey = torch.from_numpy(pixels.astype(np.float32) / 255.0)  # (H, W) in [0, 1]
    return grey, torch.from_numpy(ids.astype(np.int64))


def read_nuclei(root: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """The whole image and label image: ``(grey float32[512, 512] in [0, 1], ids int64[512, 512])``.

    ``root`` holds ``img2d.tif`` and ``mask2d.tif`` (default: :func:`data_dir`). Cached.
    """
    grey, ids = _read(Path(root) if root is not None else data_dir())
    return grey.clone(), ids.clone()


def instances(ids: Tensor, min_pixels: int = 1) -> tuple[Tensor, Tensor]:
    """Instance masks of a label image ``ids (int64[H, W])`` (0 = background).

    Returns ``(masks uint8[N, H, W], kept ids int64[N])`` for every id with at least
    ``min_pixels`` pixels, in increasing id order.
    """
    present, counts = torch.unique(ids, return_counts=True)  # (U,), (U,)
    kept = present[(present != 0) & (counts >= min_pixels)]  # (N,)
    masks = (ids.unsqueeze(0) == kept.view(-1, 1, 1)).to(torch.uint8)  # (1, H, W) vs (N, 1, 1) -> (N, H, W)
    return masks, kept


class Nuclei(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Square crops of the DSB 2018 nuclei image with instance masks (one class, ``"nucleus"``).

    Item ``i``: ``(image float32[3, crop, crop] in [0, 1], target)`` with ``masks``, ``boxes``,
    ``labels``, ``semantic``, ``iscrowd`` (all 0) and ``image_id`` (int64 scalar, unique across
    the splits for a given ``crop``/``stride``). ``origins[i]`` is the crop's ``(y0, x0)``.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (see the module doc).
        crop: crop side in pixels, 32..256 (up to 512 for ``"all"``). 128 gives 8 / 4 / 4 crops.
        stride: pixels between crop origins (default ``crop``).
        min_pixels: a nucleus cut by the crop keeps a mask iff at least this many pixels are visible.
        root: folder with ``img2d.tif`` and ``mask2d.tif`` (default: the installed stardist's).
        transforms: optional joint transform applied to ``(image, target)``.
    """

    categories = Categories(["nucleus"])
    label_map_classes = {"semantic": 2}  # background, nucleus

    def __init__(
        self,
        split: str = "train",
        crop: int = 128,
        stride: int | None = None,
        min_pixels: int = 16,
        root: str | Path | None = None,
        transforms: Transform | None = None,
    ) -> None:
        check_split(split, (*SPLITS, "all"))
        top, left, height, width = SPLIT_REGIONS[split]
        if not isinstance(crop, int) or not 32 <= crop <= min(height, width):
            limit = min(height, width)
            raise ValueError(f"crop must be an int in [32, {limit}] for split={split!r}, got {crop!r}")
        stride = crop if stride is None else stride
        if not isinstance(stride, int) or not 1 <= stride <= crop:
            raise ValueError(f"stride must be an int in [1, crop={crop}], got {stride!r}")
        if not isinstance(min_pixels, int) or min_pixels < 1:
            raise ValueError(f"min_pixels must be an int >= 1, got {min_pixels!r}")
        self.split, self.crop, self.min_pixels = split, crop, min_pixels
        self.transforms = transforms
        self.grey, self.ids = read_nuclei(root)
        if tuple(self.grey.shape) != (SIZE, SIZE):
            raise ValueError(f"expected a {SIZE} x {SIZE} image, got {tuple(self.grey.shape)}")
        self.origins = self._origins(split, crop, stride)
        order = (*SPLITS, "all")
        self._first_id = sum(len(self._origins(s, crop, stride)) for s in order[: order.index(split)])
        logger.info("Nuclei(%s): %d crops of %d px", split, len(self.origins), crop)

    @staticmethod
    def _origins(split: str, crop: int, stride: int) -> list[tuple[int, int]]:
        top, left, height, width = SPLIT_REGIONS[split]
        if crop > min(height, width):
            return []  # this split cannot hold such a crop (it only matters for image id offsets)
        rows, cols = grid_starts(height, crop, stride), grid_starts(width, crop, stride)
        return [(top + y, left + x) for y in rows for x in cols]

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"crop {index} out of range for {len(self)} crops")
        index %= len(self)
        y0, x0 = self.origins[index]
        c = self.crop
        ids = self.ids[y0 : y0 + c, x0 : x0 + c]  # (c, c)
        masks, _ = instances(ids, self.min_pixels)  # (N, c, c)
        n = masks.shape[0]
        image = self.grey[y0 : y0 + c, x0 : x0 + c].expand(3, c, c).clone()  # (c, c) -> (3, c, c)
        target = {
            "boxes": masks_to_boxes(masks),
            "labels": torch.ones(n, dtype=torch.int64),
            "masks": masks,
            "semantic": (ids > 0).to(torch.int64),
            "iscrowd": torch.zeros(n, dtype=torch.uint8),
            "image_id": torch.tensor(self._first_id + index, dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
