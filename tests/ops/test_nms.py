"""Greedy NMS against a naive loop, on adversarial layouts; batched NMS per class; bad input.

The reference is the textbook greedy algorithm: sort by score (descending, stable, so among
equal scores the earlier index wins), take the best remaining box, drop every later box
whose IoU with it is strictly greater than the threshold, repeat. Its IoU is computed in
the boxes' dtype in the order of torchvision's CPU kernel and compared with the threshold
in float64, as that kernel does. The batched reference runs it per class and merges by
(score descending, index ascending). No torchvision here; see ``tests/parity``.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.fx
from hypothesis import given, settings
from hypothesis import strategies as st

from structpred.ops import batched_nms, nms

# `structpred.ops.nms` is the function; the module is reached through importlib.
nms_module = importlib.import_module("structpred.ops.nms")

THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 1.0)
DTYPES = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------- references


def iou_one_to_many(box, others):
    """IoU ``[K]`` of ``box [4]`` with ``others [K, 4]``, in their dtype, kernel operation order."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    w = (torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0])).clamp(min=0)
    h = (torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1])).clamp(min=0)
    inter = w * h
    return inter / (area + areas - inter)


def naive_nms(boxes, scores, thr):
    """Greedy NMS, one box at a time. Returns the kept indices as a Python list."""
    n = boxes.shape[0]
    scores = scores.tolist()
    order = sorted(range(n), key=lambda i: -scores[i])  # Python's sort is stable
    suppressed = [False] * n
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        later = [j for j in order[pos + 1 :] if not suppressed[j]]
        if not later:
            continue
        # float32 IoU -> float64 is exact, so this is the kernel's double comparison.
        over = iou_one_to_many(boxes[i], boxes[later]).double() > thr
        for j, o in zip(later, over.tolist(), strict=True):
            if o:
                suppressed[j] = True
    return keep


def naive_batched_nms(boxes, scores, idxs, thr):
    """``naive_nms`` per class, merged by decreasing score, ties by index."""
    kept = []
    for c in sorted(set(idxs.tolist())):
        members = [i for i, x in enumerate(idxs.tolist()) if x == c]
        sub = torch.tensor(members, dtype=torch.int64)
        kept += [members[k] for k in naive_nms(boxes[sub], scores[sub], thr)]
    s = scores.tolist()
    return sorted(kept, key=lambda i: (-s[i], i))


def check_nms(boxes, scores, thr):
    expected = naive_nms(boxes, scores, thr)
    out = nms(boxes, scores, thr)
    assert out.dtype == torch.int64
    assert out.tolist() == expected, f"thr={thr}: got {out.tolist()}, expected {expected}"


def check_batched(boxes, scores, idxs, thr):
    expected = naive_batched_nms(boxes, scores, idxs, thr)
    out = batched_nms(boxes, scores, idxs, thr)
    assert out.dtype == torch.int64
    assert out.tolist() == expected, f"thr={thr}: got {out.tolist()}, expected {expected}"


# ---------------------------------------------------------------------------- generators


