"""Parity with torchvision's detection utilities: AnchorGenerator, BoxCoder, Matcher, sampler."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou as tv_box_iou

from structpred.ops import (
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
    anchors_for_image,
    num_anchors_per_location,
)

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5
FPN_STRIDES = (4, 8, 16, 32, 64)
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]


def tv_anchors(image_sizes, padded, feature_sizes, sizes, ratios, dtype):
    """torchvision's anchors for a batch whose padded tensor is ``padded`` (H, W)."""
    images = ImageList(torch.zeros(len(image_sizes), 1, *padded, dtype=dtype), list(image_sizes))
    features = [torch.zeros(len(image_sizes), 1, h, w, dtype=dtype) for h, w in feature_sizes]
    return AnchorGenerator(sizes, ratios)(images, features)


# ---------------------------------------------------------------------------- anchors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "padded",
    [
        (800, 1088),  # 800 x 1066 padded to a multiple of 32: level P6 is 12.5 -> 13 rows
        (801, 1067),  # nothing divides: 801 / 4 -> 201 rows, stride 801 // 201 = 3
        (333, 500),
    ],
)
def test_fpn_anchors_match_anchor_generator(padded, dtype):
    feature_sizes = [(math.ceil(padded[0] / s), math.ceil(padded[1] / s)) for s in FPN_STRIDES]
    expected = tv_anchors([(800, 1066), padded], padded, feature_sizes, FPN_SIZES, FPN_RATIOS, dtype)
    got = anchors_for_image(padded, feature_sizes, FPN_SIZES, FPN_RATIOS, dtype=dtype)
    assert got.dtype == dtype
    for per_image in expected:  # torchvision repeats the same anchors for every image
        assert per_image.dtype == dtype
        assert torch.equal(got, per_image)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("padded", "feature"), [((800, 1088), (50, 68)), ((600, 1000), (38, 63))])
def test_single_level_three_sizes_three_ratios(padded, feature, dtype):
    sizes, ratios = ((128, 256, 512),), ((0.5, 1.0, 2.0),)
    (expected,) = tv_anchors([padded], padded, [feature], sizes, ratios, dtype)
    got = anchors_for_image(padded, [feature], sizes, ratios, dtype=dtype)
    assert got.shape == (feature[0] * feature[1] * 9, 4)
    assert torch.equal(got, expected)


def test_odd_sizes_and_ratios_match_anchor_generator():
    sizes = ((17, 23.5, 45), (90, 181))
    ratios = ((1 / 3, 0.7, 1.0, 1.6), (0.25, 4.0))
    padded, feature_sizes = (257, 301), [(33, 38), (17, 19)]
    for dtype in (torch.float32, torch.float64):
        (expected,) = tv_anchors([padded], padded, feature_sizes, sizes, ratios, dtype)
        assert torch.equal(anchors_for_image(padded, feature_sizes, sizes, ratios, dtype=dtype), expected)


def test_num_anchors_per_location_matches():
    for sizes, ratios in [(FPN_SIZES, FPN_RATIOS), (((128, 256, 512),), ((0.5, 1.0, 2.0),))]:
        assert (
            num_anchors_per_location(sizes, ratios)
            == AnchorGenerator(sizes, ratios).num_anchors_per_location()
        )


# ---------------------------------------------------------------------------- box coder


def random_boxes(n, generator, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 1000 - 100
    wh = 0.5 + torch.rand(n, 2, generator=generator, dtype=dtype) * 300
    return torch.cat([xy, xy + wh], dim=1)


def assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_box_coder_encode_matches(weights, dtype):
    g = torch.Generator().manual_seed(0)
    ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)
    gt, proposals = random_boxes(500, g, dtype), random_boxes(500, g, dtype)
    expected = theirs.encode_single(gt, proposals)
    got = ours.encode_single(gt, proposals)
    assert got.dtype == expected.dtype
    assert_same(got, expected)
    counts = [200, 0, 300]
    got_list = ours.encode(list(gt.split(counts)), list(proposals.split(counts)))
    expected_list = theirs.encode(list(gt.split(counts)), list(proposals.split(counts)))
    assert len(got_list) == len(expected_list) == 3
    for a, b in zip(got_list, expected_list, strict=True):
        assert a.shape == b.shape
        assert_same(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("num_sets", [1, 5])
def test_box_coder_decode_matches(weights, dtype, num_sets):
    g = torch.Generator().manual_seed(1)
    ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)
    proposals = random_boxes(400, g, dtype)
    # spread wide enough that some dw, dh hit the clamp
    deltas = (
        torch.randn(400, 4 * num_sets, generator=g, dtype=dtype)
        * torch.tensor([1.0, 1.0, 3.0, 3.0], dtype=dtype).repeat(num_sets)
        * torch.tensor(weights, dtype=dtype).repeat(num_sets)
    )
    got = ours.decode_single(deltas, proposals)
    expected = theirs.decode_single(deltas, proposals)
    assert got.shape == expected.shape == (400, 4 * num_sets)
    assert got.dtype == expected.dtype
    assert_same(got, expected)
    per_image = list(proposals.split([150, 250]))
    got = ours.decode(deltas, per_image)
    expected = theirs.decode(deltas, per_image)
    assert got.shape == expected.shape == (400, num_sets, 4)
    assert_same(got, expected)


