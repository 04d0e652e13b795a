"""Semantic label maps as PNG files (Pascal VOC ``SegmentationClass`` style).

A label map is ``int64 Tensor[H, W]`` of class indices, ``255`` = ignore (VOC draws object
borders with it). It is written as a palette ('P' mode) PNG: the pixel *is* the class index and
the palette only colours it for viewers. Greyscale ('L', 16-bit) PNGs read as their values;
RGB label maps are refused (their colours would need a palette lookup that is not unique).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IGNORE_INDEX = 255


def voc_palette(num_colors: int = 256) -> Tensor:
    """The Pascal VOC colour map, ``uint8 Tensor[num_colors, 3]``.

    Colour ``i`` spreads the bits of ``i`` over the three channels from the most significant
    bit down: bit ``3j`` of ``i`` goes to red bit ``7 - j``, ``3j + 1`` to green, ``3j + 2`` to
    blue. So 0 is black, 1 dark red (128, 0, 0), 255 (ignore) is (224, 224, 192).
    """
    if not 0 < num_colors <= 256:
        raise ValueError(f"num_colors must be in 1..256, got {num_colors}")
    colors = torch.zeros(num_colors, 3, dtype=torch.int64)
    index = torch.arange(num_colors)
    for j in range(8):
        for channel in range(3):
            bit = (index >> (3 * j + channel)) & 1
            colors[:, channel] |= bit << (7 - j)
    return colors.to(torch.uint8)


def read_label_map(path: str | Path) -> Tensor:
    """Read a label PNG as ``int64 Tensor[H, W]`` (palette indices or grey values).

    Raises ``ValueError`` naming the file if it is missing, corrupt, truncated or in colour.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: label map file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "F"):
                raise ValueError(
                    f"{path}: label map has mode {mode!r}; expected a palette ('P') or greyscale "
                    "PNG whose pixel values are the class indices"
                )
            values = np.asarray(im.convert("L") if mode == "1" else im)  # (H, W)
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not a readable image file") from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{path}: corrupt or truncated label map: {err}") from err
    return torch.from_numpy(values.astype(np.int64))


def write_label_map(
    path: str | Path, labels: Tensor, palette: Tensor | Sequence[Sequence[int]] | None = None
) -> None:
    """Write ``labels`` (integer ``Tensor[H, W]``, values ``0..254`` or ``255`` = ignore) as a
    palette PNG. ``palette`` is ``[K, 3]`` RGB colours (``K <= 256``, padded with black);
    ``None`` is the VOC palette (:func:`voc_palette`)."""
    path = Path(path)
    if not isinstance(labels, Tensor) or labels.dim() != 2:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{path}: labels must be a Tensor[H, W], got {shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{path}: labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() == 0:
        raise ValueError(f"{path}: labels is empty, shape {tuple(labels.shape)}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"{path}: labels must be in 0..255 (255 = ignore), got values in [{lo}, {hi}]")
    colors = voc_palette() if palette is None else torch.as_tensor(palette)
    if colors.dim() != 2 or colors.shape[1] != 3 or not 0 < colors.shape[0] <= 256:
        raise ValueError(f"{path}: palette must be [K, 3] with 1 <= K <= 256, got {tuple(colors.shape)}")
    if colors.is_floating_point() or int(colors.min()) < 0 or int(colors.max()) > 255:
        raise ValueError(f"{path}: palette must hold integer RGB values in 0..255")
    flat = np.zeros(256 * 3, dtype=np.uint8)
    flat[: colors.numel()] = colors.to(torch.uint8).reshape(-1).numpy()  # (K, 3) -> (3K,)
    height, width = labels.shape
    pixels = np.ascontiguousarray(labels.detach().cpu().to(torch.uint8).numpy())  # (H, W)
    # frombytes keeps the values as palette indices; convert("P") would re-quantise them
    im = Image.frombytes("P", (width, height), pixels.tobytes())
    im.putpalette(flat.tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        im.save(path, format="PNG")
    except OSError as err:
        raise ValueError(f"{path}: cannot write label map: {err}") from err