def random_boxes(n, *, seed, dtype=torch.float32, extent=200.0, max_wh=60.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * max_wh + 1.0
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def distinct_scores(n, *, seed, dtype=torch.float32):
    """A random permutation of distinct scores (no ties), so ties are tested on purpose only."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randperm(n, generator=g).to(torch.float64) / max(n, 1)).to(dtype)


def clustered_boxes(n, *, seed, dtype=torch.float32, clusters=8):
    """Detection-like: ``clusters`` objects, each with many jittered, heavily overlapping boxes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(clusters, 2, generator=g, dtype=torch.float64) * 300
    sizes = torch.rand(clusters, 2, generator=g, dtype=torch.float64) * 80 + 20
    which = torch.randint(0, clusters, (n,), generator=g)
    c = centres[which] + torch.randn(n, 2, generator=g, dtype=torch.float64) * 6
    s = sizes[which] * (1 + 0.15 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(min=0.3)
    return torch.cat([c - s / 2, c + s / 2], dim=1).to(dtype)


def chain_boxes(n, *, step=2.0, dtype=torch.float32):
    """Boxes ``[i * step, 0, i * step + 10, 10]``: IoU(i, i+1) = 8/12, IoU(i, i+2) = 6/14 for step 2."""
    x = torch.arange(n, dtype=torch.float64) * step
    return torch.stack([x, torch.zeros(n, dtype=torch.float64), x + 10, torch.full((n,), 10.0)], 1).to(dtype)


# ---------------------------------------------------------------------------- nms


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("thr", THRESHOLDS)
def test_nms_random(thr, dtype):
    for seed, n in ((0, 50), (1, 300)):
        boxes = random_boxes(n, seed=seed, dtype=dtype)
        check_nms(boxes, distinct_scores(n, seed=seed, dtype=dtype), thr)
        # Scores from torch.rand (ties possible but unlikely) too.
        check_nms(boxes, torch.rand(n, generator=torch.Generator().manual_seed(seed)).to(dtype), thr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("thr", THRESHOLDS)
def test_nms_clustered(thr, dtype):
    boxes = clustered_boxes(400, seed=2, dtype=dtype)
    check_nms(boxes, distinct_scores(400, seed=2, dtype=dtype), thr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_long_suppression_chain(dtype):
    # Decreasing scores along a chain of 300 boxes (more than one 256-row block): box 1 is
    # dropped by 0, so box 2 survives and drops 3, ... -> every other box. Each decision
    # depends on the previous one, the worst case for a parallel formulation.
    n = 300
    boxes = chain_boxes(n, dtype=dtype)
    scores = torch.linspace(1, 0, n, dtype=dtype)
    assert nms(boxes, scores, 0.5).tolist() == list(range(0, n, 2))
    check_nms(boxes, scores, 0.5)
    # Scores increasing along the chain: the chain runs from the last box backwards.
    assert nms(boxes, scores.flip(0), 0.5).tolist() == list(range(n - 1, -1, -2))
    # Shuffled storage order: same answer, mapped through the permutation.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    out = nms(boxes[perm], scores[perm], 0.5)
    assert perm[out].tolist() == list(range(0, n, 2))
    check_nms(boxes[perm], scores[perm], 0.5)
    # Below IoU(i, i+2) = 6/14 the chain suppresses two neighbours per kept box.
    assert nms(boxes, scores, 0.4).tolist() == list(range(0, n, 3))
    for thr in THRESHOLDS:
        check_nms(boxes, scores, thr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_identical_boxes(dtype):
    n = 20
    boxes = torch.tensor([[3.0, 4.0, 13.0, 19.0]], dtype=dtype).repeat(n, 1)
    scores = distinct_scores(n, seed=4, dtype=dtype)
    best = int(scores.argmax())
    for thr in THRESHOLDS[:-1]:
        assert nms(boxes, scores, thr).tolist() == [best]
        check_nms(boxes, scores, thr)
    # IoU = 1 exactly is not > 1: nothing is dropped, all come back by decreasing score.
    assert nms(boxes, scores, 1.0).tolist() == scores.argsort(descending=True).tolist()
    check_nms(boxes, scores, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_equal_scores_earlier_index_wins(dtype):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4 + [[50.0, 50.0, 60.0, 60.0]] * 3, dtype=dtype)
    scores = torch.full((7,), 0.5, dtype=dtype)
    assert nms(boxes, scores, 0.5).tolist() == [0, 4]
    assert nms(boxes, scores, 1.0).tolist() == list(range(7))
    # Mixed: ties among the top scores only.
    scores = torch.tensor([0.3, 0.9, 0.9, 0.1, 0.2, 0.9, 0.2], dtype=dtype)
    assert nms(boxes, scores, 0.5).tolist() == [1, 5]
    assert nms(boxes, scores, 1.0).tolist() == [1, 2, 5, 0, 4, 6, 3]
    # Many random boxes with few distinct score values.
    boxes = clustered_boxes(300, seed=5, dtype=dtype)
    g = torch.Generator().manual_seed(5)
    for levels in (1, 3, 10):
        scores = torch.randint(0, levels, (300,), generator=g).to(dtype) / levels
        for thr in THRESHOLDS:
            check_nms(boxes, scores, thr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_zero_and_one_box(dtype):
    out = nms(torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype), 0.5)
    assert out.dtype == torch.int64 and out.shape == (0,)
    one = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    for thr in THRESHOLDS:
        assert nms(one, torch.tensor([0.3], dtype=dtype), thr).tolist() == [0]


def test_nms_threshold_boundaries():
    # IoU exactly 0.5 in any float: [0,0,3,1] vs [1,0,4,1] -> 2 / 4. Only IoU > thr drops.
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.4999).tolist() == [0]
    # IoU 3 / 10 = 0.3: in float32 that is 0.30000001192..., above the double 0.3, so the
    # kernel (double comparison) drops it; in float64 it is exactly 0.3 and stays.
    boxes = torch.tensor([[0.0, 0.0, 8.0, 1.0], [5.0, 0.0, 10.0, 1.0]])
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes.double(), scores.double(), 0.3).tolist() == [0, 1]
    check_nms(boxes, scores, 0.3)
    check_nms(boxes.double(), scores.double(), 0.3)
    # IoU 1 / 3: float32(1/3) = 0.3333333432... > 1/3 (double) -> dropped at thr = 1/3.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    assert nms(boxes, scores, 1 / 3).tolist() == [0]
    assert nms(boxes, scores, float(torch.tensor(1 / 3, dtype=torch.float32))).tolist() == [0, 1]
    assert nms(boxes.double(), scores.double(), 1 / 3).tolist() == [0, 1]


def test_nms_integer_grid_boxes_exact_ratios():
    # Integer corners on a small grid: many IoUs are exact simple fractions, so they land
    # on thresholds like 1/3, 0.5, 0.25, 0.2 exactly (after rounding to the dtype).
    g = torch.Generator().manual_seed(6)
    xy = torch.randint(0, 8, (250, 2), generator=g)
    wh = torch.randint(1, 5, (250, 2), generator=g)
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.randint(0, 20, (250,), generator=g) / 20
    for dtype in DTYPES:
        for thr in (0.0, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5, 0.6, 2 / 3, 0.75, 1.0):
            check_nms(boxes.to(dtype), scores.to(dtype), thr)


def test_nms_does_not_modify_inputs():
    boxes = clustered_boxes(100, seed=7)
    scores = distinct_scores(100, seed=7)
    b, s = boxes.clone(), scores.clone()
    nms(boxes, scores, 0.5)
    batched_nms(boxes, scores, torch.arange(100) % 3, 0.5)
    assert torch.equal(boxes, b) and torch.equal(scores, s)


def test_nms_non_contiguous_inputs():
    both = clustered_boxes(200, seed=8)
    boxes = both[::2]  # (100, 4), non-contiguous rows
    scores = torch.rand(100, 2, generator=torch.Generator().manual_seed(8))[:, 1]
    assert not boxes.is_contiguous() and not scores.is_contiguous()
    check_nms(boxes, scores, 0.5)


# ---------------------------------------------------------------------------- batched_nms


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_classes", [1, 3, 80])
def test_batched_nms_matches_naive(num_classes, dtype):
    n = 400
    boxes = clustered_boxes(n, seed=num_classes, dtype=dtype)
    scores = distinct_scores(n, seed=num_classes, dtype=dtype)
    idxs = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(num_classes))
    for thr in THRESHOLDS:
        check_batched(boxes, scores, idxs, thr)


def test_batched_nms_one_class_equals_nms():
    boxes = clustered_boxes(300, seed=9)
    scores = distinct_scores(300, seed=9)
    for label in (0, 7, -3):
        idxs = torch.full((300,), label, dtype=torch.int64)
        for thr in THRESHOLDS:
            assert torch.equal(batched_nms(boxes, scores, idxs, thr), nms(boxes, scores, thr))


def test_batched_nms_classes_do_not_suppress_each_other():
    # Identical boxes in different classes all survive; within a class only the best.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 6)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.8])
    idxs = torch.tensor([2, 0, 1, 1, 2, 0])
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [1, 3, 4]
    # Large, non-contiguous and negative label values, int32 labels.
    for labels in (torch.tensor([1000, -5, 7, 7, 1000, -5]), idxs.int(), idxs.to(torch.uint8)):
        check_batched(boxes, scores, labels, 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_equal_scores_across_classes(dtype):
    # Equal scores in different classes: like nms (and torchvision's offset trick, which is
    # one nms over all boxes), the earlier index comes first.
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 0.0, 50.0, 10.0]], dtype=dtype
    )
    scores = torch.tensor([0.5, 0.5, 0.5], dtype=dtype)
    assert batched_nms(boxes, scores, torch.tensor([1, 0, 2]), 0.5).tolist() == [0, 1, 2]
    assert batched_nms(boxes, scores, torch.tensor([2, 1, 0]), 0.5).tolist() == [0, 1, 2]


