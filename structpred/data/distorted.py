"""Distorted real digits: each digit rotated, scaled and translated at random (the STN's task).

The "RTS" setting of the Spatial Transformer paper, on scikit-learn's digits
(:mod:`structpred.data.digits`, same fixed index splits): a digit is upsampled to
``digit_size`` pixels, centred on a black ``size x size`` canvas, and warped by one joint
transform, a rotation by ``angle`` (uniform in +-``rotation`` degrees), an isotropic scale
``s`` (uniform in ``scale``) and a shift ``(dx, dy)`` (each uniform in +-``translation``
canvas sides). Item ``i`` is a pure function of ``(seed, split, i)``: the same distortion
every time, in any order, so val and test are fixed sets.

Shape shorthand: M source digits in the split, S = ``size`` (canvas side, pixels).

Convention: normalised coordinates and ``theta`` as in :mod:`structpred.ops.warp`
(``align_corners=False``, bilinear, zeros outside). The warp moves a canvas point ``p`` to
``s R(angle) p + 2 (dx, dy)``, so the sampling map stored as ``target["theta"]`` is its
inverse, ``p = (s R)^-1 (q - 2 (dx, dy))``. With y pointing down, a positive angle turns the
digit clockwise on screen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..ops import affine_grid, grid_sample
from .digits import CLASSES, SOURCE_SPLITS, source_digits, upsample
from .real import SPLITS, Transform, check_split

_CHUNK = 512  # items warped at once when the data set is built


def distortion_theta(angle_deg: float, scale: float, dx: float, dy: float) -> Tensor:
    """Sampling map ``float32[2, 3]`` of "rotate by ``angle_deg``, scale, shift by ``(dx, dy)`` sides"."""
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    inv = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)  # (s R(a))^-1 = R(-a) / s
    shift = torch.tensor([2.0 * dx, 2.0 * dy], dtype=torch.float64)  # sides -> normalised units
    return torch.cat([inv, -(inv @ shift)[:, None]], dim=1).float()  # (2, 2) | (2, 1) -> (2, 3)


class DistortedDigits(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Real digits under random rotation, scale and translation: ``(image float32[3, S, S], target)``.

    ``target = {"labels": int64 class 0..9, "image_id": int64 = i, "digit_id": int64 index in
    load_digits(), "theta": float32[2, 3] the distortion's sampling map}``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` source digits (fixed index ranges).
        size: canvas side S in pixels, >= 16.
        digit_size: side of the undistorted upsampled digit, 8 <= digit_size <= size.
        rotation: maximum absolute angle in degrees.
        scale: ``(min, max)`` scale factor, 0 < min <= max.
        translation: maximum absolute shift per axis, in canvas sides (0.15: 15% of S).
        repeats: distorted copies of each source digit (length ``repeats * M``; copy ``r`` of
            digit ``j`` is item ``r * M + j``).
        seed: base seed; splits get different distortions for the same seed.
        transforms: optional joint transform applied to ``(image, target)``.
    """

    classes = CLASSES
    num_classes = 10

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        digit_size: int = 20,
        rotation: float = 45.0,
        scale: Sequence[float] = (0.7, 1.2),
        translation: float = 0.15,
        repeats: int = 1,
        seed: int = 0,
        transforms: Transform | None = None,
    ) -> None:
        self.split = check_split(split)
        if not isinstance(size, int) or size < 16:
            raise ValueError(f"size must be an int >= 16, got {size!r}")
        if not isinstance(digit_size, int) or not 8 <= digit_size <= size:
            raise ValueError(f"digit_size must be an int in [8, size={size}], got {digit_size!r}")
        if isinstance(scale, (int, float)) or len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale!r}")
        if not 0 <= rotation <= 180 or not 0 <= translation <= 1:
            raise ValueError(
                f"rotation must be in [0, 180] degrees and translation in [0, 1] sides, "
                f"got {rotation}, {translation}"
            )
        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.size, self.digit_size, self.rotation = size, digit_size, float(rotation)
        self.scale = (float(scale[0]), float(scale[1]))
        self.translation, self.repeats = float(translation), repeats
        self.seed, self.transforms = seed, transforms
        images, self.targets = source_digits(split)
        self._first_id = SOURCE_SPLITS[split][0]
        lo = (size - digit_size) // 2
        canvases = torch.zeros(len(images), 1, size, size)  # (M, 1, S, S): centred, undistorted
        canvases[:, 0, lo : lo + digit_size, lo : lo + digit_size] = upsample(images, digit_size)
        # Every item is fixed, so all are warped once, here: (N, 2, 3), (N, S, S) for N items.
        self.thetas = torch.stack([distortion_theta(*self.distortion(i)) for i in range(len(self))])
        chunks = [(start, min(start + _CHUNK, len(self))) for start in range(0, len(self), _CHUNK)]
        self.images = torch.cat([self._warp(canvases, start, stop) for start, stop in chunks])

    def _warp(self, canvases: Tensor, start: int, stop: int) -> Tensor:
        """Items ``start..stop-1`` as ``[stop - start, S, S]`` intensities in [0, 1]."""
        S, digit = self.size, torch.arange(start, stop) % len(self.targets)
        grid = affine_grid(self.thetas[start:stop], (stop - start, 1, S, S))  # (n, S, S, 2)
        warped = grid_sample(canvases[digit], grid).clamp(0.0, 1.0)  # (n, 1, S, S)
        return warped.reshape(stop - start, S, S)  # (n, 1, S, S) -> (n, S, S)

    def __len__(self) -> int:
        return self.repeats * len(self.targets)

    def distortion(self, index: int) -> tuple[float, float, float, float]:
        """``(angle degrees, scale, dx, dy)`` of item ``index``: a function of (seed, split, index)."""
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        angle = float(rng.uniform(-self.rotation, self.rotation))
        scale = float(rng.uniform(*self.scale))
        dx, dy = (float(v) for v in rng.uniform(-self.translation, self.translation, size=2))
        return angle, scale, dx, dy

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        index %= len(self)
        digit = index % len(self.targets)
        S = self.size
        image = self.images[index].expand(3, S, S).clone()  # (S, S) -> (3, S, S)
        target = {
            "labels": self.targets[digit].clone(),
            "image_id": torch.tensor(index, dtype=torch.int64),
            "digit_id": torch.tensor(self._first_id + digit, dtype=torch.int64),
            "theta": self.thetas[index].clone(),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
