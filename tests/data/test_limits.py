"""Every limit a reader of images, label images and COCO json enforces: at the limit it reads,
one under it (value = limit + 1) it raises ``LimitError``; and every way to set a limit."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from structpred.data import limits
from structpred.data.flow_real import _read_disparity_npz, read_disparity_png, read_homography_xml
from structpred.data.formats.coco import read_coco, segmentation_to_mask
from structpred.data.formats.labelmap import read_label_map
from structpred.data.images import image_size, read_image
from structpred.data.layouts.labelmaps import palette_colors, read_mask
from structpred.data.limits import LimitError
from structpred.data.trees import load_photo

H, W = 6, 7  # 42 pixels


def _png(tmp_path: Path, mode: str = "L") -> Path:
    path = tmp_path / "a.png"
    Image.new(mode, (W, H)).save(path)
    return path


def _npz(tmp_path: Path) -> Path:
    path = tmp_path / "disp.npz"
    np.savez(path, np.ones((H, W), np.float32))
    return path


def _coco(tmp_path: Path, annotations: int = 1, rings: int = 1, vertices: int = 3) -> Path:
    ring = [float(v) for k in range(vertices) for v in (1 + k % 2 * 4, 1 + k // 2 * 2)]
    ann = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "segmentation": [ring] * rings}
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": [{**ann, "id": k} for k in range(annotations)],
        "categories": [{"id": 1, "name": "x"}],
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    return path


_PIXEL_READERS: dict[str, Callable[[Path], Callable[[], Any]]] = {
    "read_image": lambda t: lambda: read_image(_png(t)),
    "image_size": lambda t: lambda: image_size(_png(t)),
    "read_label_map": lambda t: lambda: read_label_map(_png(t, "P")),
    "read_mask": lambda t: lambda: read_mask(_png(t, "P")),
    "read_mask-colours": lambda t: lambda: read_mask(_png(t, "RGB"), palette_colors(2)),
    "load_photo": lambda t: lambda: load_photo(_png(t, "RGB")),
    "read_disparity_png": lambda t: lambda: read_disparity_png(_png(t, "L")),
    "disparity_npz": lambda t: lambda: _read_disparity_npz(_npz(t)),
    "read_coco": lambda t: lambda: read_coco(_coco(t)),
    "segmentation_to_mask": lambda t: lambda: segmentation_to_mask([[1.0, 1.0, 5.0, 1.0, 5.0, 4.0]], H, W),
}


@pytest.mark.parametrize("reader", list(_PIXEL_READERS))
def test_max_pixels_at_and_over_the_limit(tmp_path: Path, reader: str) -> None:
    call = _PIXEL_READERS[reader](tmp_path)
    with limits.override(max_pixels=H * W):
        call()  # at the limit
    with (
        limits.override(max_pixels=H * W - 1),
        pytest.raises(LimitError, match=f"is {H * W}, over the limit"),
    ):
        call()


@pytest.mark.parametrize(
    ("name", "value", "kwargs"),
    [("max_annotations_per_image", 3, {"annotations": 3}), ("max_polygons_per_annotation", 2, {"rings": 2}),
     ("max_polygon_vertices", 5, {"vertices": 5})],
)  # fmt: skip
def test_coco_counts_at_and_over_the_limit(tmp_path: Path, name: str, value: int, kwargs: dict) -> None:
    path = _coco(tmp_path, **kwargs)
    with limits.override(**{name: value}):
        read_coco(path)
    with limits.override(**{name: value - 1}), pytest.raises(LimitError, match=f"{name}={value - 1}"):
        read_coco(path)


def test_pillows_own_limit_follows_ours_and_is_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow alone would refuse 42 pixels (> 2 x 10)
    frames = [Image.new("P", (W, H), k) for k in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])  # Pillow checks GIFs on load
    for path in (_png(tmp_path), tmp_path / "a.gif"):
        assert read_image(path).shape == (3, H, W)
        assert Image.MAX_IMAGE_PIXELS == 10  # restored
    with limits.override(max_pixels=41), pytest.raises(LimitError):
        read_image(_png(tmp_path))


def test_pillows_limit_untouched_in_the_common_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        seen.append(Image.MAX_IMAGE_PIXELS)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    default = Image.MAX_IMAGE_PIXELS
    read_image(_png(tmp_path))
    assert seen and set(seen) == {default}


def test_every_way_to_set_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    default = limits.current().max_pixels
    with limits.override(max_pixels=5):
        assert limits.current().max_pixels == 5
    assert limits.current().max_pixels == default
    previous = limits.set_limits(max_polygon_vertices=9)
    try:
        assert limits.current().max_polygon_vertices == 9
    finally:
        limits.set_limits(max_polygon_vertices=previous.max_polygon_vertices)
    monkeypatch.setenv("STRUCTPRED_MAX_PIXELS", "2e3")
    limits.reset()
    try:
        assert limits.current().max_pixels == 2000
    finally:
        monkeypatch.delenv("STRUCTPRED_MAX_PIXELS")
        limits.reset()
    assert limits.parse_assignment("max_pixels=200_000_000") == ("max_pixels", 200_000_000)
    with pytest.raises(ValueError, match="positive"):
        limits.set_limits(max_pixels=0)


def test_limit_error_names_the_way_to_raise_it(tmp_path: Path) -> None:
    with limits.override(max_pixels=10), pytest.raises(LimitError) as info:
        read_image(_png(tmp_path))
    message = str(info.value)
    assert "a.png" in message and "--limit max_pixels=N" in message and "STRUCTPRED_MAX_PIXELS" in message
    assert isinstance(info.value, ValueError) and "\n" not in message


def test_flow_ground_truth_files_over_the_limits(tmp_path: Path) -> None:
    """The homography XML's byte size, and a disparity PNG whose header declares 10^10 pixels
    (rejected from the header, before any pixel is decoded)."""
    xml = tmp_path / "H1to3p.xml"
    xml.write_bytes(
        b'<opencv_storage><H type_id="opencv-matrix"><rows>3</rows><cols>3</cols><dt>d</dt>'
        b"<data>1 0 0 0 1 0 0 0 1</data></H></opencv_storage>"
    )
    size = xml.stat().st_size
    with limits.override(max_text_file_bytes=size):
        read_homography_xml(xml)
    with limits.override(max_text_file_bytes=size - 1), pytest.raises(LimitError, match="H1to3p.xml"):
        read_homography_xml(xml)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 8-bit grey
    bomb = tmp_path / "aloeGT.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    with pytest.raises(LimitError, match=r"aloeGT\.png.*10,000,000,000"):
        read_disparity_png(bomb)
