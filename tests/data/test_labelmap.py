"""PNG label maps: the VOC palette, palette-PNG round trips, greyscale input, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data.formats import IGNORE_INDEX, read_label_map, voc_palette, write_label_map


def naive_voc_color(i: int) -> tuple[int, int, int]:
    """VOC's colour map as in its devkit (labelcolormap.m): 3 bits of i per round, MSB first."""
    r = g = b = 0
    c = i
    for j in range(8):
        r |= ((c >> 0) & 1) << (7 - j)
        g |= ((c >> 1) & 1) << (7 - j)
        b |= ((c >> 2) & 1) << (7 - j)
        c >>= 3
    return r, g, b


def test_palette_against_naive_formula():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == torch.uint8
    for i in range(256):
        assert tuple(palette[i].tolist()) == naive_voc_color(i)


def test_palette_known_colours():
    palette = voc_palette()
    assert palette[0].tolist() == [0, 0, 0]  # background
    assert palette[1].tolist() == [128, 0, 0]  # aeroplane
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]  # void / ignore
    assert voc_palette(21).shape == (21, 3)


@pytest.mark.parametrize("n", [0, 257])
def test_palette_size_checked(n):
    with pytest.raises(ValueError, match="num_colors"):
        voc_palette(n)


def random_labels(height: int = 23, width: int = 31, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 21, (height, width), generator=gen)
    labels[0, :] = IGNORE_INDEX
    labels[:, -1] = IGNORE_INDEX
    return labels


def test_round_trip_palette_png(tmp_path):
    labels = random_labels()
    path = tmp_path / "seg.png"
    write_label_map(path, labels)
    with Image.open(path) as im:
        assert im.mode == "P"
        stored_palette = np.array(im.getpalette()[: 256 * 3]).reshape(256, 3)
        assert np.array_equal(np.asarray(im), labels.numpy())  # pixels are the indices
    assert np.array_equal(stored_palette, voc_palette().numpy())
    back = read_label_map(path)
    assert back.dtype == torch.int64 and torch.equal(back, labels)


def test_round_trip_all_256_values(tmp_path):
    labels = torch.arange(256).reshape(16, 16)
    write_label_map(tmp_path / "all.png", labels)
    assert torch.equal(read_label_map(tmp_path / "all.png"), labels)


def test_custom_palette(tmp_path):
    labels = torch.tensor([[0, 1], [2, 1]])
    palette = [[10, 20, 30], [40, 50, 60], [70, 80, 90]]
    write_label_map(tmp_path / "c.png", labels, palette=palette)
    with Image.open(tmp_path / "c.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb[0, 1].tolist() == [40, 50, 60] and rgb[1, 0].tolist() == [70, 80, 90]
    assert torch.equal(read_label_map(tmp_path / "c.png"), labels)


def test_reads_greyscale_png(tmp_path):
    values = np.array([[0, 3, 255], [7, 7, 1]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "grey.png")
    assert read_label_map(tmp_path / "grey.png").tolist() == values.tolist()


def test_reads_16_bit_greyscale_png(tmp_path):
    values = np.array([[0, 300], [1000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert read_label_map(tmp_path / "grey16.png").tolist() == values.tolist()


def test_one_bit_png_reads_class_1_not_255(tmp_path: Path) -> None:
    values = np.array([[0, 1], [1, 0]], dtype=bool)
    Image.fromarray(values).save(tmp_path / "bits.png")  # mode '1': Pillow's convert("L") says 255
    assert read_label_map(tmp_path / "bits.png").tolist() == [[0, 1], [1, 0]]


def test_lossy_float_and_negative_label_images_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grey.jpg")
    with pytest.raises(ValueError, match="grey.jpg: label map is JPEG, a lossy format"):
        read_label_map(tmp_path / "grey.jpg")
    Image.fromarray(np.array([[0, 1.0]], np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="f.tif: label map holds floats"):
        read_label_map(tmp_path / "f.tif")
    Image.fromarray(np.array([[0, 2], [-7, 1]], np.int32)).save(tmp_path / "n.tif")
    with pytest.raises(ValueError, match=r"n.tif: label value -7 at pixel \(y=1, x=0\) is negative"):
        read_label_map(tmp_path / "n.tif")


def test_rgb_label_map_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png.*'RGB'"):
        read_label_map(tmp_path / "rgb.png")


def test_truncated_and_junk_and_missing(tmp_path):
    write_label_map(tmp_path / "ok.png", random_labels(64, 64))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png.*truncated"):
        read_label_map(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="junk.png"):
        read_label_map(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="missing.png.*not found"):
        read_label_map(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "labels, palette, match",
    [
        (torch.tensor([[0, 256]]), None, r"0\.\.255"),
        (torch.tensor([[-1, 0]]), None, r"0\.\.255"),
        (torch.zeros(2, 2), None, "integer"),
        (torch.zeros(2, 2, 1, dtype=torch.int64), None, r"\[H, W\]"),
        (torch.zeros(0, 3, dtype=torch.int64), None, "empty"),
        (torch.zeros(2, 2, dtype=torch.int64), [[0, 0]], "palette"),
        (torch.zeros(2, 2, dtype=torch.int64), [[0, 0, 300]], "palette"),
    ],
)
def test_write_rejects_bad_input(tmp_path, labels, palette, match):
    with pytest.raises(ValueError, match=match):
        write_label_map(tmp_path / "x.png", labels, palette=palette)