def test_batched_nms_ties_random():
    boxes = clustered_boxes(300, seed=10)
    g = torch.Generator().manual_seed(10)
    scores = torch.randint(0, 5, (300,), generator=g) / 5
    idxs = torch.randint(0, 4, (300,), generator=g)
    for thr in THRESHOLDS:
        check_batched(boxes, scores, idxs, thr)


class _PathSpy:
    """Wraps the searches and scans of ``structpred.ops.nms`` to record which ones ran."""

    NAMES = ("greedy_bits", "greedy_pairs", "band_pairs", "segment_pairs", "padded_pairs", "_blocks")

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in self.NAMES:
            original = getattr(nms_module, name)

            def wrapper(*args, _original=original, _name=name, **kwargs):
                self.calls.append(_name if _name != "_blocks" else "probe" if args[-1] else "blocks")
                return _original(*args, **kwargs)

            monkeypatch.setattr(nms_module, name, wrapper)


@pytest.mark.parametrize(
    ("kind", "n", "num_classes", "path"),
    [
        ("clustered", 100, 3, {"greedy_pairs"}),  # one matrix, few pairs: listed
        ("identical", 200, 3, {"greedy_bits"}),  # one matrix, every pair: the bitmask scan
        ("clustered", 600, 1, {"probe", "greedy_bits"}),  # dense: the probe's blocks drop all
        ("random", 600, 3, {"probe", "greedy_bits", "padded_pairs"}),  # probe stops; 3 similar labels
        ("random", 600, 80, {"probe", "greedy_bits", "segment_pairs"}),  # probe stops; 80 small labels
        ("random", 600, 1, {"probe", "greedy_bits", "band_pairs", "blocks"}),  # the band declines
        pytest.param(  # per label, where the band declines; ~7 s under load (the naive loop)
            "random", 1500, 3, {"probe", "greedy_bits", "band_pairs", "blocks"}, marks=pytest.mark.slow
        ),
    ],
)
def test_batched_nms_each_pair_path(monkeypatch, kind, n, num_classes, path):
    # Up to 256 boxes: one IoU matrix. Above: a probe block of the best boxes; on dense
    # clusters it goes on and solves everything, else the pair searches take the rest: labels
    # of similar size, one batched [L, M, M] IoU; 80 small labels, same-label pairs one by
    # one; one label of wide boxes, blocks; large labels (500 boxes), each its own problem.
    monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)  # the tensor path (NumPy's: test_nms_small.py)
    spy = _PathSpy(monkeypatch)
    if kind == "clustered":
        boxes = clustered_boxes(n, seed=11, clusters=12)
    elif kind == "identical":
        boxes = torch.tensor([[3.0, 4.0, 13.0, 19.0]]).repeat(n, 1)
    else:
        boxes = random_boxes(n, seed=11, extent=600.0)
    scores = distinct_scores(n, seed=11)
    idxs = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(11))
    check_batched(boxes, scores, idxs, 0.5)
    assert set(spy.calls) == path, spy.calls
    for thr in (0.0, 0.7):
        check_batched(boxes, scores, idxs, thr)