def test_box_coder_decode_casts_reference_like_torchvision():
    g = torch.Generator().manual_seed(2)
    proposals = random_boxes(50, g, torch.float64)
    deltas = torch.randn(50, 4, generator=g)
    got = BoxCoder().decode_single(deltas, proposals)
    expected = tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas, proposals)
    assert got.dtype == expected.dtype == torch.float32
    assert_same(got, expected)


# ---------------------------------------------------------------------------- matcher


def quality_matrices():
    g = torch.Generator().manual_seed(3)
    gt = random_boxes(7, g)
    anchors = random_boxes(300, g)
    yield "iou", tv_box_iou(gt, anchors)
    yield "coarse", torch.randint(0, 10, (5, 200), generator=g).float() / 10  # many exact ties
    coarse = torch.randint(0, 4, (6, 50), generator=g).float() / 4
    coarse[2] = 0.0  # a gt touching nothing: every prediction ties at 0
    coarse[4] = coarse[1]  # two identical gts
    yield "zero-row", coarse
    yield "single-gt", torch.rand(1, 40, generator=g)
    yield "single-pred", torch.rand(4, 1, generator=g)
    yield "uniform", torch.full((3, 20), 0.5)
    yield "float64", torch.rand(8, 100, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    ("high", "low", "allow"),
    [(0.7, 0.3, True), (0.7, 0.3, False), (0.5, 0.5, False), (0.5, 0.5, True), (0.6, 0.4, True)],
)
def test_matcher_matches_torchvision(high, low, allow):
    for name, quality in quality_matrices():
        got = Matcher(high, low, allow)(quality.clone())
        expected = tv_utils.Matcher(high, low, allow)(quality.clone())
        assert got.dtype == expected.dtype, name
        assert torch.equal(got, expected), name


# ---------------------------------------------------------------------------- sampler


def sampler_inputs():
    g = torch.Generator().manual_seed(4)
    matcher = tv_utils.Matcher(0.7, 0.3, True)
    images = []
    for n in (500, 120, 30):
        quality = tv_box_iou(random_boxes(4, g), random_boxes(n, g))
        matches = matcher(quality)
        # as the RPN does: matched gt m -> label m + 1, below low -> 0, between thresholds -> -1
        labels = torch.where(matches >= 0, matches + 1, torch.zeros_like(matches))
        labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
        labels[torch.rand(n, generator=g) < 0.1] = -1
        images.append(labels)
    images.append(torch.full((10,), -1, dtype=torch.int64))
    images.append(torch.ones(300, dtype=torch.int64))
    return images


@pytest.mark.parametrize(("batch", "fraction"), [(256, 0.5), (512, 0.25), (16, 0.5), (7, 0.33)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_sampler_matches_torchvision_with_same_seed(batch, fraction, seed):
    images = sampler_inputs()
    torch.manual_seed(seed)
    got_pos, got_neg = BalancedPositiveNegativeSampler(batch, fraction)(images)
    torch.manual_seed(seed)
    exp_pos, exp_neg = tv_utils.BalancedPositiveNegativeSampler(batch, fraction)(images)
    assert len(got_pos) == len(exp_pos) == len(images)
    for a, b in zip(got_pos + got_neg, exp_pos + exp_neg, strict=True):
        assert a.dtype == b.dtype == torch.uint8
        assert torch.equal(a, b)
