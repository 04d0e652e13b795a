"""The NumPy path of NMS on a CPU (``structpred.ops.nms_small``), branch by branch, against the
naive loop of ``tests/ops/test_nms.py`` (no torchvision here; see ``tests/parity``).

Each case checks which branches ran (a spy on the module's functions), so a branch that is
never reached cannot pass unnoticed.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from structpred.bench.ops import nms_boxes
from structpred.ops import nms

from .test_nms import check_batched, check_nms, clustered_boxes, distinct_scores, naive_nms, random_boxes

small = importlib.import_module("structpred.ops.nms_small")
probe = importlib.import_module("structpred.ops.nms_probe")
nms_module = importlib.import_module("structpred.ops.nms")


class _Spy:
    """Records the calls of ``nms_small``'s branches (and the bails, calls that returned None);
    ``_blocks`` is recorded where ``_solve`` forces the probe's blocks to the end."""

    NAMES = ("_matrix", "_probe", "_sweep", "_solve", "_blocks")

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in self.NAMES:
            original = getattr(small, name)

            def wrapper(*args, _original=original, _name=name, **kwargs):
                out = _original(*args, **kwargs)
                self.calls.append(_name if out is not None else f"{_name} bailed")
                if _name == "_sweep" and out is not None:
                    by_x, _, count, _ = args[0]
                    limit = max(small._WINDOW_SHARE * int(count.sum()), small._WINDOW_IOUS)
                    self.calls.append("tails" if int(count.max()) * by_x.size > limit else "window")
                return out

            monkeypatch.setattr(small, name, wrapper)


def _mixed(n: int, seed: int) -> torch.Tensor:
    """Small boxes, a few wide ones (uneven x-runs: the sweep's window and its tails)."""
    boxes = random_boxes(n, seed=seed, extent=1500.0, max_wh=40.0)
    boxes[::37, 2] = boxes[::37, 0] + 900.0
    return boxes


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("few", {"_matrix"}),  # up to 32 boxes: one matrix
        ("sparse", {"_solve", "_sweep", "window"}),  # few x-neighbours a box: the sweep, no probe
        ("uneven", {"_solve", "_sweep", "tails"}),  # long runs gathered pair by pair
        ("dense", {"_solve", "_probe"}),  # the probe's blocks decide everything
        ("dense_then_sparse", {"_solve", "_probe", "_sweep", "tails"}),  # the sweep takes the rest
    ],
)
@pytest.mark.parametrize("thr", [0.0, 0.5, 0.7])
def test_each_branch_equals_the_naive_loop(monkeypatch, case, expected, thr):
    if case == "few":
        boxes, scores = clustered_boxes(30, seed=1, clusters=3), distinct_scores(30, seed=1)
    elif case == "sparse":
        boxes, scores = random_boxes(400, seed=2, extent=1500.0, max_wh=40.0), distinct_scores(400, seed=2)
    elif case == "uneven":
        boxes, scores = _mixed(500, seed=3), distinct_scores(500, seed=3)
    elif case == "dense":
        boxes, scores = clustered_boxes(300, seed=4, clusters=1), distinct_scores(300, seed=4)
    else:
        dense = clustered_boxes(200, seed=5, clusters=1)
        sparse = random_boxes(300, seed=5, extent=2000.0, max_wh=30.0) + 300
        boxes = torch.cat([dense, sparse])
        scores = torch.cat([1 + distinct_scores(200, seed=5), distinct_scores(300, seed=6)])
        monkeypatch.setattr(small, "_PROBE_DENSITY", 0.0)  # (sparse in x on average: the probe forced)
    spy = _Spy(monkeypatch)
    check_nms(boxes, scores, thr)
    if thr == 0.5:  # (other thresholds may take other branches)
        assert set(spy.calls) == expected, spy.calls