def test_pair_paths_agree(monkeypatch):
    # The same input through every search gives the same answer.
    n = 360
    boxes = torch.cat([clustered_boxes(n - 100, seed=12), chain_boxes(100) + 300])
    scores = distinct_scores(n, seed=12)
    idxs = torch.randint(0, 6, (n,), generator=torch.Generator().manual_seed(12))
    results = {}
    # path: (_SMALL, _MAX_SEGMENT_PAIRS, _MAX_PADDED, _PER_LABEL_BOXES, _BAND_SHARE, probe, searches)
    configs = {
        "band": (0, 0, 0, 1 << 30, 1.0, False, {"band_pairs"}),
        "blocks": (0, 0, 0, 1 << 30, 0.0, False, {"band_pairs", "blocks", "greedy_bits"}),  # band declines
        "probe": (0, 0, 0, 1 << 30, 0.0, True, None),  # the probe, then whatever the rest needs
        "segment": (0, 1 << 40, 0, 1 << 30, 1.0, False, {"segment_pairs"}),
        "padded": (0, 0, 1 << 40, 1 << 30, 1.0, False, {"padded_pairs"}),
        "per_label": (256, 0, 0, 1, 1.0, False, {"greedy_pairs", "greedy_bits"}),  # ~60 boxes a label
        "small": (n, 0, 0, 1 << 30, 1.0, False, {"greedy_pairs", "greedy_bits"}),
    }
    for path, (small, limit, padded, per_label, share, probe, calls) in configs.items():
        monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)  # the tensor path's searches
        monkeypatch.setattr(nms_module, "_SMALL", small)
        monkeypatch.setattr(nms_module, "_MAX_SEGMENT_PAIRS", limit)  # 0: never segment pairs
        monkeypatch.setattr(nms_module, "_SEGMENT_PAIRS_PER_BOX", 1 << 30)
        monkeypatch.setattr(nms_module, "_MAX_PADDED", padded)
        monkeypatch.setattr(nms_module, "_PER_LABEL_BOXES", per_label)
        monkeypatch.setattr(nms_module, "_OWN_SOLVE_BOXES", per_label)
        monkeypatch.setattr(nms_module, "_BAND_SHARE", share)
        monkeypatch.setattr(nms_module, "_PROBE", probe)
        spy = _PathSpy(monkeypatch)
        batched = batched_nms(boxes, scores, idxs, 0.5)
        assert calls is None or set(spy.calls) <= calls, (path, spy.calls)
        assert "probe" in spy.calls if probe else "probe" not in spy.calls, (path, spy.calls)
        results[path] = (batched, nms(boxes, scores, 0.3))
        monkeypatch.undo()
    assert results["band"][0].tolist() == naive_batched_nms(boxes, scores, idxs, 0.5)
    assert results["band"][1].tolist() == naive_nms(boxes, scores, 0.3)
    for path in ("blocks", "probe", "segment", "padded", "per_label", "small"):
        assert torch.equal(results[path][0], results["band"][0]), path
    for path in ("blocks", "probe", "small"):
        assert torch.equal(results[path][1], results["band"][1]), path


