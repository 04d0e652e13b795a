"""Anchors: known values, (level, y, x, anchor) ordering, counts, strides, bad input.

The reference below is a plain Python loop over levels, rows, columns and cell anchors,
with torchvision's conventions written out: aspect ratio = h / w, a size is the side of the
square of equal area, cell anchors rounded half-to-even, ratio-major, placed at
``(x * stride_w, y * stride_h)`` with ``stride = image // feature``.
"""

from __future__ import annotations

import math

import pytest
import torch

from structpred.ops import anchors_for_image, cell_anchors, grid_anchors, num_anchors_per_location


def naive_cell(sizes, ratios):
    out = []
    for r in ratios:  # ratio-major: every size of ratio 0, then ratio 1, ...
        for s in sizes:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            out.append([round(-w / 2), round(-h / 2), round(w / 2), round(h / 2)])
    return out


def naive_anchors(image_size, feature_sizes, sizes, ratios):
    out = []
    for (fh, fw), level_sizes, level_ratios in zip(feature_sizes, sizes, ratios, strict=True):
        sh, sw = image_size[0] // fh, image_size[1] // fw
        cell = naive_cell(level_sizes, level_ratios)
        for y in range(fh):
            for x in range(fw):
                for x1, y1, x2, y2 in cell:
                    out.append([x * sw + x1, y * sh + y1, x * sw + x2, y * sh + y2])
    return torch.tensor(out, dtype=torch.float64)


# ---------------------------------------------------------------------------- cell anchors


def test_cell_anchor_size_32_ratio_1():
    assert cell_anchors([32], [1.0]).tolist() == [[-16.0, -16.0, 16.0, 16.0]]


def test_cell_anchors_ratio_half_and_two_are_rounded():
    # ratio 0.5: w = 32 * sqrt(2) = 45.25 -> half 22.63 -> 23; h = 32 / sqrt(2) = 22.63 -> half 11.31 -> 11
    got = cell_anchors([32], [0.5, 1.0, 2.0])
    expected = [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]
    assert got.tolist() == expected


def test_cell_anchors_round_half_to_even():
    # torch.round (and so torchvision) rounds halves to even: 2.5 -> 2, 1.5 -> 2, 3.5 -> 4
    assert cell_anchors([5], [1.0]).tolist() == [[-2.0, -2.0, 2.0, 2.0]]
    assert cell_anchors([3], [1.0]).tolist() == [[-2.0, -2.0, 2.0, 2.0]]
    assert cell_anchors([7], [1.0]).tolist() == [[-4.0, -4.0, 4.0, 4.0]]


def test_cell_anchors_are_ratio_major_and_match_reference():
    sizes, ratios = [32, 45, 64, 101], [0.5, 1.0, 2.0, 3.0]
    got = cell_anchors(sizes, ratios, dtype=torch.float64)
    assert got.shape == (len(sizes) * len(ratios), 4)
    assert torch.equal(got, torch.tensor(naive_cell(sizes, ratios), dtype=torch.float64))
    # ratio = h / w: the first len(sizes) anchors (ratio 0.5) are wide, the last (ratio 3) tall.
    w = got[:, 2] - got[:, 0]
    h = got[:, 3] - got[:, 1]
    assert (w[: len(sizes)] > h[: len(sizes)]).all()
    assert (w[-len(sizes) :] < h[-len(sizes) :]).all()


def test_cell_anchors_dtype_and_centred():
    got = cell_anchors([16, 32], [0.5, 1.0, 2.0], dtype=torch.float64, device="cpu")
    assert got.dtype == torch.float64
    assert got.device.type == "cpu"
    assert cell_anchors([16], [1.0]).dtype == torch.float32
    assert torch.equal(got[:, 0], -got[:, 2])
    assert torch.equal(got[:, 1], -got[:, 3])


# ---------------------------------------------------------------------------- grid and image


def test_grid_anchors_order_is_y_x_anchor():
    cell = torch.tensor([[-1.0, -2.0, 1.0, 2.0], [-3.0, -3.0, 3.0, 3.0]])  # A = 2
    got = grid_anchors(cell, (2, 3), (5, 7))  # H = 2, W = 3, stride_h = 5, stride_w = 7
    expected = []
    for y in range(2):
        for x in range(3):
            for a in range(2):
                expected.append((cell[a] + torch.tensor([7.0 * x, 5.0 * y, 7.0 * x, 5.0 * y])).tolist())
    assert got.shape == (2 * 3 * 2, 4)
    assert got.tolist() == expected
    assert got.dtype == torch.float32


