"""The image decoder: Pillow only, exact 8- and 16-bit PNG, RGB conversion, no warnings."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data.images import image_size, read_image, write_image


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png16(path: Path, pixels: np.ndarray, color_type: int, filters: list[int]) -> None:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB), rows filtered as asked."""
    H, W = pixels.shape[:2]
    data = pixels.astype(">u2").reshape(H, -1).view(np.uint8)  # (H, W*C*2) big-endian bytes
    bpp = data.shape[1] // W
    rows, prev = [], np.zeros(data.shape[1], dtype=np.int64)
    for y in range(H):
        cur = data[y].astype(np.int64)
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        f = filters[y % len(filters)]
        if f == 0:
            out = cur
        elif f == 1:
            out = cur - left
        elif f == 2:
            out = cur - prev
        elif f == 3:
            out = cur - (left + prev) // 2
        else:  # Paeth
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            out = cur - pred
        rows.append(bytes([f]) + (out % 256).astype(np.uint8).tobytes())
        prev = cur
    header = struct.pack(">IIBBBBB", W, H, 16, color_type, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
    path.write_bytes(png + _chunk(b"IEND", b""))


@pytest.mark.parametrize(("channels", "color_type"), [(3, 2), (4, 6), (2, 4)])
def test_16_bit_png_is_exact_for_every_filter(tmp_path: Path, channels: int, color_type: int) -> None:
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65536, (7, 5, channels)).astype(np.uint16)  # (H, W, C)
    path = tmp_path / "x.png"
    _png16(path, pixels, color_type, filters=[0, 1, 2, 3, 4])
    image = read_image(path)
    colour = pixels[..., :3] if channels >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    expected = torch.from_numpy(colour.astype(np.float32) / 65535.0).permute(2, 0, 1)
    assert image.shape == (3, 7, 5) and image.dtype == torch.float32
    assert torch.equal(image, expected)


def test_16_bit_grey_png_is_exact(tmp_path: Path) -> None:
    values = np.array([[0, 1, 300], [1000, 40000, 65535]], dtype=np.uint16)
    path = tmp_path / "g.png"
    _png16(path, values[..., None], 0, filters=[4])
    expected = torch.from_numpy(values.astype(np.float32) / 65535.0).expand(3, 2, 3)
    assert torch.equal(read_image(path), expected)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "1"])
def test_8_bit_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 9, 3)).astype(np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / "x.png"
    im.save(path)
    expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    assert torch.equal(read_image(path), torch.from_numpy(expected).permute(2, 0, 1))


def test_png_and_jpeg_round_trip(tmp_path: Path) -> None:
    image = torch.rand(3, 10, 12)
    write_image(tmp_path / "a.png", image)
    assert torch.equal(read_image(tmp_path / "a.png"), torch.round(image * 255) / 255)
    write_image(tmp_path / "a.jpg", image)
    assert read_image(tmp_path / "a.jpg").shape == (3, 10, 12)
    assert image_size(tmp_path / "a.jpg") == (10, 12)


def test_no_warning_is_emitted(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    write_image(tmp_path / "a.jpg", torch.rand(3, 8, 8))
    _png16(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint16), 2, filters=[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("a.png", "a.jpg", "b.png"):
            read_image(tmp_path / name)
            image_size(tmp_path / name)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable image"),
        (b"hello, not an image", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "(not a readable|corrupt)"),
    ],
)
def test_broken_files_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"bad.png: .*{message}"):
        read_image(path)


def test_truncated_png_is_a_value_error(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", torch.rand(3, 32, 32))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.png: corrupt or truncated"):
        read_image(tmp_path / "t.png")
    assert image_size(tmp_path / "t.png") == (32, 32)  # the header alone is still readable


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image file not found"):
        read_image(tmp_path / "none.png")
    with pytest.raises(ValueError, match="image file not found"):
        image_size(tmp_path / "none.png")


def test_header_over_max_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    from structpred.data import limits

    header = struct.pack(">IIBBBBB", 50000, 50000, 8, 0, 0, 0, 0)  # 2.5e9 pixels in 57 bytes
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b""))
    for reader in (read_image, image_size):
        with pytest.raises(limits.LimitError, match=r"bomb.png: image size 50000 x 50000 \(H x W\)"):
            reader(tmp_path / "bomb.png")


def test_animated_png_reads_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (3, 2), (k, 2 * k, 3 * k)) for k in (10, 20, 30)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    assert torch.equal(
        (read_image(tmp_path / "a.png") * 255).round(),
        torch.tensor([10.0, 20, 30])[:, None, None].expand(3, 2, 3),
    )
