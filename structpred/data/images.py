"""Read and write image files as ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (DESIGN.md §3).

Convention: pixels are returned as stored. EXIF orientation is *not* applied, so pixels,
:func:`image_size` and annotations drawn on the stored pixels agree. Grey images are repeated to
3 channels; alpha is dropped (not composited); palette images are expanded. 8-bit values ``v``
become ``v / 255``, 16-bit values ``v / 65535``. A multi-frame file (GIF, APNG, multi-page
TIFF, animated WebP) gives its first frame; no other frame is ever decoded.

Every format is decoded with Pillow (maintained, no deprecation warnings; ``torchvision.io``'s
decoders are being moved to torchcodec). Pillow keeps 16-bit grey exact; for 16-bit RGB(A) and
grey+alpha PNGs, which Pillow reduces to 8 bits, the PNG is decoded twice through Pillow's own
unfiltering with two raw modes (high bytes, low bytes) and the halves are joined, so those are
exact too. 16-bit RGB TIFF is reduced to 8 bits by Pillow. Broken files raise ``ValueError``
naming the file.

Decompression bombs: :func:`open_image` (used by every reader of this package) reads the header
only, checks the declared ``H x W`` against ``limits.max_pixels`` (:class:`LimitError`, naming
the file) and only then decodes. Formats are limited to :data:`FORMATS` (no EPS, which runs
Ghostscript, nor the dozens of rarely used formats Pillow also probes). Pillow's own
``Image.MAX_IMAGE_PIXELS`` is *not* changed for other users: the header is read through Pillow's
format registry without its check (ours replaces it), and only when a vetted image is larger
than Pillow's limit (the user raised ``max_pixels`` past it) is Pillow's limit raised to that
image's size for its decode, under a lock, and restored.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch import Tensor

from . import limits

logger = logging.getLogger(__name__)

# Pillow format ids an image may have (JPEG files from cameras open as MPO). Probed in this order.
FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "GIF", "WEBP", "PPM")
# Pillow's raw modes of 16-bit PNGs it reduces to 8 bits -> (raw mode of the low bytes, channels).
# The low-byte raw mode unpacks the same number of bits per pixel, so the PNG filters (which work
# on whole pixels) are undone the same way; "RGBA" on grey+alpha reads bytes (Ghi, Glo, Ahi, Alo).
_LOW_BYTES = {"RGB;16B": ("RGB;16L", 3), "RGBA;16B": ("RGBA;16L", 4), "LA;16B": ("RGBA", 4)}
_PILLOW_LIMIT_LOCK = threading.Lock()
# what Pillow raises on broken, truncated or hostile files
_PIL_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError,
    ZeroDivisionError, OverflowError, Image.DecompressionBombError,
)  # fmt: skip


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _probe(fp: BinaryIO, path: Path) -> ImageFile.ImageFile:
    """Parse the header with the first of :data:`FORMATS` that accepts it (Pillow's ``Image.open``
    without its pixel check, which :func:`open_image` replaces by ``limits.max_pixels``)."""
    Image.init()  # registers Pillow's plugins once
    prefix = fp.read(16)
    for name in FORMATS:
        if name not in Image.OPEN:  # pragma: no cover - a Pillow built without this codec
            continue
        factory, accept = Image.OPEN[name]
        if accept is not None and not accept(prefix):
            continue
        fp.seek(0)
        try:
            with warnings.catch_warnings():  # a GIF frame larger than its screen: checked after
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return factory(fp, str(path))
        except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open skips too
            fp.seek(0)
    raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}")


def _check_pixels(path: Path, im: Image.Image, what: str) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: {what} header declares an empty size {height} x {width} (H x W)")
    limits.check("max_pixels", height * width, path, f"{what} size {height} x {width} (H x W) in pixels")


@contextlib.contextmanager
def _pillow_allows(pixels: int) -> Iterator[None]:
    """Let Pillow decode a vetted image of ``pixels`` pixels (see the module doc)."""
    ceiling = Image.MAX_IMAGE_PIXELS
    if ceiling is None or pixels <= ceiling:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
        return
    with _PILLOW_LIMIT_LOCK:
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _header(path: Path, fp: BinaryIO, what: str) -> ImageFile.ImageFile:
    try:
        im = _probe(fp, path)
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not a readable {what} file (formats: {', '.join(FORMATS)})") from err
    except _PIL_ERRORS as err:
        raise ValueError(f"{path}: cannot read the {what} header: {_first_line(err)}") from err
    _check_pixels(path, im, what)
    return im


def _load(path: Path, im: ImageFile.ImageFile, what: str, rawmode: str | None = None) -> ImageFile.ImageFile:
    """Decode the first frame of a header-checked image (``rawmode`` replaces the tile's)."""
    width, height = im.size
    try:
        if rawmode is not None:
            im.tile = [tile._replace(args=rawmode) for tile in im.tile]
        with _pillow_allows(width * height):
            im.load()
    except limits.LimitError:
        raise
    except MemoryError:
        raise ValueError(f"{path}: not enough memory to decode a {height} x {width} (H x W) {what}") from None
    except _PIL_ERRORS as err:  # truncated, broken headers or data
        raise ValueError(f"{path}: corrupt or truncated {what}: {_first_line(err)}") from err
    if im.size != (width, height):  # a plugin that resized on load: check again
        _check_pixels(path, im, what)
    return im


def shown_path(path: str | Path) -> str:
    """``path`` as a one-line message shows it: as is, or quoted with escapes when it holds a
    newline or another unprintable character (a hostile ``file_name``)."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def check_file(path: Path, what: str = "image") -> None:
    """``ValueError`` naming ``path`` unless it is a regular file (a name too long for the file
    system, or a component that is a file, is an error too, not an ``OSError``)."""
    try:
        found = path.is_file()
    except OSError as err:  # ENAMETOOLONG and friends: Path.is_file only hides ENOENT-like errors
        raise ValueError(f"{shown_path(path)[:300]}: cannot read {what} file: {err.strerror}") from None
    if not found:
        raise ValueError(f"{shown_path(path)}: {what} file not found")


def _open_file(path: Path, what: str) -> BinaryIO:
    check_file(path, what)
    try:
        return path.open("rb")
    except OSError as err:
        raise ValueError(f"{shown_path(path)}: cannot read {what} file: {err.strerror}") from err


@contextlib.contextmanager
def open_image(path: str | Path, what: str = "image") -> Iterator[Image.Image]:
    """The first frame of an image file, decoded, as a PIL image (closed after the block).

    The header's ``H x W`` is checked against ``limits.max_pixels`` before any pixel is decoded.
    Raises ``ValueError`` (``LimitError`` for the size) naming the file and ``what``.
    """
    path = Path(path)
    with _open_file(path, what) as fp:
        im = _load(path, _header(path, fp, what), what)
        try:
            yield im
        finally:
            im.close()


def _decode(path: Path) -> Tensor:
    """Image file -> float32 [3, H, W] in [0, 1]."""
    with _open_file(path, "image") as fp:
        im = _header(path, fp, "image")
        raw = im.tile[0].args if im.format == "PNG" and len(im.tile) == 1 else None
        _load(path, im, "image")
        if not (isinstance(raw, str) and raw in _LOW_BYTES):
            return _pil_to_tensor(path, im)
        high = np.asarray(im, dtype=np.uint16)
        fp.seek(0)
        low_im = _load(path, _header(path, fp, "image"), "image", _LOW_BYTES[raw][0])
        low = np.asarray(low_im, dtype=np.uint16)  # (H, W, C)
    if raw == "LA;16B":  # low holds the bytes (Ghi, Glo, Ahi, Alo) per pixel
        return _grey_tensor((low[..., 0] * 256 + low[..., 1]).astype(np.float32) / 65535.0)
    rgb = (high[..., :3] * 256 + low[..., :3]).astype(np.float32) / 65535.0  # (H, W, 3)
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
        return _rgb_tensor(im)
    return _grey_tensor(grey)


def _rgb_tensor(im: Image.Image) -> Tensor:
    """8-bit RGB(A)/palette/grey -> float32 [3, H, W] with one byte copy and the float tensor:
    the decoded image is released before the float tensor is made (peak ~15 bytes per pixel,
    not ~30: docs/limits.md)."""
    rgb = im if im.mode == "RGB" else im.convert("RGB")
    width, height = rgb.size
    data = rgb.tobytes()  # (H * W * 3,) bytes
    rgb.close()
    im.close()  # the caller is done with it: its pixel memory goes now
    with warnings.catch_warnings():  # a read-only buffer: it is only read below
        warnings.simplefilter("ignore", UserWarning)
        pixels = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    out = torch.empty(3, height, width)  # (3, H, W)
    out.copy_(pixels.view(height, width, 3).permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
    return out.div_(255.0)


def read_image(path: str | Path) -> Tensor:
    """Read an image file as ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (RGB).

    Raises ``ValueError`` naming the file when it is missing, not an image, truncated or corrupt,
    and ``LimitError`` when its header declares more than ``limits.max_pixels`` pixels.
    """
    return _decode(Path(path))


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, without decoding the pixels.

    Raises like :func:`read_image` (the pixel limit included), so a bomb is found up front.
    """
    path = Path(path)
    with _open_file(path, "image") as fp:
        im = _header(path, fp, "image")
        width, height = im.size
        im.close()
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
