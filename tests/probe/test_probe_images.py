"""Probe (issue 15): hostile image files, label images and COCO json, one distinct input a case.

Every case asserts the exact outcome: a one-line ``ValueError``-family message naming the file
and the field (``LimitError`` for a declared size or count over a limit), or the correct
result. Files are tiny: a bomb is a header that *declares* billions of pixels.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data import limits
from structpred.data.datasets import DetectionFiles
from structpred.data.formats.coco import read_coco, segmentation_to_mask
from structpred.data.formats.labelmap import read_label_map
from structpred.data.images import image_size, read_image
from structpred.data.layouts.labelmaps import palette_colors, read_mask
from structpred.data.limits import LimitError
from tests.probe import image_files as b

Make = Callable[[Path], Callable[[], Any]]  # tmp folder -> the call under test


def _one_line_error(call: Callable[[], Any], kind: type[Exception], *needles: str) -> str:
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ----------------------------------------------------------------------------- images

_BOMBS: list[tuple[str, str, bytes]] = [  # (case, file name, bytes): header over max_pixels
    ("png-grey-50k", "a.png", b.png(50000, 50000)),
    ("png-rgb16-50k", "a.png", b.png(50000, 50000, depth=16, color=2)),
    ("png-palette-30k", "a.png", b.png(30000, 30000, color=3, extra=b.chunk(b"PLTE", b"\0" * 3))),
    ("png-strip-1x2e8", "a.png", b.png(200_000_000, 1)),
    ("png-max-int31", "a.png", b.png(2**31 - 1, 2**31 - 1)),
    ("jpeg-baseline-50k", "a.jpg", b.jpeg(50000, 50000)),
    ("jpeg-progressive-50k", "a.jpg", b.jpeg(50000, 50000, progressive=True)),
    ("jpeg-named-png", "a.png", b.jpeg(65535, 65535)),
    ("bmp-100k", "a.bmp", b.bmp(100000, 100000)),
    ("bmp-top-down-100k", "a.bmp", b.bmp(100000, -100000)),
    ("gif-screen-65k", "a.gif", b.gif_screen(65535, 65535)),
    ("gif-frame-over-screen", "a.gif", b.gif_frame(12000, 12000)),
    ("tiff-100k", "a.tif", b.tiff(100000, 100000)),
    ("pgm-100k", "a.pgm", b"P5\n100000 100000\n255\n" + b"0" * 16),
    ("ppm-100k", "a.ppm", b"P6\n100000 100000\n255\n" + b"0" * 16),
]


@pytest.mark.parametrize(("name", "data"), [pytest.param(n, d, id=c) for c, n, d in _BOMBS])
@pytest.mark.parametrize("reader", [read_image, image_size], ids=["read_image", "image_size"])
def test_bomb_refused_from_its_header(tmp_path: Path, name: str, data: bytes, reader: Callable) -> None:
    path = b.write(tmp_path, name, data)
    _one_line_error(lambda: reader(path), LimitError, str(path), "max_pixels", "(H x W)")


_BROKEN: list[tuple[str, str, bytes, str]] = [  # (case, name, bytes, words of the message)
    ("empty", "a.png", b"", "not a readable image"),
    ("random-bytes", "a.png", bytes(range(256)) * 4, "not a readable image"),
    ("png-signature-only", "a.png", b"\x89PNG\r\n\x1a\n", "image"),
    ("png-zero-width", "a.png", b.png(0, 10), "image"),
    ("png-bad-depth", "a.png", b.png(4, 4, depth=3), "image"),
    ("png-bad-colour-type", "a.png", b.png(4, 4, color=5), "image"),
    ("png-idat-garbage", "a.png", b.png(4, 4, idat=b"not zlib at all"), "corrupt or truncated"),
    ("png-idat-short", "a.png", b.png(64, 64, idat=zlib.compress(b"\0" * 10)), "corrupt"),
    (
        "jpeg-truncated-scan",
        "a.jpg",
        b.saved(Image.effect_noise((64, 64), 90), "JPEG")[:-900],
        "corrupt or truncated",
    ),
    ("tiff-tile-2e20", "a.tif", b.tiff(10, 10, tile=1 << 20), "image"),
    (
        "eps-never-run",
        "a.eps",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n",
        "not a readable",
    ),
    ("ico-not-a-format", "a.ico", b.saved(Image.new("RGB", (16, 16)), "ICO"), "not a readable"),
    ("tga-not-a-format", "a.tga", b.saved(Image.new("RGB", (4, 4)), "TGA"), "not a readable"),
    (
        "float-tiff-over-1",
        "a.tif",
        b.saved(Image.fromarray(np.full((2, 2), 3.5, np.float32)), "TIFF"),
        "[0, 1]",
    ),
    (
        "int32-tiff-negative",
        "a.tif",
        b.saved(Image.fromarray(np.full((2, 2), -4, np.int32)), "TIFF"),
        "0..65535",
    ),
]


@pytest.mark.parametrize(("name", "data", "words"), [pytest.param(n, d, w, id=c) for c, n, d, w in _BROKEN])
def test_broken_image_is_one_line_naming_the_file(tmp_path: Path, name: str, data: bytes, words: str) -> None:
    path = b.write(tmp_path, name, data)
    _one_line_error(lambda: read_image(path), ValueError, str(path), words)


def test_missing_and_folder_paths(tmp_path: Path) -> None:
    for path in (tmp_path / "none.png", tmp_path):
        _one_line_error(functools.partial(read_image, path), ValueError, str(path), "not found")


def _frames(tmp_path: Path, fmt: str, name: str) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    first, *rest = (rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(40))
    images = [Image.fromarray(a) for a in (first, *rest)]
    if fmt == "GIF":
        images = [im.convert("P", palette=Image.Palette.ADAPTIVE) for im in images]
        first = np.asarray(images[0].convert("RGB"))
    path = tmp_path / name
    images[0].save(
        path, fmt, save_all=True, append_images=images[1:], **({"lossless": True} if fmt == "WEBP" else {})
    )
    return path, first


@pytest.mark.parametrize(
    ("fmt", "name"), [("PNG", "a.png"), ("GIF", "a.gif"), ("TIFF", "a.tif"), ("WEBP", "a.webp")]
)
def test_multi_frame_file_gives_its_first_frame_only(tmp_path: Path, fmt: str, name: str) -> None:
    path, first = _frames(tmp_path, fmt, name)  # 40 frames: APNG, GIF, multi-page TIFF, animated WebP
    image = read_image(path)
    assert image.shape == (3, 6, 5)
    assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(first).permute(2, 0, 1))


def test_png_text_chunk_zlib_bomb_is_not_inflated(tmp_path: Path) -> None:
    bomb = b.chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 5_000_000, 9))  # 5 MB of text in 5 KB
    path = b.write(tmp_path, "a.png", b.png(2, 2, extra=bomb))
    _one_line_error(lambda: read_image(path), ValueError, str(path), "too large")  # Pillow stops at 1 MB


# ----------------------------------------------------------------------------- label images


def _labels_ok(tmp_path: Path, name: str, array: np.ndarray, expected: list[list[int]], **kw: Any) -> None:
    path = b.array_file(tmp_path, name, array, **kw)
    assert read_label_map(path).tolist() == expected
    assert read_mask(path).tolist() == expected


_ZERO_ONE = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)


@pytest.mark.parametrize("name", ["a.png", "a.bmp", "a.tif"])
def test_one_bit_label_image_reads_0_and_1(tmp_path: Path, name: str) -> None:
    _labels_ok(tmp_path, name, _ZERO_ONE, _ZERO_ONE.astype(int).tolist())  # Pillow's own 'L' would say 255


@pytest.mark.parametrize(
    ("name", "dtype", "values"),
    [
        ("a.tif", np.uint16, [[0, 300], [65535, 2]]),
        ("a.png", np.uint16, [[0, 1000], [7, 2]]),
        ("a.pgm", np.uint8, [[0, 254], [255, 2]]),
        ("a.tif", np.int32, [[0, 65535], [7, 2]]),
    ],
    ids=["uint16-tiff", "uint16-png", "pgm", "int32-tiff-in-range"],
)
def test_lossless_integer_label_images_read_as_stored(
    tmp_path: Path, name: str, dtype: type, values: list
) -> None:
    _labels_ok(tmp_path, name, np.array(values, dtype=dtype), values)


def test_palette_gif_label_image_reads_its_indices_as_stored(tmp_path: Path) -> None:
    im = Image.frombytes("P", (3, 1), bytes([0, 5, 9]))
    im.putpalette(list(range(256)) * 3)
    im.save(tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as stored:  # Pillow's GIF writer may renumber the palette
        assert read_label_map(tmp_path / "a.gif").tolist() == np.asarray(stored).tolist()


_BAD_LABELS: list[tuple[str, str, Callable[[], np.ndarray], dict, tuple[str, ...]]] = [
    ("grey-jpeg", "a.jpg", lambda: np.zeros((4, 4), np.uint8), {}, ("JPEG", "lossy")),
    ("jpeg-named-png", "a.png", lambda: np.zeros((4, 4), np.uint8), {"format": "JPEG"}, ("JPEG", "lossy")),
    (
        "jpeg-compressed-tiff",
        "a.tif",
        lambda: np.zeros((8, 8), np.uint8),
        {"compression": "jpeg"},
        ("TIFF", "lossy"),
    ),
    ("lossy-webp", "a.webp", lambda: np.zeros((4, 4, 3), np.uint8), {"quality": 50}, ("WebP", "lossy")),
    ("float-tiff", "a.tif", lambda: np.array([[0, 1.5]], np.float32), {}, ("floats", "'F'")),
    ("float-tiff-integral", "a.tif", lambda: np.array([[0, 2.0]], np.float32), {}, ("floats",)),
    (
        "negative-int32-tiff",
        "a.tif",
        lambda: np.array([[0, 1], [2, -3]], np.int32),
        {},
        ("-3", "(y=1, x=1)", "negative"),
    ),
    ("negative-int16-tiff", "a.tif", lambda: np.array([[0, -1]], np.int16), {}, ("-1", "(y=0, x=1)")),
    (
        "over-65535-tiff",
        "a.tif",
        lambda: np.array([[70000, 1]], np.int32),
        {},
        ("70000", "(y=0, x=0)", "65535"),
    ),
    ("rgb-png", "a.png", lambda: np.zeros((2, 2, 3), np.uint8), {}, ("'RGB'",)),
    ("rgba-png", "a.png", lambda: np.zeros((2, 2, 4), np.uint8), {}, ("'RGBA'",)),
    ("grey-alpha-png", "a.png", lambda: np.zeros((2, 2, 2), np.uint8), {}, ("'LA'",)),
    ("cmyk-tiff", "a.tif", lambda: np.zeros((2, 2, 4), np.uint8), {"mode": "CMYK"}, ("'CMYK'",)),
]


@pytest.mark.parametrize(
    ("name", "make", "kw", "words"), [pytest.param(n, m, k, w, id=c) for c, n, m, k, w in _BAD_LABELS]
)
def test_bad_label_image_refused_naming_file_and_value(
    tmp_path: Path, name: str, make: Callable[[], np.ndarray], kw: dict, words: tuple[str, ...]
) -> None:
    path = tmp_path / name
    kw = dict(kw)
    image = Image.fromarray(make(), mode=kw.pop("mode")) if "mode" in kw else Image.fromarray(make())
    image.save(path, **kw)
    _one_line_error(lambda: read_label_map(path), ValueError, str(path), *words)


@pytest.mark.parametrize(
    ("name", "kw", "words"),
    [("a.jpg", {"quality": 95}, ("JPEG", "lossy")), ("a.webp", {"quality": 90}, ("WebP", "lossy"))],
    ids=["rgb-jpeg", "rgb-lossy-webp"],
)
def test_colour_mask_refused_when_lossy(tmp_path: Path, name: str, kw: dict, words: tuple[str, ...]) -> None:
    path = b.array_file(tmp_path, name, np.zeros((4, 4, 3), np.uint8), **kw)
    _one_line_error(lambda: read_mask(path, palette_colors(2)), ValueError, str(path), "mask", *words)


def test_lossless_webp_colour_mask_is_read(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (128, 0, 0)  # VOC colour of class 1
    path = b.array_file(tmp_path, "a.webp", rgb, lossless=True)
    assert read_mask(path, palette_colors(2)).tolist() == [[0, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("colors", [None, palette_colors(3)], ids=["label-map", "colour-table"])
@pytest.mark.parametrize(
    ("name", "data"),
    [("a.png", b.png(40000, 40000, color=3)), ("a.bmp", b.bmp(20000, 20000))],
    ids=["png", "bmp"],
)
def test_label_bomb_refused(tmp_path: Path, name: str, data: bytes, colors: Any) -> None:
    path = b.write(tmp_path, name, data)
    _one_line_error(lambda: read_mask(path, colors), LimitError, str(path), "mask size", "max_pixels")
    _one_line_error(lambda: read_label_map(path), LimitError, str(path), "label map size")


def test_truncated_and_empty_label_files(tmp_path: Path) -> None:
    good = b.saved(Image.frombytes("P", (8, 8), bytes(64)), "PNG")
    for name, data in (("t.png", good[: len(good) // 2]), ("e.png", b"")):
        path = b.write(tmp_path, name, data)
        _one_line_error(functools.partial(read_label_map, path), ValueError, str(path), "label map")


# ----------------------------------------------------------------------------- COCO json

W, H = 40, 30  # the probe image


def _coco(**changes: Any) -> dict[str, Any]:
    """A valid one-image, one-annotation COCO dict; ``changes`` replace annotation fields
    (``img_*`` keys replace image fields)."""
    image = {"id": 1, "file_name": "a.png", "height": H, "width": W}
    ann = {
        "id": 7,
        "image_id": 1,
        "category_id": 3,
        "bbox": [2, 3, 10, 8],
        "area": 80.0,
        "iscrowd": 0,
        "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]],
    }
    for key, value in changes.items():
        if key.startswith("img_"):
            image[key.removeprefix("img_")] = value
        else:
            ann[key] = value
    return {"images": [image], "annotations": [ann], "categories": [{"id": 3, "name": "thing"}]}


def _write_json(tmp: Path, data: Any) -> Path:
    path = tmp / "instances.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")  # NaN -> NaN token
    return path


BIG = 10**400  # a json integer no float holds
_BAD_COCO: list[tuple[str, Any, tuple[str, ...]]] = [  # (case, annotation changes or raw text, words)
    ("poly-1e300", {"segmentation": [[2, 3, 1e300, 3, 12, 11]]}, ("annotation id 7", "polygon 0 vertex 1")),
    ("poly-2e8-cocoapi-380", {"segmentation": [[2, 3, 2.08e8, 3.5e8, 12, 11]]}, ("polygon 0 vertex 1",)),
    ("poly-nan", {"segmentation": [[2, 3, math.nan, 3, 12, 11]]}, ("polygon 0 coordinate", "finite")),
    ("poly-inf", {"segmentation": [[2, 3, math.inf, 3, 12, 11]]}, ("polygon 0 coordinate", "finite")),
    ("poly-minus-inf", {"segmentation": [[2, 3, 12, -math.inf, 12, 11]]}, ("polygon 0 coordinate",)),
    ("poly-400-digits", {"segmentation": [[2, 3, BIG, 3, 12, 11]]}, ("polygon 0 coordinate", "401 digits")),
    ("poly-just-past-2w", {"segmentation": [[2, 3, 2 * W + 0.01, 3, 12, 11]]}, ("vertex 1", "outside")),
    ("poly-just-past-minus-h", {"segmentation": [[2, 3, 12, -H - 0.01, 12, 11]]}, ("vertex 1", "outside")),
    (
        "poly-second-ring-bad",
        {"segmentation": [[2, 3, 12, 3, 12, 11], [1, 1, 2, 2, 1e9, 3]]},
        ("polygon 1 vertex 2",),
    ),
    ("poly-odd-count", {"segmentation": [[2, 3, 12, 3, 12, 11, 5]]}, ("polygon 0", "even number")),
    ("poly-two-vertices", {"segmentation": [[2, 3, 12, 3]]}, ("polygon 0", ">= 6")),
    ("poly-string-coordinate", {"segmentation": [[2, 3, "x", 3, 12, 11]]}, ("polygon 0 coordinate",)),
    ("poly-bool-coordinate", {"segmentation": [[2, 3, True, 3, 12, 11]]}, ("polygon 0 coordinate",)),
    ("poly-nested-list", {"segmentation": [[2, 3, [4], 3, 12, 11]]}, ("polygon 0 coordinate",)),
    ("poly-ring-is-dict", {"segmentation": [{"x": 1}]}, ("polygon 0", "list")),
    ("poly-ring-is-number", {"segmentation": [5]}, ("polygon 0", "list")),
    ("poly-zigzag-outline", {"segmentation": [[0, 0, W, H] * 20000]}, ("outline", "(H + W)")),
    ("seg-string", {"segmentation": "polygon"}, ("segmentation must be",)),
    ("seg-number", {"segmentation": 3}, ("segmentation must be",)),
    ("rle-sum-overflow", {"segmentation": {"size": [H, W], "counts": [2**40, 2**40]}}, ("sum to H * W",)),
    ("rle-sum-short", {"segmentation": {"size": [H, W], "counts": [10, 10]}}, ("sum to H * W",)),
    (
        "rle-negative-run",
        {"segmentation": {"size": [H, W], "counts": [W * H + 5, -5]}},
        ("run 1", "non-negative"),
    ),
    ("rle-size-mismatch", {"segmentation": {"size": [H, W + 1], "counts": [H * (W + 1)]}}, ("RLE size",)),
    ("rle-size-huge", {"segmentation": {"size": [BIG, 1], "counts": [1]}}, ("RLE size",)),
    ("rle-size-one-value", {"segmentation": {"size": [H], "counts": [H]}}, ("RLE size",)),
    (
        "rle-too-many-runs",
        {"segmentation": {"size": [H, W], "counts": [0] * (H * W + 2)}},
        ("runs", "H * W + 1"),
    ),
    ("rle-float-run", {"segmentation": {"size": [H, W], "counts": [600.5, 599.5]}}, ("RLE count", "integer")),
    ("rle-counts-number", {"segmentation": {"size": [H, W], "counts": 1200}}, ("RLE counts must be",)),
    ("rle-counts-missing", {"segmentation": {"size": [H, W]}}, ("RLE counts must be",)),
    ("rle-string-bad-char", {"segmentation": {"size": [H, W], "counts": "0\x7f"}}, ("invalid character",)),
    ("rle-string-unfinished", {"segmentation": {"size": [H, W], "counts": "P"}}, ("end inside a number",)),
    ("rle-string-64-bit-run", {"segmentation": {"size": [H, W], "counts": "o" * 9 + "1"}}, ("32-bit",)),
    (
        "rle-string-too-long",
        {"segmentation": {"size": [H, W], "counts": "0" * (7 * (H * W + 1) + 1)}},
        ("too many",),
    ),
    ("bbox-nan", {"bbox": [2, math.nan, 10, 8]}, ("bbox value", "finite")),
    ("bbox-inf-width", {"bbox": [2, 3, math.inf, 8]}, ("bbox value",)),
    ("bbox-400-digits", {"bbox": [2, 3, BIG, 8]}, ("bbox value", "401 digits")),
    ("bbox-sum-overflows", {"bbox": [1.5e308, 3, 1.5e308, 8]}, ("box", "non-finite")),
    ("bbox-three-values", {"bbox": [2, 3, 10]}, ("bbox must be",)),
    ("bbox-multiline-string", {"bbox": "a\nb"}, ("bbox must be", "'a\\nb'")),
    ("annotation-id-multiline-string", {"id": "7\n8"}, ("annotation id '7\\n8'",)),
    ("rle-size-multiline-string", {"segmentation": {"size": "3\n0", "counts": [1]}}, ("RLE size '3\\n0'",)),
    ("bbox-negative-width", {"bbox": [2, 3, -10, 8]}, ("non-positive",)),
    ("bbox-far-outside", {"bbox": [1e6, 3, 10, 8]}, ("outside",)),
    ("area-nan", {"area": math.nan}, ("area",)),
    ("area-1e300", {"area": 1e300}, ("area must be", "9 * H * W")),
    ("area-negative", {"area": -1}, ("area must be >= 0",)),
    ("iscrowd-2", {"iscrowd": 2}, ("iscrowd",)),
    ("annotation-id-2-70", {"id": 2**70}, ("annotation id", "64-bit")),
    ("annotation-id-float", {"id": 1.5}, ("annotation id", "integer")),
    ("image-ref-2-64", {"image_id": 2**64}, ("image_id", "64-bit")),
    ("image-ref-unknown", {"image_id": 99}, ("unknown image id 99",)),
    ("category-ref-huge", {"category_id": -(2**63) - 1}, ("category_id", "64-bit")),
    ("category-ref-unknown", {"category_id": 4}, ("unknown category id 4",)),
    ("image-id-2-63", {"img_id": 2**63}, ("images[0]", "image id", "64-bit")),
    ("image-size-1e9-squared", {"img_height": 10**9, "img_width": 10**9}, ("images[0]", "max_pixels")),
    ("image-height-zero", {"img_height": 0}, ("images[0]", "positive")),
    ("image-width-float", {"img_width": 40.5}, ("images[0]", "width", "integer")),
    ("image-width-400-digits", {"img_width": BIG}, ("images[0]", "width")),
    ("image-file-name-missing", {"img_file_name": None}, ("images[0]", "file_name")),
]


@pytest.mark.parametrize(("changes", "words"), [pytest.param(c, w, id=i) for i, c, w in _BAD_COCO])
def test_hostile_coco_annotation(tmp_path: Path, changes: dict[str, Any], words: tuple[str, ...]) -> None:
    path = _write_json(tmp_path, _coco(**changes))
    kind = LimitError if "max_pixels" in words else ValueError
    _one_line_error(lambda: read_coco(path), kind, str(path), *words)


_BAD_JSON: list[tuple[str, str, tuple[str, ...]]] = [
    ("nested-100k", "[" * 100_000 + "]" * 100_000, ("nested too deeply",)),
    ("int-5000-digits", '{"images": [' + "1" * 5000 + "]}", ("json number",)),
    ("truncated", json.dumps(_coco())[:-20], ("malformed json",)),
    ("top-level-nan", "NaN", ("top level",)),
    ("top-level-list", "[]", ("top level",)),
    ("not-utf8", '{"images": "\xff\xfe"}', ("cannot read json",)),
    ("categories-missing", json.dumps({"images": [], "annotations": []}), ("categories",)),
    (
        "category-id-huge",
        json.dumps({**_coco(), "categories": [{"id": 2**64, "name": "x"}]}),
        ("categories[0]", "64-bit"),
    ),
    ("images-not-list", json.dumps({**_coco(), "images": {"id": 1}}), ("must be lists",)),
]


@pytest.mark.parametrize(("text", "words"), [pytest.param(t, w, id=i) for i, t, w in _BAD_JSON])
def test_hostile_coco_json(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    path = tmp_path / "instances.json"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    _one_line_error(lambda: read_coco(path), ValueError, str(path), *words)


@pytest.mark.parametrize(
    ("name", "limit", "changes"),
    [
        ("max_polygon_vertices", 3, {"segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]}),
        ("max_polygons_per_annotation", 1, {"segmentation": [[2, 3, 12, 3, 12, 11], [2, 3, 12, 3, 12, 11]]}),
    ],
    ids=["vertices", "polygons"],
)
def test_coco_counts_over_limit(tmp_path: Path, name: str, limit: int, changes: dict) -> None:
    path = _write_json(tmp_path, _coco(**changes))
    with limits.override(**{name: limit}):
        _one_line_error(lambda: read_coco(path), LimitError, str(path), "annotation id 7", name)
        # a limit is never skipped quietly, even with on_error="skip"
        _one_line_error(lambda: read_coco(path, on_error="skip"), LimitError, str(path), name)


def test_coco_annotations_per_image_over_limit(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"] += [{**data["annotations"][0], "id": k} for k in (8, 9)]
    path = _write_json(tmp_path, data)
    with limits.override(max_annotations_per_image=2):
        _one_line_error(lambda: read_coco(path), LimitError, str(path), "annotation id 9", "image id 1")


def test_vertices_slightly_outside_are_kept_and_rasterised(tmp_path: Path) -> None:
    ring = [-3, -2, W + 3, -2, W + 3, 5, -3, 5]  # a tool let the vertices slip past the border
    path = _write_json(tmp_path, _coco(segmentation=[ring], bbox=[0, 0, W, 5]))
    record = read_coco(path)[0][0]
    assert record.segmentations is not None
    mask = segmentation_to_mask(record.segmentations[0], H, W)
    assert mask[:5].all() and not mask[6:].any()  # clipped to the image by pycocotools


def test_vertices_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    ring = [-W, -H, 2 * W, -H, 2 * W, 2 * H, -W, 2 * H]  # the image grown by its size: all of it
    path = _write_json(tmp_path, _coco(segmentation=[ring]))
    record = read_coco(path)[0][0]
    assert record.segmentations is not None
    assert segmentation_to_mask(record.segmentations[0], H, W).all()


def test_mask_of_an_image_over_max_pixels_is_refused_before_allocation() -> None:
    ring = [[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]]
    _one_line_error(lambda: segmentation_to_mask(ring, 100_000, 100_000), LimitError, "max_pixels")


def test_dataset_with_masks_refuses_a_mask_stack_over_its_budget(tmp_path: Path) -> None:
    data = _coco(img_height=10_000, img_width=10_000)
    data["annotations"] = [{**data["annotations"][0], "id": k} for k in range(11)]  # 11 x 1e8 bytes
    records, categories = read_coco(_write_json(tmp_path, data))
    _one_line_error(
        lambda: DetectionFiles(records, categories, tmp_path, with_masks=True),
        ValueError,
        "a.png",
        "MAX_MASK_BYTES",
    )


# ----------------------------------------------------------------------------- the CLI


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from structpred.cli import main

    code: object
    with limits.override():  # --limit changes the process's limits: put them back after
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse refuses a bad flag: usage line + "prog: error: ..."
            code = exit_.code
    err = capsys.readouterr().err
    assert code not in (0, None) and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("name", "data"),
    [("bomb.png", b.png(50000, 50000)), ("bomb.jpg", b.jpeg(50000, 50000))],
    ids=["png", "jpeg"],
)
def test_predict_refuses_a_bomb_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, data: bytes
) -> None:
    path = b.write(tmp_path, name, data)
    line = _cli(["predict", "--checkpoint", str(tmp_path), str(path), "--out", str(tmp_path / "o")], capsys)
    assert str(path) in line and "max_pixels=100,000,000" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flag", "words"),
    [
        ("max_pixels=255", ("255", "max_pixels")),
        ("max_pixels=abc", ("--limit max_pixels", "positive integer")),
        ("max_pixels=0", ("positive integer",)),
        ("max_pixel=5", ("NAME=VALUE",)),
        ("max_pixels", ("NAME=VALUE",)),
    ],
    ids=["under-the-image", "not-a-number", "zero", "unknown-name", "no-value"],
)
def test_predict_limit_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, words: tuple
) -> None:
    path = b.array_file(tmp_path, "a.png", np.zeros((16, 16), np.uint8))  # 256 pixels
    argv = [
        "predict",
        "--checkpoint",
        str(tmp_path),
        str(path),
        "--out",
        str(tmp_path / "o"),
        "--limit",
        flag,
    ]
    line = _cli(argv, capsys)
    assert all(w in line for w in words), line


def test_predict_limit_flag_at_the_image_passes_the_header_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = b.array_file(tmp_path, "a.png", np.zeros((16, 16), np.uint8))
    argv = ["predict", "--checkpoint", str(tmp_path), str(path), "--out", str(tmp_path / "o")]
    assert "no checkpoint" in _cli([*argv, "--limit", "max_pixels=256"], capsys)  # got past the image


def _coco_folder(tmp_path: Path, **changes: Any) -> Path:
    """``tmp/ds/train.json`` + ``tmp/ds/a.png`` (a 40 x 30 image)."""
    folder = tmp_path / "ds"
    folder.mkdir()
    Image.new("RGB", (W, H)).save(folder / "a.png")
    (folder / "train.json").write_text(json.dumps(_coco(**changes)))
    return folder


def _train(tmp_path: Path, model: str, data: str, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        model,
        "--data",
        data,
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        *extra,
    ]


def test_train_refuses_a_hostile_polygon_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _coco_folder(tmp_path, segmentation=[[2, 3, 2.08e8, 3.5e8, 12, 11]])
    line = _cli(_train(tmp_path, "maskrcnn_narrow_fpn", f"coco:{folder / 'train.json'}"), capsys)
    assert "train.json: annotation id 7" in line and "polygon 0 vertex 1" in line
    assert not (tmp_path / "run").exists()


def test_train_limit_flag_reaches_the_coco_reader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _coco_folder(tmp_path)  # its polygon has 4 vertices
    argv = _train(
        tmp_path, "maskrcnn_narrow_fpn", f"coco:{folder / 'train.json'}", "--limit", "max_polygon_vertices=3"
    )
    line = _cli(argv, capsys)
    assert (
        "annotation id 7" in line and "number of vertices is 4" in line and "max_polygon_vertices=3" in line
    )


def test_train_refuses_a_bomb_image_behind_a_coco_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _coco_folder(tmp_path)
    b.write(folder, "a.png", b.png(50000, 50000))  # the json says 40 x 30; the file declares 2.5e9 pixels
    line = _cli(_train(tmp_path, "maskrcnn_narrow_fpn", f"coco:{folder / 'train.json'}"), capsys)
    assert "a.png" in line and "max_pixels" in line


@pytest.mark.parametrize(
    ("mask", "words"),
    [
        (b.saved(Image.new("L", (W, H)), "JPEG"), ("JPEG", "lossy")),
        (b.png(40000, 40000, color=3), ("max_pixels",)),
    ],
    ids=["jpeg-named-png", "bomb"],
)
def test_train_refuses_a_bad_mask_of_a_mask_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mask: bytes, words: tuple[str, ...]
) -> None:
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "masks").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "ds" / "images" / "a.png")
    b.write(tmp_path / "ds" / "masks", "a.png", mask)
    line = _cli(_train(tmp_path, "deeplab_narrow", f"masks:{tmp_path / 'ds'}"), capsys)
    assert "masks/a.png" in line and all(w in line for w in words), line
