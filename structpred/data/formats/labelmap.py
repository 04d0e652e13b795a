"""Semantic label maps as PNG files (Pascal VOC ``SegmentationClass`` style).

A label map is ``int64 Tensor[H, W]`` of class indices, ``255`` = ignore (VOC draws object
borders with it). It is written as a palette ('P' mode) PNG: the pixel *is* the class index and
the palette only colours it for viewers.

Reading accepts only *lossless integer* label images, and maps each mode explicitly:

| mode (Pillow) | files | value read |
|---|---|---|
| ``P`` | palette PNG / GIF / BMP / TIFF | the palette index |
| ``L`` | 8-bit grey PNG / BMP / TIFF / PGM | the grey value |
| ``1`` | 1-bit PNG / BMP / TIFF | 0 or 1 (not Pillow's 0 / 255) |
| ``I;16*``, ``I`` | 16-bit grey PNG / TIFF, 32-bit int TIFF | the value, which must be in 0..65535 |

Refused, with the file name: lossy files (JPEG, lossy WebP, JPEG-compressed TIFF: their values
are not the ones written), float images (``F``: a class is an integer), negative or > 65535
values (value and pixel named), colour and grey+alpha modes (RGB label maps would need a colour
table: see :mod:`structpred.data.layouts.labelmaps`). The header's size is checked against
``limits.max_pixels`` before decoding (:func:`structpred.data.images.open_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..images import open_image

IGNORE_INDEX = 255
MAX_LABEL_VALUE = 65535  # the 16-bit range: class indices, or instance ids of a 16-bit mask
# Pillow formats whose pixels are stored exactly (WebP only in its lossless VP8L flavour)
LOSSLESS_FORMATS = ("PNG", "BMP", "TIFF", "GIF", "PPM", "WEBP")
_LOSSY_TIFF = ("jpeg", "tiff_jpeg", "webp")  # Pillow's names of lossy TIFF compressions
_MODES = ("P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N")


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


def _webp_is_lossless(path: Path) -> bool:
    """True iff the WebP file's image chunk is ``VP8L`` (lossless), not ``VP8 `` (lossy)."""
    with path.open("rb") as f:
        data = f.read(1 << 16)
    pos = 12  # after "RIFF", size, "WEBP"
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8L"
        if kind == b"ANMF":  # an animation frame holds its own chunks after a 16-byte header
            pos += 8 + 16
            continue
        pos += 8 + size + (size & 1)
    return False


def check_lossless(path: Path, im: Image.Image, what: str = "label map") -> None:
    """Raise ``ValueError`` naming the file unless ``im`` was stored losslessly (see module doc)."""
    fmt = im.format or "?"
    lossy = fmt not in LOSSLESS_FORMATS
    if fmt == "TIFF" and str(im.info.get("compression", "")).lower() in _LOSSY_TIFF:
        fmt, lossy = f"TIFF with {im.info['compression']} compression", True
    elif fmt == "WEBP" and not _webp_is_lossless(path):
        fmt, lossy = "lossy WebP", True
    if lossy:
        raise ValueError(
            f"{path}: {what} is {fmt}, a lossy format whose pixel values are not the labels "
            f"written; save label maps as PNG (or another lossless format: {', '.join(LOSSLESS_FORMATS)})"
        )


def _first_position(mask: np.ndarray) -> str:
    y, x = (int(v[0]) for v in np.nonzero(mask))
    return f"(y={y}, x={x})"


def label_values(path: Path, im: Image.Image) -> np.ndarray:
    """The integer labels of a decoded, lossless label image as ``int64 [H, W]`` (module doc)."""
    mode = im.mode
    if mode == "F":
        raise ValueError(f"{path}: label map holds floats (mode 'F'); class indices must be integers")
    if mode not in _MODES:
        raise ValueError(
            f"{path}: label map has mode {mode!r}; expected a palette ('P'), greyscale ('L', '1') or "
            "16-bit greyscale image whose pixel values are the class indices"
        )
    values = np.asarray(im).astype(np.int64)  # (H, W); mode '1' reads as bool: 0 / 1
    if values.ndim != 2:
        raise ValueError(f"{path}: label map must have one channel, got shape {values.shape}")
    if mode in ("I", "I;16N") and values.size:
        for bad, what in ((values < 0, "negative"), (values > MAX_LABEL_VALUE, f"over {MAX_LABEL_VALUE}")):
            if bad.any():
                value = int(values[bad][0])
                raise ValueError(
                    f"{path}: label value {value} at pixel {_first_position(values == value)} is {what}; "
                    f"labels must be integers in 0..{MAX_LABEL_VALUE}"
                )
    return values


def read_label_map(path: str | Path) -> Tensor:
    """Read a lossless integer label image as ``int64 Tensor[H, W]`` (see the module doc).

    Raises ``ValueError`` naming the file if it is missing, corrupt, truncated, lossy, in colour,
    float, or holds a value outside 0..65535 (named with a pixel), and ``LimitError`` if its
    header declares more than ``limits.max_pixels`` pixels.
    """
    path = Path(path)
    with open_image(path, "label map") as im:
        check_lossless(path, im)
        values = label_values(path, im)
    return torch.from_numpy(values)


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