def test_band_sweep_and_tiles_agree(monkeypatch):
    # Inside the x-band, candidates are tested one by one (few x-neighbours) or in tiles.
    pairs_module = importlib.import_module("structpred.ops.nms_pairs")
    monkeypatch.setattr(nms_module, "_BAND_SHARE", 1.0)
    monkeypatch.setattr(nms_module, "_PROBE", False)  # straight to the band
    n = 600
    boxes = torch.cat([random_boxes(n - 200, seed=28, extent=600.0, max_wh=20.0), chain_boxes(200) + 50])
    scores = distinct_scores(n, seed=28)
    idxs = torch.arange(n) % 3
    answers = []
    for cost in (0, 1 << 40):  # 0: always one by one; huge: always tiles
        monkeypatch.setattr(pairs_module, "_SWEEP_COST", cost)
        answers.append((nms(boxes, scores, 0.4), batched_nms(boxes, scores, idxs, 0.5)))
    assert answers[0][0].tolist() == naive_nms(boxes, scores, 0.4)
    assert answers[0][1].tolist() == naive_batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(answers[0][0], answers[1][0]) and torch.equal(answers[0][1], answers[1][1])


def test_batched_nms_many_boxes_several_row_blocks():
    # 1,100 boxes (5 row blocks of 256), 3 classes, and a chain crossing block boundaries.
    n = 1100
    boxes = torch.cat([clustered_boxes(n - 300, seed=13, clusters=20), chain_boxes(300) + 400])
    scores = torch.cat([distinct_scores(n - 300, seed=13) * 0.5, torch.linspace(1, 0.6, 300)])
    idxs = torch.cat(
        [
            torch.randint(0, 3, (n - 300,), generator=torch.Generator().manual_seed(13)),
            torch.zeros(300, dtype=torch.int64),
        ]
    )
    for thr in (0.3, 0.5):
        check_batched(boxes, scores, idxs, thr)
    check_nms(boxes, scores, 0.5)


