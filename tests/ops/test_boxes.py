"""Box algebra: naive per-pair references, known values, shapes, gradcheck, properties, bad input.

The references below are plain Python loops over box pairs in float64, written from the
definitions: IoU = |A n B| / |A u B|, GIoU = IoU - (|C| - |A u B|) / |C| with C the smallest
enclosing box, DIoU = IoU - rho^2 / (c^2 + eps) (rho: distance of the centres, c: C's diagonal),
CIoU = DIoU - alpha v (v = 4 / pi^2 (atan(w1 / h1) - atan(w2 / h2))^2,
alpha = v / (1 - IoU + v + eps)). A box of zero area has IoU NaN with itself (0 / 0), as in torchvision.
No torchvision here; parity with it lives in ``tests/parity/test_boxes_nms_parity.py``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structpred.ops import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)

FMTS = ("xyxy", "xywh", "cxcywh")

# One box written in every format: x1, y1, x2, y2 = 1, 2, 5, 8 (w = 4, h = 6, centre (3, 5)).
KNOWN = {
    "xyxy": [1.0, 2.0, 5.0, 8.0],
    "xywh": [1.0, 2.0, 4.0, 6.0],
    "cxcywh": [3.0, 5.0, 4.0, 6.0],
}


# ---------------------------------------------------------------------------- references


def naive_iou_pair(a, b):
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union != 0 else math.nan


def naive_giou_pair(a, b):
    iou = naive_iou_pair(a, b)
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - iw * ih
    c = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return iou - (c - union) / c if c != 0 else math.nan


def naive_diou_pair(a, b, eps=1e-7):
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    rho2 = ((ax1 + ax2 - bx1 - bx2) / 2) ** 2 + ((ay1 + ay2 - by1 - by2) / 2) ** 2
    c2 = (max(ax2, bx2) - min(ax1, bx1)) ** 2 + (max(ay2, by2) - min(ay1, by1)) ** 2
    return naive_iou_pair(a, b) - rho2 / (c2 + eps)


def naive_ciou_pair(a, b, eps=1e-7):
    iou = naive_iou_pair(a, b)
    angle_a, angle_b = math.atan((a[2] - a[0]) / (a[3] - a[1])), math.atan((b[2] - b[0]) / (b[3] - b[1]))
    v = 4 / math.pi**2 * (angle_a - angle_b) ** 2
    return naive_diou_pair(a, b, eps) - v / (1 - iou + v + eps) * v


def naive_pairwise(fn, boxes1, boxes2):
    """``fn`` on every pair of ``[N, 4]`` x ``[M, 4]`` -> float64 ``[N, M]``."""
    rows = [[fn(a, b) for b in boxes2.double().tolist()] for a in boxes1.double().tolist()]
    return torch.tensor(rows, dtype=torch.float64).reshape(boxes1.shape[0], boxes2.shape[0])


def random_boxes(n, *, seed, dtype=torch.float64, extent=100.0, min_wh=1.0, max_wh=40.0, lead=()):
    """Valid xyxy boxes ``[*lead, n, 4]`` with sides in ``[min_wh, min_wh + max_wh)``."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(*lead, n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(*lead, n, 2, generator=g, dtype=torch.float64) * max_wh + min_wh
    return torch.cat([xy, xy + wh], dim=-1).to(dtype)


