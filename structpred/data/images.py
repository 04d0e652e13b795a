"""Read and write image files as ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (DESIGN.md §3).

Convention: pixels are returned as stored. EXIF orientation is *not* applied (neither by PIL nor
torchvision by default), so pixels, :func:`image_size` and annotations drawn on the stored
pixels agree. Grey images are repeated to 3 channels; alpha is dropped (not composited);
palette images are expanded. 8-bit values ``v`` become ``v / 255``, 16-bit values ``v / 65535``.

PNG and JPEG are decoded with ``torchvision.io`` (exact 16-bit PNG, also RGB); other formats
(TIFF, BMP, WebP...) with PIL, where 16-bit *grey* is exact and 16-bit RGB TIFF is reduced to
8 bits by PIL. Broken files raise ``ValueError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read image file: {err}") from err


def _decode_torchvision(path: Path, data: bytes) -> Tensor:
    """PNG/JPEG bytes -> float32 [3, H, W] in [0, 1]."""
    try:
        raw = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as err:  # libpng / libjpeg errors: truncated or corrupt data
        raise ValueError(f"{path}: corrupt or truncated image: {err}".splitlines()[0]) from err
    if raw.dtype == torch.uint8:
        return raw.float().div_(255.0)
    if raw.dtype == torch.uint16:
        return raw.to(torch.int32).float().div_(65535.0)
    raise ValueError(f"{path}: unsupported pixel type {raw.dtype}")


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
    g = torch.from_numpy(np.ascontiguousarray(grey))  # (H, W)
    return g.unsqueeze(0).expand(3, -1, -1).contiguous()  # (3, H, W)


def read_image(path: str | Path) -> Tensor:
    """Read an image file as ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (RGB).

    Raises ``ValueError`` naming the file when it is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    data = _read_bytes(path)
    if data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC):
        return _decode_torchvision(path, data)
    try:
        with Image.open(path) as im:
            im.load()
            return _pil_to_tensor(path, im)
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not a readable image file") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: image too large: {err}") from err
    except (OSError, SyntaxError) as err:  # PIL: truncated data, broken headers
        raise ValueError(f"{path}: corrupt or truncated image: {err}") from err


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not a readable image file") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: image too large: {err}") from err
    except (OSError, SyntaxError) as err:
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
