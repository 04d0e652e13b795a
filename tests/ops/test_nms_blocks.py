"""The NumPy path's probe blocks (``structpred.ops.nms_probe``) and the choices that reach them
(``nms_small._solve``: the x-density shortcut, the forced blocks), against the naive loop of
``tests/ops/test_nms.py`` (no torchvision here; see ``tests/parity``).

A block solves its best rows among themselves, then tests only its kept rows against the other
undecided boxes; ``_solve`` forces blocks to the end where the sweep would test many x-candidates
and most boxes are dropped, or where the sweep steps aside (long uneven runs).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from structpred.bench.ops import nms_boxes
from structpred.ops import batched_nms, nms

from .test_nms import check_batched, check_nms, clustered_boxes, distinct_scores, naive_nms, random_boxes

small = importlib.import_module("structpred.ops.nms_small")
probe = importlib.import_module("structpred.ops.nms_probe")
nms_module = importlib.import_module("structpred.ops.nms")


def _forced(monkeypatch) -> list[int]:
    """Spy: the sizes of the undecided sets ``_solve`` hands to the forced blocks."""
    sizes: list[int] = []
    original = small._blocks

    def wrapper(table, test, lab, live, keep, force):
        sizes.append(live.size)
        return original(table, test, lab, live, keep, force)

    monkeypatch.setattr(small, "_blocks", wrapper)
    return sizes


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("n", [150, 700])
def test_blocks_of_dense_clusters_equal_the_naive_loop(thr, n):
    # One to three clusters: the probe's two-step blocks (and their last block) decide.
    for clusters in (1, 3):
        boxes = clustered_boxes(n, seed=n + clusters, clusters=clusters)
        check_nms(boxes, distinct_scores(n, seed=n), thr)


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_block_size_does_not_change_the_answer(monkeypatch, rows):
    boxes, scores = clustered_boxes(500, seed=3, clusters=2), distinct_scores(500, seed=3)
    monkeypatch.setattr(probe, "_BLOCK_ROWS", rows)
    monkeypatch.setattr(probe, "_FINISH_BOXES", 8)
    for thr in (0.3, 0.6):
        check_nms(boxes, scores, thr)
        check_batched(boxes, scores, torch.arange(500) % 3, thr)


def test_forced_blocks_when_most_boxes_drop(monkeypatch):
    # The best box drops few (a small cluster first), the x-runs are long and most of the next
    # boxes drop: the blocks finish instead of the sweep (dense bench boxes above 2,000 too).
    sizes = _forced(monkeypatch)
    boxes, scores = nms_boxes("dense", 2500, torch.Generator().manual_seed(4))
    check_nms(boxes, scores, 0.5)
    assert sizes, "the forced blocks never ran"
    sizes.clear()
    idxs = torch.randint(0, 4, (2500,), generator=torch.Generator().manual_seed(4))
    check_batched(boxes, scores, idxs, 0.5)  # four large labels, each alone (no tensor path)
    assert sizes


def test_sparse_inputs_never_force_the_blocks(monkeypatch):
    # (checked against the tensor path: the naive loop is slow with ~1,000 boxes kept)
    sizes = _forced(monkeypatch)
    cases = [
        nms_boxes(kind, 1100, torch.Generator().manual_seed(5))
        for kind in ("uniform", "huge", "chain", "tiny")
    ]
    got = [nms(boxes, scores, 0.5) for boxes, scores in cases]
    assert sizes == []
    monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)
    for (boxes, scores), keep in zip(cases, got, strict=True):
        assert torch.equal(keep, nms(boxes, scores, 0.5))


def test_large_inputs_stay_on_the_numpy_path(monkeypatch):
    # Dense inputs and a few large labels above 2,000 boxes no longer step aside.
    g = torch.Generator().manual_seed(6)
    boxes, scores = nms_boxes("dense", 2100, g)
    idxs = torch.randint(0, 6, (2100,), generator=g)
    b, s = boxes.numpy(), scores.numpy()
    assert small.host_nms(b, s, 0.5, None) is not None
    assert small.host_nms(b, s, 0.5, idxs.numpy()) is not None
    got = nms(boxes, scores, 0.5), batched_nms(boxes, scores, idxs, 0.5)
    monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)  # the tensor path agrees
    assert torch.equal(got[0], nms(boxes, scores, 0.5))
    assert torch.equal(got[1], batched_nms(boxes, scores, idxs, 0.5))
    assert got[0].tolist() == naive_nms(boxes, scores, 0.5)


@pytest.mark.parametrize("kind", ["dense", "identical", "clustered"])
def test_ties_in_blocks(kind):
    # Three score levels: the earlier index wins among equals, inside and across blocks.
    n = 600
    boxes, _ = nms_boxes(kind, n, torch.Generator().manual_seed(7))
    scores = (torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(7)) / 3).float()
    check_nms(boxes, scores, 0.5)
    check_batched(boxes, scores, torch.arange(n) % 2, 0.5)


def test_nan_scores_empty_and_one_box(monkeypatch):
    boxes, scores = nms_boxes("dense", 800, torch.Generator().manual_seed(8))
    scores = scores.clone()
    scores[::11] = float("nan")  # the tensor path answers (NumPy sorts NaN last, torch first)
    assert small.host_nms(boxes.numpy(), scores.numpy(), 0.5, None) is None
    got = nms(boxes, scores, 0.5)
    monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)
    assert torch.equal(got, nms(boxes, scores, 0.5))
    monkeypatch.undo()
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []
    assert nms(boxes[:1], scores[:1], 0.5).tolist() == [0]
    assert batched_nms(boxes[:1], scores[:1], torch.zeros(1, dtype=torch.int64), 0.5).tolist() == [0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precisions_in_blocks(dtype):
    # Computed in float32 (exact upcast): the float32 answer of the rounded boxes.
    boxes, scores = nms_boxes("dense", 900, torch.Generator().manual_seed(9))
    low, low_scores = boxes.to(dtype), scores.to(dtype)
    expected = naive_nms(low.float(), low_scores.float(), 0.5)
    assert nms(low, low_scores, 0.5).tolist() == expected
    idxs = torch.arange(900) % 3
    assert torch.equal(
        batched_nms(low, low_scores, idxs, 0.5), batched_nms(low.float(), low_scores.float(), idxs, 0.5)
    )


@pytest.mark.parametrize("thr", [0.5, 1 / 3])
def test_pairs_straddling_the_threshold_in_blocks(thr):
    # Integer boxes whose IoU is exactly the threshold (not dropped) or one pixel either side,
    # repeated so that the probe's blocks (not the matrix) meet them.
    rng = np.random.default_rng(10)
    base = [[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 19], [0, 0, 10, 21], [0, 0, 10, 30], [0, 0, 10, 29]]
    parts = []
    for _ in range(120):
        dx, dy = rng.integers(0, 3), rng.integers(0, 3)
        parts.append(torch.tensor(base, dtype=torch.float32) + torch.tensor([dx, dy, dx, dy]) * 1.0)
    boxes = torch.cat(parts)  # (720, 4): each copy of the six overlaps the others
    scores = distinct_scores(boxes.shape[0], seed=10)
    check_nms(boxes, scores, thr)
    check_batched(boxes, scores, torch.arange(boxes.shape[0]) % 2, thr)


def test_x_density_estimate_and_mostly_dropped():
    boxes = random_boxes(2000, seed=11, extent=1000.0, max_wh=50.0).numpy()
    table = small._table(boxes)
    cut = small._cut(0.5, table)
    estimate = small._x_density(table, cut)
    actual = small._runs(table, None, cut)[3] / 2000
    assert 0.75 * actual < estimate < 1.25 * actual
    same = small._table(np.tile(np.array([[1.0, 2.0, 30.0, 40.0]], dtype=np.float32), (50, 1)))
    assert not small._x_density(same, cut) < small._PROBE_DENSITY  # all x1 equal: the probe
    test = small.host_threshold(0.5, np.dtype(np.float32))
    assert probe._mostly_dropped(same, test, None, np.arange(50))
    assert not probe._mostly_dropped(table, test, None, np.arange(2000))
    labels = np.arange(50) % 25  # pairs of one label only: half the rows drop, not most
    assert not probe._mostly_dropped(same, test, labels, np.arange(50))
