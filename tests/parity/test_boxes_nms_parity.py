"""Parity with ``torchvision.ops``: box functions bit for bit, NMS kept indices identical.

structpred mirrors torchvision's arithmetic (same operations in the same order, same
upcasting of float16 / small ints), so box results are compared with zero tolerance
(``assert_same``: dtype, shape, every bit, NaN == NaN). NMS must return exactly
torchvision's indices in exactly its order, including boxes whose IoU equals the
threshold: torchvision's CPU kernel compares a float32 IoU with the float64 threshold.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.ops as tv_ops

from structpred import ops
from structpred.bench.ops import nms_boxes

FMTS = ("xyxy", "xywh", "cxcywh")
FLOATS = (torch.float32, torch.float64)
# IoU thresholds: a grid, the usual ones, and values that are not exact in float32.
THRESHOLDS = sorted({i / 20 for i in range(21)} | {1 / 3, 2 / 3, 0.3, 0.7, 0.1, 0.45, 0.65})


def assert_same(actual, expected):
    """Same dtype, shape and bits (NaN equal to NaN)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def assert_same_keep(actual, expected, what=""):
    assert actual.dtype == expected.dtype == torch.int64
    assert torch.equal(actual, expected), (
        f"{what}: structpred kept {actual.numel()}, torchvision {expected.numel()}; "
        f"first difference at {_first_diff(actual, expected)}\n"
        f"structpred  {actual[:30].tolist()}\ntorchvision {expected[:30].tolist()}"
    )


def _first_diff(a, b):
    for k, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=False)):
        if x != y:
            return k
    return min(a.numel(), b.numel())


def random_boxes(n, *, seed, dtype=torch.float32, extent=300.0, max_wh=80.0, lead=()):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(*lead, n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(*lead, n, 2, generator=g, dtype=torch.float64) * max_wh + 0.5
    return torch.cat([xy, xy + wh], dim=-1).to(dtype)


def int_boxes(n, *, seed, dtype=torch.int64, extent=60, max_wh=30, lead=()):
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, extent, (*lead, n, 2), generator=g)
    wh = torch.randint(0, max_wh, (*lead, n, 2), generator=g)  # 0 included: degenerate boxes
    return torch.cat([xy, xy + wh], dim=-1).to(dtype)


