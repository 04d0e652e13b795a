"""Tiny hostile files for the probe: hand-made headers that declare what the pixels are not."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png(
    width: int, height: int, depth: int = 8, color: int = 0, extra: bytes = b"", idat: bytes | None = None
) -> bytes:
    """A PNG whose IHDR says ``width x height``; the IDAT holds ``idat`` (default: 1 KB of zeros)."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
    data = zlib.compress(b"\0" * 1000) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def saved(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    """A 16 x 16 JPEG whose SOF marker is patched to say ``width x height``."""
    data = bytearray(saved(Image.new("L", (16, 16), 7), "JPEG", progressive=progressive))
    i = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp(width: int, height: int) -> bytes:
    data = bytearray(saved(Image.new("RGB", (4, 4)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def gif_screen(width: int, height: int) -> bytes:
    data = bytearray(saved(Image.new("P", (4, 4)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def gif_frame(width: int, height: int) -> bytes:
    """A 4 x 4 GIF whose first frame descriptor says ``width x height``."""
    data = bytearray(saved(Image.new("P", (4, 4)), "GIF"))
    i = data.index(b"\x2c\x00\x00\x00\x00")
    data[i + 5 : i + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def tiff(width: int, height: int, tile: int | None = None) -> bytes:
    """A minimal grey TIFF declaring ``width x height`` (8 bytes of pixels), optionally tiled."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1)]
    if tile is None:
        tags += [(273, 4, 0), (278, 4, height), (279, 4, 8)]
    else:
        tags += [(322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, 8)]
    ifd_offset, n = 8, len(tags)
    data_offset = ifd_offset + 2 + 12 * n + 4
    entries = b""
    for tag, kind, value in sorted(tags):
        value = data_offset if tag in (273, 324) else value
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        entries += struct.pack("<HHI", tag, kind, 1) + packed
    return (
        b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", n) + entries + b"\0\0\0\0" + b"\0" * 8
    )


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def array_file(tmp: Path, name: str, array: np.ndarray, **kwargs: Any) -> Path:
    path = tmp / name
    Image.fromarray(array).save(path, **kwargs)
    return path