def assert_same(actual, expected):
    """Equal dtype, shape and values (NaN equal to NaN)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------- box_convert


@pytest.mark.parametrize(("in_fmt", "out_fmt"), list(itertools.product(FMTS, FMTS)))
def test_box_convert_known_values(in_fmt, out_fmt):
    boxes = torch.tensor([KNOWN[in_fmt], [0.0, 0.0, 0.0, 0.0]])
    zero = {"xyxy": [0.0] * 4, "xywh": [0.0] * 4, "cxcywh": [0.0] * 4}
    expected = torch.tensor([KNOWN[out_fmt], zero[out_fmt]])
    out = box_convert(boxes, in_fmt, out_fmt)
    assert_same(out, expected)
    # Always a new tensor, also for in_fmt == out_fmt.
    assert out.data_ptr() != boxes.data_ptr()


@pytest.mark.parametrize(("in_fmt", "out_fmt"), list(itertools.product(FMTS, FMTS)))
def test_box_convert_leading_dims_and_empty(in_fmt, out_fmt):
    boxes = random_boxes(5, seed=0, lead=(2, 3))
    boxes = box_convert(boxes, "xyxy", in_fmt)
    out = box_convert(boxes, in_fmt, out_fmt)
    assert out.shape == (2, 3, 5, 4)
    assert_same(out.reshape(-1, 4), box_convert(boxes.reshape(-1, 4), in_fmt, out_fmt))
    empty = box_convert(torch.zeros(0, 4), in_fmt, out_fmt)
    assert empty.shape == (0, 4) and empty.dtype == torch.float32


def test_box_convert_keeps_dtype():
    for dtype in (torch.float16, torch.float32, torch.float64):
        out = box_convert(torch.tensor([KNOWN["xyxy"]], dtype=dtype), "xyxy", "cxcywh")
        assert out.dtype == dtype
        assert out.tolist() == [KNOWN["cxcywh"]]


# ---------------------------------------------------------------------------- box_area


@pytest.mark.parametrize("fmt", FMTS)
def test_box_area_known_values(fmt):
    boxes = torch.tensor([KNOWN[fmt], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert_same(box_area(boxes, fmt), torch.tensor([24.0, 0.0], dtype=torch.float64))
    assert box_area(boxes[0], fmt).shape == ()
    lead = boxes.expand(2, 3, 2, 4)
    assert_same(box_area(lead, fmt), torch.tensor([24.0, 0.0], dtype=torch.float64).expand(2, 3, 2))


def test_box_area_default_fmt_is_xyxy_and_inverted_is_negative():
    boxes = torch.tensor([[1.0, 2.0, 5.0, 8.0], [5.0, 2.0, 1.0, 8.0]])
    assert box_area(boxes).tolist() == [24.0, -24.0]


@pytest.mark.parametrize("fmt", FMTS)
def test_box_area_matches_naive_on_random(fmt):
    boxes = random_boxes(50, seed=1)
    x1, y1, x2, y2 = boxes.unbind(-1)
    expected = (x2 - x1) * (y2 - y1)
    torch.testing.assert_close(box_area(box_convert(boxes, "xyxy", fmt), fmt), expected)


def test_box_area_upcasts_small_types():
    # 200 * 200 overflows int16 and 300 * 300 overflows float16 (max 65504): both are upcast.
    boxes = torch.tensor([[0, 0, 200, 200]], dtype=torch.int16)
    assert box_area(boxes).dtype == torch.int32
    assert box_area(boxes).tolist() == [40000]
    half = torch.tensor([[0.0, 0.0, 300.0, 300.0]], dtype=torch.float16)
    assert box_area(half).dtype == torch.float32
    assert box_area(half).tolist() == [90000.0]  # float16 would overflow to inf (max 65504)


# ---------------------------------------------------------------------------- box_iou / GIoU


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "m"), [(1, 1), (7, 9), (13, 3)])
def test_box_iou_matches_naive(n, m, dtype):
    b1 = random_boxes(n, seed=n, dtype=dtype)
    b2 = random_boxes(m, seed=100 + m, dtype=dtype)
    out = box_iou(b1, b2)
    assert out.shape == (n, m) and out.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.double(), naive_pairwise(naive_iou_pair, b1, b2), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "m"), [(1, 1), (7, 9), (13, 3)])
def test_generalized_box_iou_matches_naive(n, m, dtype):
    b1 = random_boxes(n, seed=n, dtype=dtype)
    b2 = random_boxes(m, seed=100 + m, dtype=dtype)
    out = generalized_box_iou(b1, b2)
    assert out.shape == (n, m) and out.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.double(), naive_pairwise(naive_giou_pair, b1, b2), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("fn", "naive"), [(distance_box_iou, naive_diou_pair), (complete_box_iou, naive_ciou_pair)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "m"), [(1, 1), (7, 5)])
def test_distance_and_complete_box_iou_match_naive(fn, naive, n, m, dtype):
    b1, b2 = random_boxes(n, seed=n, dtype=dtype), random_boxes(m, seed=m + 100, dtype=dtype)
    b2[0] = b1[0]  # an identical pair: 1
    out = fn(b1, b2)
    assert out.shape == (n, m) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.double(), naive_pairwise(naive, b1, b2), rtol=tol, atol=tol)
    assert out[0, 0] == 1


def test_box_iou_and_giou_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0],  # identical: IoU 1
            [1.0, 0.0, 3.0, 2.0],  # half overlap: 2 / 6
            [0.5, 0.5, 1.5, 1.5],  # inside: 1 / 4
            [2.0, 0.0, 4.0, 2.0],  # touching: 0; C = 8, U = 8 -> GIoU 0
            [4.0, 0.0, 6.0, 2.0],  # apart: 0; C = 12, U = 8 -> GIoU -1/3
        ]
    )
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1.0, 1 / 3, 0.25, 0.0, 0.0]]))
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[1.0, 1 / 3, 0.25, 0.0, -1 / 3]]))


@pytest.mark.parametrize("fmt", FMTS)
def test_box_iou_fmt_variants(fmt):
    b1 = random_boxes(6, seed=3)
    b2 = random_boxes(8, seed=4)
    expected = naive_pairwise(naive_iou_pair, b1, b2)
    out = box_iou(box_convert(b1, "xyxy", fmt), box_convert(b2, "xyxy", fmt), fmt=fmt)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # Exactly representable boxes: every format gives exactly the same IoU.
    k1 = torch.tensor([KNOWN["xyxy"], [0.0, 0.0, 4.0, 4.0]])
    k2 = torch.tensor([[2.0, 4.0, 6.0, 6.0], [1.0, 1.0, 3.0, 9.0]])
    assert_same(box_iou(box_convert(k1, "xyxy", fmt), box_convert(k2, "xyxy", fmt), fmt=fmt), box_iou(k1, k2))


def test_box_iou_default_fmt_is_xyxy():
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    assert_same(box_iou(b, b), box_iou(b, b, fmt="xyxy"))
    # Read as xywh the second box is [1, 1, 2, 2], so the results must differ.
    assert not torch.equal(box_iou(b, b, fmt="xywh").nan_to_num(-1), box_iou(b, b).nan_to_num(-1))


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou, distance_box_iou, complete_box_iou])
def test_leading_batch_dims(fn):
    b1 = random_boxes(5, seed=5, lead=(2, 3))
    b2 = random_boxes(4, seed=6, lead=(2, 3))
    out = fn(b1, b2)
    assert out.shape == (2, 3, 5, 4)
    for i in range(2):
        for j in range(3):
            assert_same(out[i, j], fn(b1[i, j], b2[i, j]))
    # Broadcast a single set of boxes2 against a batch of boxes1.
    per_set = torch.stack([fn(x, b2[0, 0]) for x in b1.reshape(6, 5, 4)])  # (6, 5, 4)
    assert_same(fn(b1, b2[0, 0]), per_set.reshape(2, 3, 5, 4))


@pytest.mark.parametrize("fmt", FMTS)
def test_box_iou_leading_batch_dims_fmt(fmt):
    b1 = box_convert(random_boxes(5, seed=7, lead=(3,)), "xyxy", fmt)
    b2 = box_convert(random_boxes(6, seed=8, lead=(3,)), "xyxy", fmt)
    out = box_iou(b1, b2, fmt=fmt)
    assert out.shape == (3, 5, 6)
    for i in range(3):
        assert_same(out[i], box_iou(b1[i], b2[i], fmt=fmt))


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou, distance_box_iou, complete_box_iou])
def test_zero_boxes(fn):
    some = random_boxes(3, seed=9, dtype=torch.float32)
    none = torch.zeros(0, 4)
    assert fn(none, some).shape == (0, 3)
    assert fn(some, none).shape == (3, 0)
    assert fn(none, none).shape == (0, 0)
    assert fn(torch.zeros(2, 0, 4), torch.zeros(2, 5, 4)).shape == (2, 0, 5)
    assert box_area(none).shape == (0,)


def test_zero_area_boxes():
    # torchvision gives 0 / 0 = NaN for a zero-area box against itself (checked in the
    # parity tests); against a positive-area box the union is positive, so the IoU is 0.
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 1.0, 3.0, 1.0]])
    square = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert box_iou(point, point).isnan().all()
    assert box_iou(line, line).isnan().all()
    assert box_iou(point, square).tolist() == [[0.0]]
    assert box_iou(square, line).tolist() == [[0.0]]
    assert generalized_box_iou(point, point).isnan().all()
    # GIoU of a point inside a square: IoU 0, C = square = union -> 0.
    assert generalized_box_iou(point, square).tolist() == [[0.0]]
    # DIoU / CIoU carry the IoU's NaN; a point at a square's centre: IoU 0, rho 0 -> 0. CIoU's
    # aspect term is NaN for a point (atan(0 / 0)) and pi / 2 for a horizontal line, as torchvision.
    assert distance_box_iou(point, point).isnan().all() and complete_box_iou(point, square).isnan().all()
    assert distance_box_iou(point, square).tolist() == [[0.0]]
    expected = -1.25 / (3.0**2 + 2.0**2 + 1e-7)  # IoU 0; centres (1, 1), (1.5, 0); C = 3 x 2
    v = 4 / math.pi**2 * (math.pi / 4 - math.pi / 2) ** 2  # square atan(1), line atan(3 / 0)
    torch.testing.assert_close(
        complete_box_iou(square, torch.tensor([[0.0, 0.0, 3.0, 0.0]])),
        torch.tensor([[expected - v / (1 + v + 1e-7) * v]]),
    )


def test_box_iou_chunked_path_equals_small_path():
    # More than 256 rows of a 2-D float boxes1 take the row-block path; slices of at most
    # 256 rows take the one-pass path. The arithmetic is the same, so the results are equal.
    for dtype in (torch.float32, torch.float64):
        b1 = random_boxes(600, seed=10, dtype=dtype)
        b2 = random_boxes(300, seed=11, dtype=dtype)
        big = box_iou(b1, b2)
        small = torch.cat([box_iou(b1[s : s + 200], b2) for s in range(0, 600, 200)])
        assert big.shape == (600, 300) and big.dtype == dtype
        assert_same(big, small)
        # ...and equal to the autograd path (which never chunks).
        assert_same(big, box_iou(b1.clone().requires_grad_(), b2).detach())
        for fmt in ("xywh", "cxcywh"):
            c1, c2 = box_convert(b1, "xyxy", fmt), box_convert(b2, "xyxy", fmt)
            chunked = box_iou(c1, c2, fmt=fmt)
            pieces = [box_iou(c1[s : s + 100], c2, fmt=fmt) for s in range(0, 600, 100)]
            assert_same(chunked, torch.cat(pieces))
    # The boundary: exactly 256 rows (one pass) and 257 rows (two blocks).
    b1 = random_boxes(257, seed=12, dtype=torch.float32)
    b2 = random_boxes(20, seed=13, dtype=torch.float32)
    assert_same(box_iou(b1, b2)[:256], box_iou(b1[:256], b2))
    assert_same(box_iou(b1, b2)[256:], box_iou(b1[256:], b2))
    # Check a few rows of the large case against the naive reference too.
    b1 = random_boxes(300, seed=14)
    torch.testing.assert_close(box_iou(b1, b2.double())[::37], naive_pairwise(naive_iou_pair, b1[::37], b2))


# ---------------------------------------------------------------------------- gradcheck


def _separated_pairs():
    # Partial overlaps, containment and a disjoint pair; no two coordinates coincide, so no
    # min/max tie or clamp sits within the finite-difference step.
    b1 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.2, 3.1, 17.3, 12.6]], dtype=torch.float64)
    b2 = torch.tensor(
        [[2.5, 1.5, 8.3, 13.1], [20.4, 20.7, 30.9, 31.2], [1.1, 6.2, 12.7, 9.9], [0.6, 0.4, 27.5, 29.3]],
        dtype=torch.float64,
    )
    return b1.requires_grad_(), b2.requires_grad_()


@pytest.mark.parametrize("fmt", FMTS)
def test_box_iou_gradcheck(fmt):
    b1, b2 = _separated_pairs()
    c1 = box_convert(b1.detach(), "xyxy", fmt).requires_grad_()
    c2 = box_convert(b2.detach(), "xyxy", fmt).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: box_iou(x, y, fmt=fmt), (c1, c2))


def test_generalized_box_iou_gradcheck():
    b1, b2 = _separated_pairs()
    assert torch.autograd.gradcheck(generalized_box_iou, (b1, b2))
    assert torch.autograd.gradcheck(generalized_box_iou, (b1.detach()[None].requires_grad_(), b2[None]))


def test_distance_box_iou_gradcheck():
    # complete_box_iou's gradcheck (alpha held constant) is in test_iou_losses.py.
    b1, b2 = _separated_pairs()
    assert torch.autograd.gradcheck(distance_box_iou, (b1, b2))
    assert torch.autograd.gradcheck(lambda x, y: distance_box_iou(x, y, eps=0.5), (b1, b2))


def test_box_area_and_convert_gradcheck():
    b1, _ = _separated_pairs()
    for fmt in FMTS:
        assert torch.autograd.gradcheck(lambda x, f=fmt: box_area(x, f), (b1,))
    for in_fmt, out_fmt in itertools.product(FMTS, FMTS):
        assert torch.autograd.gradcheck(lambda x, i=in_fmt, o=out_fmt: box_convert(x, i, o), (b1,))


def test_box_iou_grad_with_many_rows():
    # With autograd the > 256-row input must still be differentiable (no in-place path).
    b1 = random_boxes(300, seed=15).requires_grad_()
    b2 = random_boxes(10, seed=16)
    box_iou(b1, b2).sum().backward()
    assert b1.grad is not None and b1.grad.shape == (300, 4) and b1.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- clip / remove small


def test_clip_boxes_to_image_known_values():
    # size is (height, width): x is clamped to [0, 20], y to [0, 10].
    boxes = torch.tensor([[-5.0, -5.0, 30.0, 30.0], [1.0, 2.0, 3.0, 4.0], [25.0, 15.0, 26.0, 16.0]])
    expected = torch.tensor([[0.0, 0.0, 20.0, 10.0], [1.0, 2.0, 3.0, 4.0], [20.0, 10.0, 20.0, 10.0]])
    assert_same(clip_boxes_to_image(boxes, (10, 20)), expected)
    # A single box [4] and leading batch dims [2, 3, 3, 4].
    assert_same(clip_boxes_to_image(boxes[0], (10, 20)), expected[0])
    lead = boxes.expand(2, 3, 3, 4)
    assert_same(clip_boxes_to_image(lead, (10, 20)), expected.expand(2, 3, 3, 4))
    # Integer boxes keep their dtype; the input is not modified.
    ints = boxes.long()
    assert_same(clip_boxes_to_image(ints, (10, 20)), expected.long())
    assert ints[0].tolist() == [-5, -5, 30, 30]
    assert clip_boxes_to_image(torch.zeros(0, 4), (10, 20)).shape == (0, 4)


def test_clip_boxes_to_image_random():
    boxes = random_boxes(40, seed=17, extent=150.0, lead=(2,)) - 25.0
    out = clip_boxes_to_image(boxes, (60, 90))
    assert out.shape == boxes.shape
    assert_same(out[..., 0::2], boxes[..., 0::2].clamp(0, 90))
    assert_same(out[..., 1::2], boxes[..., 1::2].clamp(0, 60))


def test_remove_small_boxes():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # kept
            [0.0, 0.0, 2.0, 10.0],  # w = 2 == min_size: kept (>=)
            [0.0, 0.0, 1.9, 10.0],  # w too small
            [0.0, 0.0, 10.0, 1.0],  # h too small
            [5.0, 5.0, 4.0, 9.0],  # inverted: negative width
            [3.0, 3.0, 5.5, 5.5],  # kept
        ]
    )
    keep = remove_small_boxes(boxes, 2.0)
    assert keep.dtype == torch.int64
    assert keep.tolist() == [0, 1, 5]
    assert remove_small_boxes(boxes, 0.0).tolist() == [0, 1, 2, 3, 5]
    assert remove_small_boxes(boxes, 100.0).tolist() == []
    assert remove_small_boxes(torch.zeros(0, 4), 1.0).shape == (0,)


def test_remove_small_boxes_random():
    boxes = random_boxes(200, seed=18, min_wh=0.0, max_wh=10.0)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    expected = [i for i in range(200) if w[i] >= 4.0 and h[i] >= 4.0]
    assert remove_small_boxes(boxes, 4.0).tolist() == expected


# ---------------------------------------------------------------------------- properties

_coord = st.floats(min_value=-500.0, max_value=500.0, allow_nan=False, allow_infinity=False)
_side = st.floats(min_value=0.01, max_value=300.0, allow_nan=False, allow_infinity=False)


@st.composite
def xyxy_boxes(draw, min_n=1, max_n=12):
    """Valid float64 xyxy boxes ``[N, 4]`` with positive area."""
    rows = draw(st.lists(st.tuples(_coord, _coord, _side, _side), min_size=min_n, max_size=max_n))
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(a=xyxy_boxes(), b=xyxy_boxes())
def test_property_iou_symmetric_and_in_unit_interval(a, b):
    ab, ba = box_iou(a, b), box_iou(b, a)
    assert_same(ab, ba.T)
    assert ((ab >= 0) & (ab <= 1)).all(), ab
    # float32 too: the same properties hold.
    ab32 = box_iou(a.float(), b.float())
    assert_same(ab32, box_iou(b.float(), a.float()).T)
    assert ((ab32 >= 0) & (ab32 <= 1)).all(), ab32


@settings(max_examples=60, deadline=None)
@given(a=xyxy_boxes(), b=xyxy_boxes())
def test_property_giou_bounds(a, b):
    giou, iou = generalized_box_iou(a, b), box_iou(a, b)
    assert ((giou >= -1) & (giou <= 1)).all(), giou
    # |C| >= |A u B| so the penalty is >= 0 (up to rounding of the two areas).
    assert (giou <= iou + 1e-12).all(), giou - iou
    torch.testing.assert_close(giou, generalized_box_iou(b, a).T, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(a=xyxy_boxes(), b=xyxy_boxes())
def test_property_diou_ciou_bounds_and_symmetry(a, b):
    iou, diou, ciou = box_iou(a, b), distance_box_iou(a, b), complete_box_iou(a, b)
    assert ((diou >= -1) & (diou <= 1)).all(), diou  # rho < c: the penalty is in [0, 1)
    assert (diou <= iou + 1e-12).all() and (ciou <= diou + 1e-12).all()
    assert (ciou >= -1.5).all(), ciou  # alpha v <= 1/2 where IoU = 0 (v <= 1)
    torch.testing.assert_close(diou, distance_box_iou(b, a).T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ciou, complete_box_iou(b, a).T, rtol=1e-12, atol=1e-12)
    assert (distance_box_iou(a, a).diagonal() == 1).all() and (complete_box_iou(a, a).diagonal() == 1).all()


@settings(max_examples=60, deadline=None)
@given(a=xyxy_boxes(), fmt=st.sampled_from(FMTS))
def test_property_box_convert_round_trip(a, fmt):
    back = box_convert(box_convert(a, "xyxy", fmt), fmt, "xyxy")
    torch.testing.assert_close(back, a, rtol=1e-12, atol=1e-9)
    # Area is format independent.
    torch.testing.assert_close(box_area(box_convert(a, "xyxy", fmt), fmt), box_area(a), rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(a=xyxy_boxes(), fmt=st.sampled_from(FMTS))
def test_property_iou_with_itself_is_one(a, fmt):
    # xyxy: intersection and area are the same products, so exactly 1 in any float dtype.
    for boxes in (a, a.float()):
        assert (box_iou(boxes, boxes).diagonal() == 1).all(), box_iou(boxes, boxes).diagonal()
    assert (generalized_box_iou(a, a).diagonal() == 1).all()
    # Other formats: the area is w * h but the intersection uses rounded corners, so 1 up
    # to the rounding of the coordinates (float64 here; float32 loses ~ulp(x) / w).
    c = box_convert(a, "xyxy", fmt)
    iou = box_iou(c, c, fmt=fmt).diagonal()
    torch.testing.assert_close(iou, torch.ones_like(iou), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fmt", ["xyxyxyxy", "cxcywhr", "foo", "XYXY"])
def test_unknown_format_raises(fmt):
    boxes = torch.tensor([KNOWN["xyxy"]])
    with pytest.raises(ValueError, match=rf"in_fmt='{fmt}' is not supported.*xyxy"):
        box_convert(boxes, fmt, "xyxy")
    with pytest.raises(ValueError, match=rf"out_fmt='{fmt}' is not supported"):
        box_convert(boxes, "xyxy", fmt)
    with pytest.raises(ValueError, match=rf"fmt='{fmt}' is not supported"):
        box_area(boxes, fmt)
    with pytest.raises(ValueError, match=rf"fmt='{fmt}' is not supported"):
        box_iou(boxes, boxes, fmt=fmt)


def test_rotated_format_message_says_rotated():
    with pytest.raises(ValueError, match="rotated"):
        box_iou(torch.zeros(2, 8), torch.zeros(2, 8), fmt="xyxyxyxy")


@pytest.mark.parametrize("shape", [(3, 5), (3, 3), (8,), (), (2, 3, 0)])
def test_last_dim_not_four_raises(shape):
    bad = torch.zeros(shape)
    good = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[\.\.\., 4\]"):
        box_iou(bad, good)
    with pytest.raises(ValueError, match=r"boxes2 must have shape \[\.\.\., 4\]"):
        box_iou(good, bad)
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[\.\.\., 4\]"):
        generalized_box_iou(bad, good)
    with pytest.raises(ValueError, match=r"boxes2 must have shape \[\.\.\., 4\]"):
        generalized_box_iou(good, bad)
    for fn in (distance_box_iou, complete_box_iou):
        with pytest.raises(ValueError, match=r"boxes1 must have shape \[\.\.\., 4\]"):
            fn(bad, good)
        with pytest.raises(ValueError, match=r"boxes2 must have shape \[\.\.\., 4\]"):
            fn(good, bad)
    for call in (
        lambda: box_area(bad),
        lambda: box_convert(bad, "xyxy", "xywh"),
        lambda: clip_boxes_to_image(bad, (10, 10)),
        lambda: remove_small_boxes(bad, 1.0),
    ):
        with pytest.raises(ValueError, match=r"boxes must have shape \[\.\.\., 4\], got"):
            call()


@pytest.mark.parametrize("fn", [generalized_box_iou, distance_box_iou, complete_box_iou])
def test_giou_diou_ciou_inverted_boxes_raise(fn):
    good = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    bad = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [3.0, 0.0, 1.0, 2.0]])  # x2 < x1
    with pytest.raises(ValueError, match=r"boxes2 must be in \(x1, y1, x2, y2\) order.*box 2 is \[3\.0"):
        fn(good, bad)
    with pytest.raises(ValueError, match=r"boxes1 .*x2 >= x1 and y2 >= y1"):
        fn(torch.tensor([[0.0, 5.0, 2.0, 2.0]]), good)  # y2 < y1
    # Also found inside leading batch dims.
    with pytest.raises(ValueError, match="boxes1"):
        fn(bad.expand(2, 3, 4), good)


_NOT_TENSORS = [[[0.0, 0.0, 1.0, 1.0]], None, (0, 0, 1, 1)]
_GOOD = torch.zeros(1, 4)
# (call on a non-tensor x, argument name expected in the message)
_NON_TENSOR_CALLS = {
    "box_iou-boxes1": (lambda x: box_iou(x, _GOOD), "boxes1"),
    "box_iou-boxes2": (lambda x: box_iou(_GOOD, x), "boxes2"),
    "generalized_box_iou-boxes1": (lambda x: generalized_box_iou(x, _GOOD), "boxes1"),
    "generalized_box_iou-boxes2": (lambda x: generalized_box_iou(_GOOD, x), "boxes2"),
    "distance_box_iou-boxes1": (lambda x: distance_box_iou(x, _GOOD), "boxes1"),
    "complete_box_iou-boxes2": (lambda x: complete_box_iou(_GOOD, x), "boxes2"),
    "box_area": (lambda x: box_area(x), "boxes"),
    "box_convert": (lambda x: box_convert(x, "xyxy", "xywh"), "boxes"),
    "clip_boxes_to_image": (lambda x: clip_boxes_to_image(x, (5, 5)), "boxes"),
    "remove_small_boxes": (lambda x: remove_small_boxes(x, 1.0), "boxes"),
}


@pytest.mark.parametrize("not_a_tensor", _NOT_TENSORS, ids=["list", "None", "tuple"])
@pytest.mark.parametrize("case", list(_NON_TENSOR_CALLS))
def test_non_tensor_input_raises(case, not_a_tensor):
    call, name = _NON_TENSOR_CALLS[case]
    with pytest.raises(ValueError, match=f"{name} must be a Tensor, got {type(not_a_tensor).__name__}"):
        call(not_a_tensor)


@pytest.mark.parametrize("size", [(10,), (10, 20, 30), [], 10])
def test_clip_size_not_a_pair_raises(size):
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        clip_boxes_to_image(torch.zeros(2, 4), size)
