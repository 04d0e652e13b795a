"""Real handwritten digits (scikit-learn's ``load_digits``): classification and digit scenes.

Source: the 1,797 8 x 8 digits of ``sklearn.datasets.load_digits()`` (UCI optdigits, values
0..16, read from the file shipped in scikit-learn; BSD-3). They are split by index, fixed:
``train`` = digits 0..1199, ``val`` = 1200..1499, ``test`` = 1500..1796 (each about balanced over
the 10 classes), so a test digit is never seen in training, in either data set below.

* :class:`Digits` - one upsampled digit per item, for single-value classification.
* :class:`DigitCanvas` - made-up scenes: real digits pasted on a black canvas at random
  positions and sizes, with exact instance masks (the digit's upsampled stroke pixels above
  ``threshold``), boxes tight around the masks and a semantic map.

Convention: a digit's value / 16 is its stroke intensity ``a`` in [0, 1]; upsampling is bilinear
with ``align_corners=False``. A digit is pasted as ``canvas = canvas * (1 - a) + colour * a``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .real import SPLITS, Transform, check_split, masks_to_boxes
from .records import Categories

# Half-open ranges of source-digit indices per split.
SOURCE_SPLITS = {"train": (0, 1200), "val": (1200, 1500), "test": (1500, 1797)}
CLASSES = tuple(str(d) for d in range(10))
Square = tuple[int, int, int]  # (y, x, side) of a pasted patch
_MAX_TRIES = 50  # placements tried per digit before it is left out (no-overlap mode)


@functools.lru_cache(maxsize=1)
def _source() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits  # optional dependency

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0)  # (1797, 8, 8)
    targets = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))  # (1797,)
    if images.shape != (1797, 8, 8) or float(images.max()) > 1.0:
        raise ValueError(f"load_digits() returned unexpected images {tuple(images.shape)}")
    return images, targets


def source_digits(split: str) -> tuple[Tensor, Tensor]:
    """The split's source digits: ``(intensity float32[M, 8, 8] in [0, 1], digit int64[M])``."""
    check_split(split)
    lo, hi = SOURCE_SPLITS[split]
    images, targets = _source()
    return images[lo:hi], targets[lo:hi]


def upsample(digits: Tensor, size: int) -> Tensor:
    """Bilinear resize of ``digits (Tensor[..., 8, 8])`` to ``[..., size, size]``, clamped to [0, 1]."""
    lead = digits.shape[:-2]
    flat = digits.reshape(-1, 1, *digits.shape[-2:])  # (..., 8, 8) -> (M, 1, 8, 8)
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp(0.0, 1.0).reshape(*lead, size, size)  # (M, 1, s, s) -> (..., s, s)