def test_batched_nms_zero_and_one_box():
    out = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert out.dtype == torch.int64 and out.shape == (0,)
    one = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert batched_nms(one, torch.tensor([0.2]), torch.tensor([4]), 0.5).tolist() == [0]


def test_batched_nms_empty_with_any_idxs_dtype():
    # torchvision returns an empty result for empty input whatever idxs' dtype (issue 15).
    for idxs in (torch.zeros(0), torch.zeros(0, dtype=torch.int32)):
        out = batched_nms(torch.zeros(0, 4), torch.zeros(0), idxs, 0.5)
        assert out.dtype == torch.int64 and out.shape == (0,)
    # torchvision's own test_batched_nms_implementations: empty boxes, scores None, 1-d boxes
    empty = torch.empty((0,), dtype=torch.int64)
    for boxes, scores, idxs in ((empty, None, empty), (torch.zeros(0, 4), None, None)):
        out = batched_nms(boxes, scores, idxs, 0.5)  # type: ignore[arg-type]
        assert out.dtype == torch.int64 and out.shape == (0,)


# ---------------------------------------------------------------------------- worst case, numerics


def test_nms_long_chain_one_pass():
    # 3,000 chained boxes: each decision depends on the previous one. The greedy scan is one
    # pass over the pairs (no rounds), and the x-band keeps the pair search near-linear.
    n = 3000
    boxes = chain_boxes(n)
    scores = torch.linspace(1, 0, n)
    assert nms(boxes, scores, 0.5).tolist() == list(range(0, n, 2))
    assert nms(boxes, scores, 0.4).tolist() == list(range(0, n, 3))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(21))
    assert perm[nms(boxes[perm], scores[perm], 0.5)].tolist() == list(range(0, n, 2))


def test_device_rounds_fallback_equals_host_scan(monkeypatch):
    # The accelerator path prunes with tensor-only rounds before the host scan; with no pair
    # budget it solves everything on the device. Run it on CPU against the naive loop.
    original = nms_module._resolve
    monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)  # the tensor path
    monkeypatch.setattr(nms_module, "_DEVICE_PAIRS_PER_BOX", 0)
    monkeypatch.setattr(nms_module, "_BAND_SHARE", 1.0)  # the band and its pair list, always
    monkeypatch.setattr(nms_module, "_PROBE", False)  # (dense inputs would be solved by the probe)
    monkeypatch.setattr(
        nms_module, "_resolve", lambda n, s, d, device_rounds: original(n, s, d, device_rounds=True)
    )
    calls = []
    scan_module = importlib.import_module("structpred.ops.nms_scan")
    prune = scan_module.prune_on_device
    monkeypatch.setattr(scan_module, "prune_on_device", lambda *a: calls.append(a[0]) or prune(*a))
    n = 400
    boxes = torch.cat([clustered_boxes(n - 150, seed=22), chain_boxes(150) + 350])
    scores = distinct_scores(n, seed=22)
    for thr in (0.0, 0.5, 0.7):
        check_nms(boxes, scores, thr)
    check_nms(chain_boxes(300), torch.linspace(1, 0, 300), 0.5)
    check_batched(boxes, scores, torch.arange(n) % 3, 0.5)
    assert calls, "the device path did not run"
    keep, src, dst = prune(4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), 0)
    assert keep.tolist() == [False, True, False, True] and src.numel() == 0


@pytest.mark.parametrize("n", [60, 300])
def test_nms_negative_and_nan_thresholds(n):
    # IoU > negative threshold holds for disjoint boxes too: the x-band must not prune then.
    boxes = random_boxes(n, seed=23, extent=2000.0)
    scores = distinct_scores(n, seed=23)
    check_nms(boxes, scores, -0.5)
    assert nms(boxes, scores, -0.5).tolist() == [int(scores.argmax())]
    assert nms(boxes, scores, float("nan")).tolist() == scores.argsort(descending=True).tolist()


@pytest.mark.parametrize("n", [40, 300])
def test_nms_non_finite_and_degenerate_boxes(n):
    # NaN and infinite corners give NaN or 0 IoUs (never > thr), zero-area boxes 0/0; the
    # answer is still the naive loop's, in both the small and the banded search.
    boxes = clustered_boxes(n, seed=24)
    boxes[::7, 0] = float("nan")
    boxes[1::9, 2] = float("inf")
    boxes[2::11, :2] = float("-inf")
    boxes[3::13, 2] = boxes[3::13, 0]  # zero width
    scores = distinct_scores(n, seed=24)
    for thr in (0.0, 0.5):
        check_nms(boxes, scores, thr)
        check_batched(boxes, scores, torch.arange(n) % 2, thr)


