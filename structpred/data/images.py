"""Read and write image files as ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (DESIGN.md §3).

Convention: pixels are returned as stored. EXIF orientation is *not* applied, so pixels,
:func:`image_size` and annotations drawn on the stored pixels agree. Grey images are repeated to
3 channels; alpha is dropped (not composited); palette images are expanded. 8-bit values ``v``
become ``v / 255``, 16-bit values ``v / 65535``.

Every format is decoded with Pillow (maintained, no deprecation warnings; ``torchvision.io``'s
decoders are being moved to torchcodec). Pillow keeps 16-bit grey exact; for 16-bit RGB(A) and
grey+alpha PNGs, which Pillow reduces to 8 bits, the PNG is decoded twice through Pillow's own
unfiltering with two raw modes (high bytes, low bytes) and the halves are joined, so those are
exact too. 16-bit RGB TIFF is reduced to 8 bits by Pillow. Broken files raise ``ValueError``
naming the file. Pillow's decompression-bomb warning (images over ~89 M pixels) is logged, not
printed; over ~179 M pixels it is a ``ValueError``.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

logger = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Pillow's raw modes of 16-bit PNGs it reduces to 8 bits -> (raw mode of the low bytes, channels).
# The low-byte raw mode unpacks the same number of bits per pixel, so the PNG filters (which work
# on whole pixels) are undone the same way; "RGBA" on grey+alpha reads bytes (Ghi, Glo, Ahi, Alo).
_LOW_BYTES = {"RGB;16B": ("RGB;16L", 3), "RGBA;16B": ("RGBA;16L", 4), "LA;16B": ("RGBA", 4)}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read image file: {err}") from err


def _open(data: bytes, rawmode: str | None = None) -> tuple[Image.Image, object]:
    """``(decoded image, the raw mode Pillow chose)``; ``rawmode`` replaces the tile's raw mode."""
    im = Image.open(io.BytesIO(data))
    chosen = im.tile[0].args if im.format == "PNG" and len(im.tile) == 1 else None
    if rawmode is not None:
        im.tile = [tile._replace(args=rawmode) for tile in im.tile]
    im.load()
    return im, chosen


def _decode(path: Path, data: bytes) -> Tensor:
    """Image bytes -> float32 [3, H, W] in [0, 1]; Pillow's errors become ``ValueError``."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            im, raw = _open(data)
            low = None
            if isinstance(raw, str) and raw in _LOW_BYTES:
                low = np.asarray(_open(data, _LOW_BYTES[raw][0])[0], dtype=np.uint16)  # (H, W, C)
        for w in caught:
            logger.warning("%s: %s", path, w.message)
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not a readable image file") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: image too large: {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:  # truncated, broken headers
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: corrupt or truncated image: {message}") from err
    if low is None:
        return _pil_to_tensor(path, im)
    if raw == "LA;16B":  # low holds the bytes (Ghi, Glo, Ahi, Alo) per pixel
        return _grey_tensor((low[..., 0] * 256 + low[..., 1]).astype(np.float32) / 65535.0)
    high = np.asarray(im, dtype=np.uint16)[..., :3]  # (H, W, 3) high bytes
    rgb = (high * 256 + low[..., :3]).astype(np.float32) / 65535.0  # (H, W, 3)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def _grey_tensor(grey: np.ndarray) -> Tensor:
    g = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))  # (H, W)
    return g.unsqueeze(0).expand(3, -1, -1).contiguous()  # (3, H, W)


def _pil_to_tensor(path: Path, im: Image.Image) -> Tensor:
    """A loaded PIL image -> float32 [3, H, W] in [0, 1]."""
    if im.mode.startswith("I;16"):
        grey = np.asarray(im, dtype=np.float32) / 65535.0  # (H, W)
    elif im.mode == "I":
        ints = np.asarray(im)
        if ints.size and (ints.min() < 0 or ints.max() > 65535):
            raise ValueError(f"{path}: 32-bit integer image with values outside 0..65535 is not supported")
        grey = ints.astype(np.float32) / 65535.0
    elif im.mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        if grey.size and not (np.isfinite(grey).all() and grey.min() >= 0.0 and grey.max() <= 1.0):
            raise ValueError(f"{path}: float image with values outside [0, 1] is not supported")
    else:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    return _grey_tensor(grey)


def read_image(path: str | Path) -> Tensor:
    """Read an image file as ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (RGB).

    Raises ``ValueError`` naming the file when it is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    return _decode(path, _read_bytes(path))


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not a readable image file") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: image too large: {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise ValueError(f"{path}: cannot read the image header: {err}") from err
    return int(height), int(width)


def write_image(path: str | Path, image: Tensor) -> None:
    """Write ``image`` (``Tensor[3, H, W]`` float in ``[0, 1]``, or uint8) to ``path``.

    Floats are quantised to 8 bits as ``round(255 * x)``, so :func:`read_image` of a PNG gives
    back ``round(255 * x) / 255`` exactly. The format follows the suffix (``.png`` lossless).
    """
    path = Path(path)
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{path}: image must be a Tensor[3, H, W], got {shape}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{path}: image is empty, shape {tuple(image.shape)}")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        pixels = image
    elif image.is_floating_point():
        if not bool(torch.isfinite(image).all()) or image.min() < 0.0 or image.max() > 1.0:
            raise ValueError(f"{path}: float image values must be finite and in [0, 1]")
        pixels = image.float().mul(255.0).round_().to(torch.uint8)
    else:
        raise ValueError(f"{path}: image must be float in [0, 1] or uint8, got {image.dtype}")
    array = pixels.permute(1, 2, 0).contiguous().numpy()  # (3, H, W) -> (H, W, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(array).save(path)
    except (ValueError, KeyError) as err:  # unknown extension
        raise ValueError(f"{path}: cannot choose an image format from the file name: {err}") from err
    except OSError as err:
        raise ValueError(f"{path}: cannot write image: {err}") from err