@pytest.mark.parametrize(
    ("labels", "density", "expected"),
    [
        (3, 0.0, {"_solve", "_probe", "_sweep", "tails"}),  # the best box of each label first
        (3, None, {"_solve", "_sweep", "tails"}),  # sparse in x: no probe
        (40, None, {"_solve", "_sweep", "window"}),  # many labels: no probe
        (2, 0.0, {"_solve", "_probe", "_sweep", "tails"}),  # large labels: each solved alone
    ],
)
def test_labels_equal_the_naive_loop(monkeypatch, labels, density, expected):
    n = 600
    clustered = clustered_boxes(n // 2, seed=7, clusters=4)
    boxes = torch.cat([clustered, random_boxes(n // 2, seed=7, extent=900.0)])
    scores = distinct_scores(n, seed=7)
    idxs = torch.randint(0, labels, (n,), generator=torch.Generator().manual_seed(7))
    if density is not None:
        monkeypatch.setattr(small, "_PROBE_DENSITY", density)
    spy = _Spy(monkeypatch)
    check_batched(boxes, scores, idxs, 0.5)
    assert set(spy.calls) == expected, spy.calls
    for thr in (0.0, 0.7):
        check_batched(boxes, scores, idxs, thr)
    if labels == 2:  # each label solved alone: one _solve per label
        assert spy.calls.count("_solve") == 2 * 2 + 2  # (three thresholds; the matrix never)


def test_heads_are_the_best_box_of_each_label():
    lab = np.array([3, 1, 3, 0, 1, 2, 0])
    assert small._heads(lab).tolist() == [0, 1, 3, 5]
    assert small._heads(None).tolist() == [0]


@pytest.mark.parametrize("offset", [0, -(1 << 40), (1 << 62)])
def test_large_and_negative_labels(offset):
    # Labels become small ids (key = label * (N + 1) + rank must not overflow int64).
    n = 300
    boxes, scores = clustered_boxes(n, seed=8, clusters=6), distinct_scores(n, seed=8)
    idxs = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(8)) * (1 << 20) + offset
    check_batched(boxes, scores, idxs, 0.5)
    assert small._dense(np.array([5, -3, 5, 1 << 62, -(1 << 62)])).tolist() == [2, 1, 2, 3, 0]


def test_sweep_bail_goes_to_the_blocks_or_the_tensor_path(monkeypatch):
    # Long uneven runs: with few labels the probe's blocks finish the job (no tensor path any
    # more); with many labels (no probe) the sweep steps aside (None) and the tensor path answers.
    monkeypatch.setattr(small, "_BAIL_BOXES", 64)
    monkeypatch.setattr(small, "_BAIL_TAILS", 0)
    monkeypatch.setattr(small, "_WINDOW_SHARE", 0)  # the window holds 3/4 of the runs: tails
    monkeypatch.setattr(small, "_WINDOW_IOUS", 0)
    spy = _Spy(monkeypatch)
    boxes, scores = _mixed(500, seed=10), distinct_scores(500, seed=10)
    check_nms(boxes, scores, 0.5)
    assert "_sweep bailed" in spy.calls and "_blocks" in spy.calls, spy.calls
    assert small.host_nms(boxes.numpy(), scores.numpy(), 0.5, None) is not None
    many = torch.arange(500) % 40
    assert small.host_nms(boxes.numpy(), scores.numpy(), 0.5, many.numpy()) is None
    check_batched(boxes, scores, many, 0.5)
    check_batched(boxes, scores, torch.arange(500) % 3, 0.5)


def test_steps_aside_for_nan_scores_and_negative_thresholds(monkeypatch):
    boxes = clustered_boxes(100, seed=11, clusters=4)
    scores = distinct_scores(100, seed=11)
    scores[::9] = float("nan")  # NumPy sorts NaN last, torch first: the tensor path answers
    assert small.host_nms(boxes.numpy(), scores.numpy(), 0.5, None) is None
    got = nms(boxes, scores, 0.5)
    monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)
    assert torch.equal(got, nms(boxes, scores, 0.5))
    monkeypatch.undo()
    clean = distinct_scores(100, seed=11)
    assert small.host_nms(boxes.numpy(), clean.numpy(), -0.5, None) is None  # every pair can suppress
    check_nms(boxes, clean, -0.5)
    check_nms(boxes[:20], clean[:20], -0.5)  # the matrix takes negative thresholds
    check_batched(boxes[:20], clean[:20], torch.arange(20) % 3, -0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n", [20, 300])
def test_dtypes_and_ties(dtype, n):
    # Half precisions are computed in float32; float64 stays float64 (and has no x-IoU cut).
    boxes = clustered_boxes(n, seed=12, clusters=5).to(dtype)
    scores = (torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(12)) / 4).to(dtype)
    ref = nms(boxes.float() if dtype != torch.float64 else boxes, scores.float(), 0.5)
    assert torch.equal(nms(boxes, scores, 0.5), ref)
    wide = boxes.float() if dtype != torch.float64 else boxes
    assert nms(boxes, scores, 0.5).tolist() == naive_nms(wide, scores.float(), 0.5)


def test_empty_one_and_degenerate_boxes():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert nms(torch.ones(1, 4), torch.ones(1), 0.5).tolist() == [0]
    boxes = clustered_boxes(300, seed=13, clusters=3)
    boxes[::7, 0] = float("nan")
    boxes[1::9, 2] = float("inf")
    boxes[3::13, 2] = boxes[3::13, 0]  # zero width: no x-IoU cut (an area below 1e-30)
    boxes[5::17] = boxes[5::17].flip(1)  # reversed corners
    scores = distinct_scores(300, seed=13)
    for thr in (0.0, 0.5):
        check_nms(boxes, scores, thr)
        check_batched(boxes, scores, torch.arange(300) % 3, thr)


def test_tiny_coordinates_disable_the_cut():
    # Areas below 1e-30 are subnormal-prone: the x-IoU bound is not used, the answer stays exact.
    boxes = clustered_boxes(200, seed=14, clusters=3) * 1e-17
    scores = distinct_scores(200, seed=14)
    table = small._table(boxes.numpy())
    assert small._cut(0.5, table) == 0.0
    assert small._cut(0.5, small._table(clustered_boxes(50, seed=14).numpy())) > 0.49
    check_nms(boxes, scores, 0.5)


def test_cut_never_drops_a_pair_above_the_threshold():
    # Pairs built to straddle the threshold: whenever the float32 IoU is above it, q's x1 must be
    # below p's bound x2_p - cut * (x2_p - x1_p) (x1_q >= x1_p).
    rng = np.random.default_rng(15)
    n = 20000
    x1p = rng.uniform(0, 1000, n).astype(np.float32)
    wp = rng.uniform(1, 300, n).astype(np.float32)
    shift = (wp * rng.uniform(0, 0.6, n)).astype(np.float32)
    scale = rng.uniform(0.7, 1.3, n).astype(np.float32)
    p = np.stack([x1p, np.zeros(n), x1p + wp, np.full(n, 50.0)], 1).astype(np.float32)
    q = np.stack([x1p + shift, np.zeros(n), x1p + shift + wp * scale, np.full(n, 50.0)], 1).astype(np.float32)
    for thr in (0.3, 0.5, 0.7):
        table = small._table(np.concatenate([p, q]))
        cut = small._cut(thr, table)
        tp, tq = table[:, :n], table[:, n:]
        over = small._over(tp, tq, small.host_threshold(thr, np.dtype(np.float32)))
        bound = tp[2].astype(np.float64) - cut * (tp[2].astype(np.float64) - tp[0])
        assert over.sum() > 1000 and (~over).sum() > 1000  # both sides of the threshold are tested
        assert np.all(tq[0][over] < bound[over])


@pytest.mark.parametrize("bits", [False, True])
def test_scan_with_dropped_boxes_equals_the_naive_scan(monkeypatch, bits):
    # The scan walks pairs (or the bitmask) with boxes already dropped by the probe marked.
    monkeypatch.setattr(probe, "_PAIRS_PER_BOX", 0 if bits else 1 << 30)
    rng = np.random.default_rng(16 + bits)
    n = 120
    upper = np.triu(rng.random((n, n)) < 0.05, 1)
    dropped = rng.random(n) < 0.2
    src, dst = upper.nonzero()
    keep = probe._scan(n, src, dst, dropped=dropped)
    expected = np.ones(n, dtype=bool)
    expected[dropped] = False
    for i in range(n):
        if expected[i]:
            expected[upper[i] & (np.arange(n) > i)] = False
    expected[dropped] = False
    assert keep.tolist() == expected.tolist()


@pytest.mark.parametrize("kind", ["dense", "identical", "chain", "tiny", "huge", "ties"])
def test_bench_distributions_through_every_size_class(kind):
    # 10 (matrix), 200 (probe + sweep) and, where the naive loop is quick, 1,100 boxes (above
    # the sweep's bail size).
    for n in (10, 200, 1100) if kind in ("dense", "identical") else (10, 200):
        boxes, scores = nms_boxes(kind, n, torch.Generator().manual_seed(n + 17))
        check_nms(boxes, scores, 0.5)
        idxs = torch.randint(0, 6, (n,), generator=torch.Generator().manual_seed(n))
        check_batched(boxes, scores, idxs, 0.5)


def test_window_in_column_chunks_equals_one_window(monkeypatch):
    # Large windows are cut into column chunks (bounded memory); the pairs are the same.
    boxes, scores = random_boxes(400, seed=18, extent=1500.0, max_wh=40.0), distinct_scores(400, seed=18)
    whole = nms(boxes, scores, 0.5)
    monkeypatch.setattr(small, "_MAX_WINDOW", 64)  # a few columns per chunk
    assert torch.equal(nms(boxes, scores, 0.5), whole)
    check_nms(boxes, scores, 0.5)
    check_batched(boxes, scores, torch.arange(400) % 3, 0.5)