def test_nms_float16_large_boxes_computed_in_float32():
    # torchvision's own float16 case: areas ~6e5 overflow float16 (max 65504) to inf, the
    # IoU becomes NaN and nothing would be suppressed. Computed in float32: keep [1].
    boxes = torch.tensor(
        [
            [285.3538, 185.5758, 1193.5110, 851.4551],
            [285.1472, 188.7374, 1192.4984, 851.0669],
            [279.2440, 197.9812, 1189.4746, 849.2019],
        ]
    )
    scores = torch.tensor([0.6370, 0.7569, 0.3966])
    assert nms(boxes, scores, 0.2).tolist() == [1]
    assert nms(boxes.half(), scores.half(), 0.2).tolist() == [1]
    assert batched_nms(boxes.half(), scores.half(), torch.zeros(3, dtype=torch.int64), 0.2).tolist() == [1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [80, 300])
def test_nms_half_precisions_equal_float32_of_the_same_boxes(dtype, n):
    # The upcast is exact, so the answer is the float32 answer on the rounded boxes.
    boxes = (clustered_boxes(n, seed=25) * 3).to(dtype)
    scores = distinct_scores(n, seed=25).to(dtype)
    for thr in (0.3, 0.7):
        expected = naive_nms(boxes.float(), scores.float(), thr)
        assert nms(boxes, scores, thr).tolist() == expected
        # Under CPU autocast too (torchvision upcasts there; NMS runs outside autocast's lists).
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert nms(boxes, scores, thr).tolist() == expected


def test_nms_quantized_boxes_use_the_integer_representation():
    # Scale and zero point cancel in the IoU, as in torchvision's quantized kernel.
    g = torch.Generator().manual_seed(26)
    xy = torch.randint(0, 200, (120, 2), generator=g).float()
    boxes = torch.cat([xy, xy + torch.randint(1, 55, (120, 2), generator=g)], 1)
    scores = torch.rand(120, generator=g)
    qboxes = torch.quantize_per_tensor(boxes, scale=1.0, zero_point=0, dtype=torch.quint8)
    qscores = torch.quantize_per_tensor(scores, scale=1 / 256, zero_point=0, dtype=torch.quint8)
    for thr in (0.3, 0.5):
        expected = naive_nms(qboxes.int_repr().float(), qscores.int_repr().float(), thr)
        assert nms(qboxes, qscores, thr).tolist() == expected
    scaled = torch.quantize_per_tensor(boxes / 2 + 3, scale=0.5, zero_point=0, dtype=torch.quint8)
    assert nms(scaled, qscores, 0.5).tolist() == nms(qboxes, qscores, 0.5).tolist()


def test_nms_fx_symbolic_trace_records_one_node():
    class Post(torch.nn.Module):
        def forward(self, boxes, scores, labels):
            return nms(boxes, scores, 0.5), batched_nms(boxes * 1, scores, labels, 0.4)

    traced = torch.fx.symbolic_trace(Post())
    targets = [node.target for node in traced.graph.nodes if node.op == "call_function"]
    assert nms in targets and batched_nms in targets
    boxes, scores = clustered_boxes(300, seed=27), distinct_scores(300, seed=27)
    labels = torch.arange(300) % 4
    for got, want in zip(traced(boxes, scores, labels), Post()(boxes, scores, labels), strict=True):
        assert torch.equal(got, want)


# ---------------------------------------------------------------------------- property


@st.composite
def nms_problems(draw):
    n = draw(st.integers(min_value=0, max_value=40))
    coord = st.floats(min_value=0.0, max_value=60.0, allow_nan=False, width=32)
    side = st.floats(min_value=0.5, max_value=40.0, allow_nan=False, width=32)
    rows = draw(st.lists(st.tuples(coord, coord, side, side), min_size=n, max_size=n))
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float32).reshape(n, 4)
    # Few distinct score values, so ties are common.
    score_values = st.one_of(st.sampled_from([0.1, 0.5, 0.9]), st.floats(0.0, 1.0, width=32))
    scores = torch.tensor(draw(st.lists(score_values, min_size=n, max_size=n)), dtype=torch.float32)
    thr = draw(st.one_of(st.sampled_from(THRESHOLDS), st.floats(0.0, 1.0)))
    return boxes, scores, thr