class Digits(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """One real digit per item: ``(image float32[3, size, size] in [0, 1], target)``.

    ``target = {"labels": int64 scalar, "image_id": int64 scalar}``: the label is the class
    index 0..9 (there is no background class here; ``classes[label]`` is its name) and the id is
    the digit's index in ``load_digits()``, unique across splits.
    """

    classes = CLASSES
    num_classes = 10

    def __init__(self, split: str = "train", size: int = 32, transforms: Transform | None = None) -> None:
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8, got {size!r}")
        self.split, self.size, self.transforms = check_split(split), size, transforms
        images, self.targets = source_digits(split)
        self.images = upsample(images, size)  # (M, 8, 8) -> (M, size, size)
        self._first_id = SOURCE_SPLITS[split][0]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"digit {index} out of range for {len(self)} digits")
        index %= len(self)
        image = self.images[index].expand(3, self.size, self.size).clone()  # (s, s) -> (3, s, s)
        target = {
            "labels": self.targets[index].clone(),
            "image_id": torch.tensor(self._first_id + index, dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def _apart(a: Square, b: Square) -> bool:
    """Whether two squares ``(y, x, side)`` do not intersect (touching edges is apart)."""
    (ay, ax, aside), (by, bx, bside) = a, b
    return ay + aside <= by or by + bside <= ay or ax + aside <= bx or bx + bside <= ax


def _int_pair(value: Sequence[int], name: str, low: int) -> tuple[int, int]:
    """``(a, b)`` of ints with ``low <= a <= b``, else ``ValueError``."""
    if isinstance(value, int) or len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be a pair of ints, got {value!r}")
    a, b = value
    if not low <= a <= b:
        raise ValueError(f"{name} must satisfy {low} <= first <= second, got {value!r}")
    return a, b


class DigitCanvas(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Scenes of real handwritten digits on a black canvas, for detection and segmentation.

    Item ``i`` is generated from ``(seed, split, i)`` alone (same item every time, in any order):
    ``(image float32[3, H, W] in [0, 1], target)`` with ``boxes float32[N, 4]`` (tight around
    the masks), ``labels int64[N]`` = digit + 1 (category names ``"0".."9"``), ``masks
    uint8[N, H, W]`` (visible stroke pixels), ``semantic int64[H, W]`` (label of the visible digit,
    0 background, 255 on strokes of a digit left out for being nearly hidden), ``iscrowd`` (0),
    ``image_id`` (= ``i``).

    Each digit: a source digit of the split, a side drawn in ``scale`` (pixels), a colour with
    channels in [0.5, 1] and a position fully inside the canvas. Without ``overlap`` the digits'
    square patches never intersect: a digit that finds no free place in 50 tries is left out, so a
    crowded canvas may hold fewer digits than drawn. With ``overlap`` later digits are painted on
    top, hide what they cover in earlier masks, and a digit with fewer than ``min_pixels`` visible
    is dropped from the targets.

    Args:
        split: which source digits are used (module doc).
        size: canvas ``(H, W)``, each >= 16.
        num_images: length of the data set.
        digits_per_image: ``(min, max)`` digits drawn per image, inclusive.
        scale: ``(min, max)`` side of an upsampled digit in pixels, 8 <= min <= max <= min(H, W).
        overlap: allow digits to overlap (occlusion) or not.
        threshold: a pixel belongs to a digit's mask iff its intensity is above this (0..1).
        min_pixels: visible pixels a digit needs to be kept (overlap mode).
        seed: base seed; different splits give different scenes for the same seed.
        transforms: optional joint transform applied to ``(image, target)``.
    """

    categories = Categories(list(CLASSES))

    def __init__(
        self,
        split: str = "train",
        size: Sequence[int] = (128, 128),
        num_images: int = 100,
        digits_per_image: Sequence[int] = (1, 5),
        scale: Sequence[int] = (16, 40),
        overlap: bool = False,
        threshold: float = 0.5,
        min_pixels: int = 8,
        seed: int = 0,
        transforms: Transform | None = None,
    ) -> None:
        self.split = check_split(split)
        if isinstance(size, int) or len(size) != 2 or not all(isinstance(v, int) and v >= 16 for v in size):
            raise ValueError(f"size must be a pair of ints (H, W), each >= 16, got {size!r}")
        self.size = (size[0], size[1])
        self.digits_per_image = _int_pair(digits_per_image, "digits_per_image", 0)
        self.scale = _int_pair(scale, "scale", 8)
        if self.scale[1] > min(self.size):
            raise ValueError(f"scale={scale!r}: a {self.scale[1]}-px digit does not fit a {self.size} canvas")
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be an int >= 1, got {num_images!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not isinstance(min_pixels, int) or min_pixels < 1:
            raise ValueError(f"min_pixels must be an int >= 1, got {min_pixels!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.num_images, self.overlap, self.threshold = num_images, overlap, threshold
        self.min_pixels, self.seed, self.transforms = min_pixels, seed, transforms
        self.sources, self.digits = source_digits(split)

    def __len__(self) -> int:
        return self.num_images

    def _place(self, rng: np.random.Generator, side: int, taken: list[Square]) -> tuple[int, int] | None:
        """Top-left ``(y, x)`` of a ``side`` patch in the canvas, clear of ``taken`` unless overlapping."""
        H, W = self.size
        for _ in range(1 if self.overlap else _MAX_TRIES):
            y, x = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
            if self.overlap or all(_apart((y, x, side), other) for other in taken):
                return y, x
        return None

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {len(self)} images")
        index %= len(self)
        H, W = self.size
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        image = torch.zeros(3, H, W)
        masks: list[Tensor] = []  # bool[H, W] per pasted digit, in painting order
        labels: list[int] = []
        taken: list[Square] = []
        for _ in range(int(rng.integers(self.digits_per_image[0], self.digits_per_image[1] + 1))):
            source = int(rng.integers(0, len(self.sources)))
            side = int(rng.integers(self.scale[0], self.scale[1] + 1))
            colour = torch.from_numpy(rng.uniform(0.5, 1.0, size=3).astype(np.float32))  # (3,)
            where = self._place(rng, side, taken)
            if where is None:
                continue
            y, x = where
            alpha = upsample(self.sources[source], side)  # (side, side)
            patch = image[:, y : y + side, x : x + side]  # (3, side, side) view
            patch.mul_(1.0 - alpha).add_(colour.view(3, 1, 1) * alpha)
            mask = torch.zeros(H, W, dtype=torch.bool)
            mask[y : y + side, x : x + side] = alpha > self.threshold
            for earlier in masks:
                earlier &= ~mask  # the new digit hides what it covers
            masks.append(mask)
            labels.append(int(self.digits[source]) + 1)
            taken.append((y, x, side))
        semantic = torch.zeros(H, W, dtype=torch.int64)
        kept = [k for k, m in enumerate(masks) if int(m.sum()) >= self.min_pixels]
        for k, m in enumerate(masks):
            semantic[m] = labels[k] if k in kept else 255
        stack = torch.zeros(len(kept), H, W, dtype=torch.uint8)
        for row, k in enumerate(kept):
            stack[row] = masks[k]
        target = {
            "boxes": masks_to_boxes(stack),
            "labels": torch.tensor([labels[k] for k in kept], dtype=torch.int64),
            "masks": stack,
            "semantic": semantic,
            "iscrowd": torch.zeros(len(kept), dtype=torch.uint8),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