def clustered_boxes(n, *, seed, dtype=torch.float32, clusters=25, extent=800.0):
    """Detection-like: objects with many jittered, overlapping candidate boxes each."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(clusters, 2, generator=g, dtype=torch.float64) * extent
    sizes = torch.rand(clusters, 2, generator=g, dtype=torch.float64) * 150 + 10
    which = torch.randint(0, clusters, (n,), generator=g)
    c = centres[which] + torch.randn(n, 2, generator=g, dtype=torch.float64) * sizes[which] * 0.1
    s = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(min=0.2)
    return torch.cat([c - s / 2, c + s / 2], dim=1).to(dtype)


def scores_for(n, *, seed, dtype=torch.float32, levels=None):
    """Random scores; with ``levels`` only that many distinct values (many ties)."""
    g = torch.Generator().manual_seed(seed)
    if levels is None:
        return torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    return (torch.randint(0, levels, (n,), generator=g).to(torch.float64) / levels).to(dtype)


def distinct_scores(n, *, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randperm(n, generator=g).to(torch.float64) / n).to(dtype)


# ---------------------------------------------------------------------------- box functions


@pytest.mark.parametrize("dtype", [*FLOATS, torch.float16])
@pytest.mark.parametrize(("in_fmt", "out_fmt"), list(itertools.product(FMTS, FMTS)))
def test_box_convert(in_fmt, out_fmt, dtype):
    boxes = tv_ops.box_convert(random_boxes(50, seed=0, lead=(3,)), "xyxy", in_fmt).to(dtype)
    assert_same(ops.box_convert(boxes, in_fmt, out_fmt), tv_ops.box_convert(boxes, in_fmt, out_fmt))
    assert_same(
        ops.box_convert(boxes[0, 0], in_fmt, out_fmt), tv_ops.box_convert(boxes[0, 0], in_fmt, out_fmt)
    )
    empty = torch.zeros(0, 4, dtype=dtype)
    assert_same(ops.box_convert(empty, in_fmt, out_fmt), tv_ops.box_convert(empty, in_fmt, out_fmt))


_AREA_IOU_DTYPES = [*FLOATS, torch.float16, torch.int16, torch.int32, torch.int64]


def _boxes_of(dtype, n, seed, lead=()):
    if dtype.is_floating_point:
        return random_boxes(n, seed=seed, lead=lead).to(dtype)
    return int_boxes(n, seed=seed, dtype=dtype, lead=lead)


@pytest.mark.parametrize("dtype", _AREA_IOU_DTYPES)
@pytest.mark.parametrize("fmt", FMTS)
def test_box_area(fmt, dtype):
    boxes = _boxes_of(dtype, 60, 1)
    if fmt != "xyxy" and dtype.is_floating_point:
        boxes = tv_ops.box_convert(boxes, "xyxy", fmt)
    out = ops.box_area(boxes, fmt)
    assert_same(out, tv_ops.box_area(boxes, fmt))
    assert_same(ops.box_area(boxes.reshape(3, 20, 4), fmt), tv_ops.box_area(boxes.reshape(3, 20, 4), fmt))
    if dtype == torch.float16:
        assert out.dtype == torch.float32  # upcast before the product, as torchvision
    if dtype == torch.int16:
        assert out.dtype == torch.int32


def test_box_area_overflow_upcast():
    # 300 * 300 = 90000 overflows float16 and int16 products: both upcast like torchvision.
    for dtype in (torch.float16, torch.int16):
        boxes = torch.tensor([[0, 0, 300, 300], [10, 20, 250, 290]], dtype=dtype)
        assert_same(ops.box_area(boxes), tv_ops.box_area(boxes))
        assert ops.box_area(boxes)[0].item() == 90000


@pytest.mark.parametrize("dtype", _AREA_IOU_DTYPES)
@pytest.mark.parametrize("fmt", FMTS)
def test_box_iou(fmt, dtype):
    b1, b2 = _boxes_of(dtype, 40, 2), _boxes_of(dtype, 30, 3)
    if fmt != "xyxy" and dtype.is_floating_point:
        b1, b2 = tv_ops.box_convert(b1, "xyxy", fmt), tv_ops.box_convert(b2, "xyxy", fmt)
    out = ops.box_iou(b1, b2, fmt=fmt)
    assert_same(out, tv_ops.box_iou(b1, b2, fmt=fmt))
    if dtype in (torch.float16, torch.int16, torch.int32, torch.int64):
        assert out.dtype == torch.float32
    # Leading batch dims.
    l1, l2 = _boxes_of(dtype, 7, 4, lead=(2, 3)), _boxes_of(dtype, 5, 5, lead=(2, 3))
    assert_same(ops.box_iou(l1, l2, fmt=fmt), tv_ops.box_iou(l1, l2, fmt=fmt))
    # Empty sets.
    assert_same(ops.box_iou(b1[:0], b2, fmt=fmt), tv_ops.box_iou(b1[:0], b2, fmt=fmt))
    assert_same(ops.box_iou(b1, b2[:0], fmt=fmt), tv_ops.box_iou(b1, b2[:0], fmt=fmt))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fmt", FMTS)
def test_box_iou_many_rows(fmt, dtype):
    # > 256 rows: structpred's row-block path. Same bits as torchvision's single pass.
    b1, b2 = random_boxes(700, seed=6, dtype=dtype), random_boxes(500, seed=7, dtype=dtype)
    if fmt != "xyxy":
        b1, b2 = tv_ops.box_convert(b1, "xyxy", fmt), tv_ops.box_convert(b2, "xyxy", fmt)
    assert_same(ops.box_iou(b1, b2, fmt=fmt), tv_ops.box_iou(b1, b2, fmt=fmt))


@pytest.mark.parametrize("dtype", [*FLOATS, torch.float16, torch.int64])
def test_generalized_box_iou(dtype):
    b1, b2 = _boxes_of(dtype, 40, 8), _boxes_of(dtype, 30, 9)
    assert_same(ops.generalized_box_iou(b1, b2), tv_ops.generalized_box_iou(b1, b2))
    l1, l2 = _boxes_of(dtype, 7, 10, lead=(2, 3)), _boxes_of(dtype, 5, 11, lead=(2, 3))
    assert_same(ops.generalized_box_iou(l1, l2), tv_ops.generalized_box_iou(l1, l2))
    assert_same(ops.generalized_box_iou(b1[:0], b2), tv_ops.generalized_box_iou(b1[:0], b2))


@pytest.mark.parametrize("dtype", FLOATS)
def test_degenerate_boxes(dtype):
    # Points, horizontal / vertical lines, identical boxes: 0 / 0 = NaN where torchvision has it.
    boxes = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0],
            [0.0, 1.0, 3.0, 1.0],
            [2.0, 0.0, 2.0, 5.0],
            [0.0, 0.0, 2.0, 2.0],
            [0.0, 0.0, 2.0, 2.0],
            [5.0, 5.0, 5.0, 5.0],
        ],
        dtype=dtype,
    )
    for fmt in FMTS:
        b = tv_ops.box_convert(boxes, "xyxy", fmt)
        assert_same(ops.box_iou(b, b, fmt=fmt), tv_ops.box_iou(b, b, fmt=fmt))
        assert_same(ops.box_area(b, fmt), tv_ops.box_area(b, fmt))
    assert_same(ops.generalized_box_iou(boxes, boxes), tv_ops.generalized_box_iou(boxes, boxes))
    assert ops.box_iou(boxes, boxes)[0, 0].isnan()


@pytest.mark.parametrize("dtype", [*FLOATS, torch.int64, torch.int32])
def test_clip_boxes_to_image(dtype):
    boxes = (random_boxes(50, seed=12, extent=400.0, lead=(2,)) - 50).to(dtype)
    for size in ((200, 300), (300, 200), (1, 1), (0, 0)):
        assert_same(ops.clip_boxes_to_image(boxes, size), tv_ops.clip_boxes_to_image(boxes, size))
        assert_same(ops.clip_boxes_to_image(boxes[0], size), tv_ops.clip_boxes_to_image(boxes[0], size))
        assert_same(ops.clip_boxes_to_image(boxes[0, 0], size), tv_ops.clip_boxes_to_image(boxes[0, 0], size))


@pytest.mark.parametrize("dtype", [*FLOATS, torch.int64])
def test_remove_small_boxes(dtype):
    boxes = random_boxes(300, seed=13, max_wh=20.0).to(dtype)
    for min_size in (0.0, 1.0, 5.0, 10.5, 100.0):
        assert_same(ops.remove_small_boxes(boxes, min_size), tv_ops.remove_small_boxes(boxes, min_size))
    assert_same(ops.remove_small_boxes(boxes[:0], 1.0), tv_ops.remove_small_boxes(boxes[:0], 1.0))


# ---------------------------------------------------------------------------- nms


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [1, 2, 10, 100, 1000])
def test_nms_random(n, dtype):
    boxes = random_boxes(n, seed=n, dtype=dtype)
    scores = scores_for(n, seed=n, dtype=dtype)
    for thr in THRESHOLDS:
        assert_same_keep(ops.nms(boxes, scores, thr), tv_ops.nms(boxes, scores, thr), f"n={n} thr={thr}")


@pytest.mark.parametrize("dtype", FLOATS)
def test_nms_clustered_2000(dtype):
    boxes = clustered_boxes(2000, seed=14, dtype=dtype)
    scores = scores_for(2000, seed=14, dtype=dtype)
    for thr in (0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.9, 1.0):
        assert_same_keep(ops.nms(boxes, scores, thr), tv_ops.nms(boxes, scores, thr), f"thr={thr}")


def test_nms_empty():
    for dtype in FLOATS:
        boxes, scores = torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype)
        assert_same_keep(ops.nms(boxes, scores, 0.5), tv_ops.nms(boxes, scores, 0.5))
        idxs = torch.zeros(0, dtype=torch.int64)
        assert_same_keep(
            ops.batched_nms(boxes, scores, idxs, 0.5), tv_ops.batched_nms(boxes, scores, idxs, 0.5)
        )


@pytest.mark.parametrize(
    "kind", ["uniform", "clustered", "tiny", "chain", "dense", "identical", "disjoint", "huge", "ties"]
)
@pytest.mark.parametrize("n", [1, 10, 200, 1000])
def test_nms_bench_distributions(kind, n):
    # The distributions of `structpred bench ops` (issue 15): kept indices identical, also
    # with few distinct score values (ties) and in shuffled storage order.
    boxes, scores = nms_boxes(kind, n, torch.Generator().manual_seed(n))
    for thr in (0.3, 0.7):
        assert_same_keep(ops.nms(boxes, scores, thr), tv_ops.nms(boxes, scores, thr), f"{kind} thr={thr}")
    tied = scores_for(n, seed=n, levels=3)
    assert_same_keep(ops.nms(boxes, tied, 0.5), tv_ops.nms(boxes, tied, 0.5), f"{kind} ties")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    assert_same_keep(
        ops.nms(boxes[perm], scores[perm], 0.5), tv_ops.nms(boxes[perm], scores[perm], 0.5), "perm"
    )


def test_nms_long_chain_5000():
    boxes, scores = nms_boxes("chain", 5000, torch.Generator().manual_seed(0))
    assert_same_keep(ops.nms(boxes, scores, 0.5), tv_ops.nms(boxes, scores, 0.5), "chain")


@pytest.mark.parametrize("n", [200, 1000, 2000])
def test_batched_nms_80_classes_bench_distribution(n):
    g = torch.Generator().manual_seed(n)
    boxes, scores = nms_boxes("clustered", n, g)
    idxs = torch.randint(0, 80, (n,), generator=g)
    ours, theirs = ops.batched_nms(boxes, scores, idxs, 0.5), tv_ops.batched_nms(boxes, scores, idxs, 0.5)
    assert_same_keep(ours, theirs, f"n={n}")  # distinct scores: the order is defined on both paths


@pytest.mark.parametrize("kind", ["dense", "identical", "ties", "uniform"])
@pytest.mark.parametrize("n", [10, 200, 1000, 2000])
def test_batched_nms_6_labels_bench_distributions(kind, n):
    # Dense clusters in 6 labels (issue 15's leftover case) and the other adversarial inputs,
    # on both sides of torchvision's 1,000-box switch. Above it torchvision orders equal
    # scores with an unstable sort: there the kept set and the score sequence are compared.
    g = torch.Generator().manual_seed(n)
    boxes, scores = nms_boxes(kind, n, g)
    idxs = torch.randint(0, 6, (n,), generator=g)
    ours, theirs = ops.batched_nms(boxes, scores, idxs, 0.5), tv_ops.batched_nms(boxes, scores, idxs, 0.5)
    if kind == "ties" and n > 1000:
        assert_same_keep(ours.sort().values, theirs.sort().values, f"{kind} kept set")
        assert_same(scores[ours], scores[theirs])
    else:
        assert_same_keep(ours, theirs, f"{kind} n={n}")


@pytest.mark.parametrize("kind", ["dense", "clustered", "ties", "identical"])
def test_nms_numpy_blocks_above_2000(kind):
    # Dense, clustered and tied inputs above 2,000 boxes now finish in the NumPy path's blocks
    # (they used to step aside to the tensor path): kept indices identical, also in 6 labels.
    g = torch.Generator().manual_seed(2500)
    boxes, scores = nms_boxes(kind, 2500, g)
    assert_same_keep(ops.nms(boxes, scores, 0.5), tv_ops.nms(boxes, scores, 0.5), kind)
    idxs = torch.randint(0, 6, (2500,), generator=g)
    ours, theirs = ops.batched_nms(boxes, scores, idxs, 0.5), tv_ops.batched_nms(boxes, scores, idxs, 0.5)
    # (above 1,000 boxes torchvision orders equal scores with an unstable sort: sets and scores)
    assert_same_keep(ours.sort().values, theirs.sort().values, f"{kind} kept set")
    assert_same(scores[ours], scores[theirs])


def test_batched_nms_empty_float_idxs():
    # torchvision returns an empty result for empty input whatever the idxs dtype (issue 15).
    boxes, scores, idxs = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0)
    assert_same_keep(ops.batched_nms(boxes, scores, idxs, 0.5), tv_ops.batched_nms(boxes, scores, idxs, 0.5))


def test_nms_float16_torchvision_case():
    # torchvision's own float16 case (test_nms_float16): float32 and float16 keep [1].
    boxes = torch.tensor(
        [
            [285.3538, 185.5758, 1193.5110, 851.4551],
            [285.1472, 188.7374, 1192.4984, 851.0669],
            [279.2440, 197.9812, 1189.4746, 849.2019],
        ]
    )
    scores = torch.tensor([0.6370, 0.7569, 0.3966])
    assert (
        ops.nms(boxes.half(), scores.half(), 0.2).tolist() == tv_ops.nms(boxes, scores, 0.2).tolist() == [1]
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nms_half_precisions_match_torchvision_upcast(dtype):
    # torchvision computes float16/bfloat16 NMS in float32 (autocast, CUDA accumulation):
    # the same boxes, upcast exactly, must keep the same indices; under CPU autocast too.
    boxes = (clustered_boxes(600, seed=30) * 2).to(dtype)
    scores = scores_for(600, seed=30).to(dtype)
    for thr in (0.2, 0.5, 0.8):
        expected = tv_ops.nms(boxes.float(), scores.float(), thr)
        assert_same_keep(ops.nms(boxes, scores, thr), expected, f"{dtype} thr={thr}")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b16, s16 = boxes.to(torch.bfloat16), scores.to(torch.bfloat16)
        assert_same_keep(ops.nms(b16, s16, 0.5), tv_ops.nms(b16, s16, 0.5), "autocast")


def test_nms_quint8_matches_torchvision():
    g = torch.Generator().manual_seed(31)
    xy = torch.rand(300, 2, generator=g) * 150
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=g) * 60], 1)
    scores = torch.rand(300, generator=g)
    for scale, zero_point in ((1.0, 0), (0.9, 7)):
        qb = torch.quantize_per_tensor(boxes, scale=scale, zero_point=zero_point, dtype=torch.quint8)
        qs = torch.quantize_per_tensor(scores, scale=scale / 200, zero_point=zero_point, dtype=torch.quint8)
        for thr in (0.3, 0.5):
            assert_same_keep(ops.nms(qb, qs, thr), tv_ops.nms(qb, qs, thr), f"scale={scale} thr={thr}")


def test_nms_error_types_differ_as_documented():
    # Documented in the docstrings: structpred raises ValueError naming the argument where
    # torchvision's C++ checks raise RuntimeError.
    boxes, scores = torch.zeros(3, 4), torch.zeros(2)
    with pytest.raises(ValueError, match=r"scores must be a Tensor\[3\]"):
        ops.nms(boxes, scores, 0.5)
    with pytest.raises(RuntimeError):
        tv_ops.nms(boxes, scores, 0.5)
    assert "RuntimeError" in ops.nms.__doc__ and "RuntimeError" in ops.batched_nms.__doc__


# Pairs of integer boxes whose IoU is an exact fraction; the float32 IoU of 1/3 and 3/10
# rounds up above the float64 threshold 1/3 resp. 0.3, so torchvision drops the second box.
_EXACT_PAIRS = {
    "1/2": ([0, 0, 3, 1], [1, 0, 4, 1]),  # 2 / 4
    "1/3": ([0, 0, 2, 1], [1, 0, 3, 1]),  # 1 / 3
    "3/10": ([0, 0, 8, 1], [5, 0, 10, 1]),  # 3 / 10
    "1/4": ([0, 0, 4, 2], [0, 0, 2, 2]),  # 4 / 16 (inside)
    "2/3": ([0, 0, 3, 3], [0, 0, 3, 2]),  # 6 / 9
    "7/10": ([0, 0, 10, 1], [3, 0, 10, 1]),  # 7 / 10
}
_F32 = {name: float(torch.tensor(v, dtype=torch.float32)) for name, v in (("1/3", 1 / 3), ("0.3", 0.3))}
_EXACT_THRESHOLDS = [0.5, 1 / 3, 0.3, 0.25, 2 / 3, 0.7, _F32["1/3"], _F32["0.3"]]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("pair", list(_EXACT_PAIRS))
def test_nms_iou_equal_to_threshold(pair, dtype):
    a, b = _EXACT_PAIRS[pair]
    # The pair three times, far apart, in different score orders.
    shifts = torch.tensor([0, 100, 200])[:, None, None] * torch.tensor([1, 0, 1, 0])
    boxes = (torch.tensor([a, b])[None] + shifts).reshape(6, 4).to(dtype)
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.5, 0.5], dtype=dtype)
    for thr in _EXACT_THRESHOLDS:
        expected = tv_ops.nms(boxes, scores, thr)
        assert_same_keep(ops.nms(boxes, scores, thr), expected, f"IoU {pair}, thr={thr!r}, {dtype}")
        idxs = torch.tensor([0, 0, 1, 1, 0, 0])
        assert_same_keep(
            ops.batched_nms(boxes, scores, idxs, thr),
            tv_ops.batched_nms(boxes, scores, idxs, thr),
            f"{pair} {thr}",
        )


def test_nms_float32_threshold_subtlety_known_outcomes():
    # Pinned torchvision behaviour (double comparison), so the parity above is not vacuous.
    scores = torch.tensor([0.9, 0.8])
    third = torch.tensor([_EXACT_PAIRS["1/3"][0], _EXACT_PAIRS["1/3"][1]], dtype=torch.float32)
    assert tv_ops.nms(third, scores, 1 / 3).tolist() == [0]
    assert ops.nms(third, scores, 1 / 3).tolist() == [0]
    assert ops.nms(third, scores, _F32["1/3"]).tolist() == [0, 1]
    assert ops.nms(third.double(), scores.double(), 1 / 3).tolist() == [0, 1]
    tenth = torch.tensor([_EXACT_PAIRS["3/10"][0], _EXACT_PAIRS["3/10"][1]], dtype=torch.float32)
    assert tv_ops.nms(tenth, scores, 0.3).tolist() == [0]
    assert ops.nms(tenth, scores, 0.3).tolist() == [0]
    assert ops.nms(tenth.double(), scores.double(), 0.3).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", FLOATS)
def test_nms_integer_grid_boxes(dtype):
    # Integer corners on a small grid: many IoUs are exact fractions equal to a threshold.
    boxes = int_boxes(600, seed=15, extent=12, max_wh=6).to(dtype)
    scores = scores_for(600, seed=15, dtype=dtype, levels=30)
    for thr in [*THRESHOLDS, _F32["1/3"], _F32["0.3"]]:
        assert_same_keep(ops.nms(boxes, scores, thr), tv_ops.nms(boxes, scores, thr), f"thr={thr}")


@pytest.mark.parametrize("dtype", FLOATS)
def test_nms_ties_in_scores(dtype):
    boxes = clustered_boxes(800, seed=16, dtype=dtype)
    for levels in (1, 2, 10):
        scores = scores_for(800, seed=levels, dtype=dtype, levels=levels)
        for thr in (0.0, 0.3, 0.5, 0.7, 1.0):
            assert_same_keep(ops.nms(boxes, scores, thr), tv_ops.nms(boxes, scores, thr), f"{levels} {thr}")
    # Identical boxes with equal scores.
    same = torch.tensor([[1.0, 2.0, 30.0, 40.0]], dtype=dtype).repeat(50, 1)
    flat = torch.ones(50, dtype=dtype)
    for thr in (0.5, 1.0):
        assert_same_keep(ops.nms(same, flat, thr), tv_ops.nms(same, flat, thr), f"identical {thr}")


# ---------------------------------------------------------------------------- batched_nms


def _labels(n, num_classes, seed):
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("num_classes", [1, 3, 80])
@pytest.mark.parametrize("n", [200, 1000])
def test_batched_nms_coordinate_trick_range(n, num_classes, dtype):
    # n <= 1000 (<= 4000 coordinates): torchvision offsets the boxes per class and runs one nms.
    boxes = clustered_boxes(n, seed=n + num_classes, dtype=dtype)
    scores = scores_for(n, seed=n + num_classes, dtype=dtype)
    idxs = _labels(n, num_classes, n + num_classes)
    for thr in (0.0, 0.3, 0.5, 0.7, 1.0):
        assert_same_keep(
            ops.batched_nms(boxes, scores, idxs, thr),
            tv_ops.batched_nms(boxes, scores, idxs, thr),
            f"thr={thr}",
        )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("num_classes", [1, 2, 80])
@pytest.mark.parametrize("n", [1001, 3000])
def test_batched_nms_per_class_loop_range(n, num_classes, dtype):
    # n > 1000: torchvision loops over classes. Distinct scores: the order is fully defined.
    boxes = clustered_boxes(n, seed=n + num_classes, dtype=dtype, clusters=60, extent=1500.0)
    scores = distinct_scores(n, seed=n + num_classes, dtype=dtype)
    idxs = _labels(n, num_classes, n + num_classes)
    for thr in (0.0, 0.5, 0.7):
        assert_same_keep(
            ops.batched_nms(boxes, scores, idxs, thr),
            tv_ops.batched_nms(boxes, scores, idxs, thr),
            f"thr={thr}",
        )


@pytest.mark.parametrize("num_classes", [2, 5, 80])
def test_batched_nms_ties_in_scores_small(num_classes):
    # Below 1000 boxes torchvision's answer is one stable nms over all boxes: among equal
    # scores the smaller index comes first, also across classes.
    n = 500
    boxes = clustered_boxes(n, seed=17)
    idxs = _labels(n, num_classes, 17)
    for levels in (1, 4, 20):
        scores = scores_for(n, seed=levels, levels=levels)
        for thr in (0.0, 0.5, 1.0):
            assert_same_keep(
                ops.batched_nms(boxes, scores, idxs, thr),
                tv_ops.batched_nms(boxes, scores, idxs, thr),
                f"levels={levels} thr={thr}",
            )


def test_batched_nms_ties_in_scores_large():
    # Above 1000 boxes torchvision orders the kept boxes with an unstable sort, so among
    # equal scores its order is not specified: compare the kept set and the score sequence.
    n = 2500
    boxes = clustered_boxes(n, seed=18, clusters=60, extent=1500.0)
    idxs = _labels(n, 6, 18)
    scores = scores_for(n, seed=18, levels=8)
    for thr in (0.3, 0.5):
        ours, theirs = ops.batched_nms(boxes, scores, idxs, thr), tv_ops.batched_nms(boxes, scores, idxs, thr)
        assert_same_keep(ours.sort().values, theirs.sort().values, f"kept set, thr={thr}")
        assert_same(scores[ours], scores[theirs])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [900, 1500])
def test_batched_nms_integer_grid_boxes(n, dtype):
    # Exact-fraction IoUs per class, on both sides of torchvision's 1000-box switch (integer
    # offsets keep the coordinate trick exact).
    boxes = int_boxes(n, seed=19, extent=15, max_wh=7).to(dtype)
    scores = distinct_scores(n, seed=19, dtype=dtype)
    idxs = _labels(n, 4, 19)
    for thr in (0.25, 0.3, 1 / 3, 0.5, 2 / 3, _F32["1/3"]):
        assert_same_keep(
            ops.batched_nms(boxes, scores, idxs, thr),
            tv_ops.batched_nms(boxes, scores, idxs, thr),
            f"thr={thr}",
        )


def test_batched_nms_label_values():
    # Sparse, negative and small-dtype labels.
    n = 400
    boxes = clustered_boxes(n, seed=20)
    scores = distinct_scores(n, seed=20)
    base = _labels(n, 4, 20)
    for idxs in (base * 3 + 5, base - 2, base.int(), base.to(torch.uint8)):
        assert_same_keep(
            ops.batched_nms(boxes, scores, idxs, 0.5), tv_ops.batched_nms(boxes, scores, idxs, 0.5), str(idxs)
        )


def _per_class_tv_nms(boxes, scores, idxs, thr):
    """torchvision's own definition of batched NMS: ``nms`` per class, merged by score (stable)."""
    keep = torch.zeros(len(scores), dtype=torch.bool)
    for c in idxs.unique():
        members = torch.where(idxs == c)[0]
        keep[members[tv_ops.nms(boxes[members], scores[members], thr)]] = True
    kept = torch.where(keep)[0]
    return kept[scores[kept].sort(descending=True, stable=True).indices]


def _large_label_problem():
    n = 400
    base = _labels(n, 4, 20)
    return clustered_boxes(n, seed=20), distinct_scores(n, seed=20), base * 1000


def test_batched_nms_large_label_values_equal_per_class_nms():
    boxes, scores, idxs = _large_label_problem()
    assert_same_keep(ops.batched_nms(boxes, scores, idxs, 0.5), _per_class_tv_nms(boxes, scores, idxs, 0.5))


def test_batched_nms_large_label_values_differs_from_offset_trick_only_by_rounding():
    # Labels up to 3000 with boxes up to ~925: torchvision's offset trick (used up to 1,000
    # boxes) moves float32 boxes to ~2.8e6, where floats are 0.25 apart, which changes some
    # IoUs. structpred keeps exact per-class NMS (torchvision's own path above 1,000 boxes);
    # the difference must be the trick's rounding and nothing else: in float64 they agree.
    boxes, scores, idxs = _large_label_problem()
    assert_same_keep(
        ops.batched_nms(boxes.double(), scores.double(), idxs, 0.5),
        tv_ops.batched_nms(boxes.double(), scores.double(), idxs, 0.5),
        "float64, labels * 1000",
    )