@settings(max_examples=80, deadline=None)
@given(problem=nms_problems())
def test_property_nms(problem):
    boxes, scores, thr = problem
    keep = nms(boxes, scores, thr)
    kept = keep.tolist()
    n = boxes.shape[0]
    assert len(set(kept)) == len(kept) and all(0 <= i < n for i in kept)
    assert all(scores[a] >= scores[b] for a, b in zip(kept, kept[1:], strict=False))
    # No two kept boxes overlap more than the threshold.
    for pos, i in enumerate(kept):
        others = kept[pos + 1 :]
        if others:
            assert not (iou_one_to_many(boxes[i], boxes[others]).double() > thr).any()
    # Every dropped box is covered by a kept box that comes before it (higher score, or an
    # equal score and a smaller index).
    for j in sorted(set(range(n)) - set(kept)):
        before = [i for i in kept if scores[i] > scores[j] or (scores[i] == scores[j] and i < j)]
        assert before, j
        assert (iou_one_to_many(boxes[j], boxes[before]).double() > thr).any(), j
    # ...and the whole answer is the greedy one.
    assert kept == naive_nms(boxes, scores, thr)


# ---------------------------------------------------------------------------- bad input


def test_nms_bad_boxes_raise():
    scores = torch.ones(5)
    with pytest.raises(ValueError, match=r"boxes must have shape \[(N|\.\.\.), 4\], got \(5, 3\)"):
        nms(torch.zeros(5, 3), scores, 0.5)
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \(2, 5, 4\)"):
        nms(torch.zeros(2, 5, 4), scores, 0.5)
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \(4,\)"):
        nms(torch.zeros(4), scores, 0.5)
    with pytest.raises(ValueError, match="boxes must be a Tensor"):
        nms([[0.0, 0.0, 1.0, 1.0]], torch.ones(1), 0.5)
    with pytest.raises(ValueError, match=r"boxes must have shape \[(N|\.\.\.), 4\], got \(5, 3\)"):
        batched_nms(torch.zeros(5, 3), scores, torch.zeros(5, dtype=torch.int64), 0.5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_nms_integer_boxes_raise(dtype):
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]]).to(dtype)
    with pytest.raises(ValueError, match=rf"boxes must be a floating point tensor, got {dtype}"):
        nms(boxes, torch.ones(2), 0.5)
    with pytest.raises(ValueError, match="boxes must be a floating point tensor"):
        batched_nms(boxes, torch.ones(2), torch.zeros(2, dtype=torch.int64), 0.5)


@pytest.mark.parametrize(
    "scores", [torch.ones(4), torch.ones(6), torch.ones(5, 1), torch.tensor(0.5), [0.1] * 5, None]
)
def test_nms_scores_mismatch_raise(scores):
    boxes = random_boxes(5, seed=0)
    with pytest.raises(ValueError, match=r"scores must be a Tensor\[5\] \(one per box\), got"):
        nms(boxes, scores, 0.5)
    with pytest.raises(ValueError, match=r"scores must be a Tensor\[5\]"):
        batched_nms(boxes, scores, torch.zeros(5, dtype=torch.int64), 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_batched_nms_float_idxs_raise(dtype):
    boxes = random_boxes(5, seed=0)
    with pytest.raises(ValueError, match=rf"idxs must hold integer categories, got {dtype}"):
        batched_nms(boxes, torch.ones(5), torch.zeros(5, dtype=dtype), 0.5)


@pytest.mark.parametrize(
    "idxs",
    [
        torch.zeros(4, dtype=torch.int64),
        torch.zeros(6, dtype=torch.int64),
        torch.zeros(5, 1, dtype=torch.int64),
        [0, 0, 0, 0, 0],
    ],
)
def test_batched_nms_idxs_mismatch_raise(idxs):
    boxes = random_boxes(5, seed=0)
    with pytest.raises(ValueError, match=r"idxs must be a Tensor\[5\] \(one per box\), got"):
        batched_nms(boxes, torch.ones(5), idxs, 0.5)