def test_grid_anchors_keeps_float64():
    cell = cell_anchors([32], [0.5, 1.0, 2.0], dtype=torch.float64)
    assert grid_anchors(cell, (3, 4), (8, 8)).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_anchors_for_image_matches_naive_loop(dtype):
    image_size = (100, 150)
    feature_sizes = [(13, 19), (7, 10), (4, 5)]
    sizes = ((16, 24), (48,), (96, 128, 160))
    ratios = ((0.5, 1.0, 2.0), (1.0,), (0.5, 2.0))
    got = anchors_for_image(image_size, feature_sizes, sizes, ratios, dtype=dtype)
    assert got.dtype == dtype
    expected = naive_anchors(image_size, feature_sizes, sizes, ratios).to(dtype)
    assert torch.equal(got, expected)


def test_anchor_count_is_sum_of_h_w_a():
    feature_sizes = [(13, 19), (7, 10), (4, 5)]
    sizes = ((16, 24), (48,), (96, 128, 160))
    ratios = ((0.5, 1.0, 2.0), (1.0,), (0.5, 2.0))
    per_loc = num_anchors_per_location(sizes, ratios)
    assert per_loc == [6, 1, 6]
    got = anchors_for_image((100, 150), feature_sizes, sizes, ratios)
    assert got.shape == (sum(h * w * a for (h, w), a in zip(feature_sizes, per_loc, strict=True)), 4)


def test_levels_come_in_order():
    # Level 0 (size 8) first, then level 1 (size 64): the widths tell the levels apart.
    got = anchors_for_image((64, 64), [(4, 4), (2, 2)], ((8,), (64,)), ((1.0,), (1.0,)))
    widths = (got[:, 2] - got[:, 0]).tolist()
    assert widths == [8.0] * 16 + [64.0] * 4


def test_stride_is_integer_division():
    # 100 // 7 = 14 rows apart, 150 // 9 = 16 columns apart (not 14.29 / 16.67).
    got = anchors_for_image((100, 150), [(7, 9)], ((2,),), ((1.0,),))
    assert got.shape == (7 * 9, 4)
    assert got[0].tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert got[1 * 9 + 1].tolist() == [15.0, 13.0, 17.0, 15.0]  # (y=1, x=1): centre (16, 14)
    assert got[-1].tolist() == [8 * 16 - 1.0, 6 * 14 - 1.0, 8 * 16 + 1.0, 6 * 14 + 1.0]
    centres_x = ((got[:, 0] + got[:, 2]) / 2).reshape(7, 9)
    centres_y = ((got[:, 1] + got[:, 3]) / 2).reshape(7, 9)
    assert torch.equal(centres_x[0], torch.arange(9) * 16.0)
    assert torch.equal(centres_y[:, 0], torch.arange(7) * 14.0)


def test_num_anchors_per_location():
    assert num_anchors_per_location(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2) == [3, 3]
    assert num_anchors_per_location(((32, 40, 50),), ((0.5, 1.0),)) == [6]


# ---------------------------------------------------------------------------- bad input


def test_mismatched_level_counts():
    with pytest.raises(ValueError, match="one entry per feature level"):
        anchors_for_image((64, 64), [(8, 8), (4, 4)], ((32,),), ((1.0,), (1.0,)))
    with pytest.raises(ValueError, match="one entry per feature level"):
        anchors_for_image((64, 64), [(8, 8)], ((32,),), ((1.0,), (1.0,)))
    with pytest.raises(ValueError):
        num_anchors_per_location(((32,), (64,)), ((1.0,),))


@pytest.mark.parametrize(
    ("sizes", "ratios"),
    [([0], [1.0]), ([-32], [1.0]), ([32, 0], [1.0]), ([32], [0.0]), ([32], [-1.0]), ([32], [1.0, 0.0])],
)
def test_non_positive_sizes_or_ratios(sizes, ratios):
    with pytest.raises(ValueError, match="positive"):
        cell_anchors(sizes, ratios)
    with pytest.raises(ValueError, match="positive"):
        anchors_for_image((64, 64), [(4, 4)], (sizes,), (ratios,))


@pytest.mark.parametrize(("sizes", "ratios"), [([], [1.0]), ([32], []), ([], [])])
def test_empty_sizes_or_ratios(sizes, ratios):
    with pytest.raises(ValueError, match="non-empty"):
        cell_anchors(sizes, ratios)
    with pytest.raises(ValueError, match="non-empty"):
        anchors_for_image((64, 64), [(4, 4)], (sizes,), (ratios,))


@pytest.mark.parametrize("feature_size", [(0, 4), (4, 0), (0, 0), (-1, 4)])
def test_zero_feature_size(feature_size):
    with pytest.raises(ValueError, match="feature sizes must be positive"):
        anchors_for_image((64, 64), [(8, 8), feature_size], ((32,), (64,)), ((1.0,), (1.0,)))
