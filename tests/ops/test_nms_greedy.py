"""The bitmask scan, the probe blocks and the adversarial distributions of ``structpred bench ops``.

References: a textbook greedy loop over a boolean overlap matrix, and the naive NMS loop of
``tests/ops/test_nms.py`` (no torchvision here; see ``tests/parity``).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from structpred.bench.ops import nms_boxes
from structpred.ops import batched_nms, nms

from .test_nms import _PathSpy, check_batched, check_nms, clustered_boxes, distinct_scores, random_boxes

nms_module = importlib.import_module("structpred.ops.nms")
scan_module = importlib.import_module("structpred.ops.nms_scan")


def naive_greedy(over: np.ndarray) -> list[int]:
    """Rows kept by greedy suppression on ``over [R, R]``: only ``over[i, j]``, ``i < j``, counts."""
    dropped = [False] * over.shape[0]
    kept = []
    for i in range(over.shape[0]):
        if dropped[i]:
            continue
        kept.append(i)
        for j in range(i + 1, over.shape[0]):
            dropped[j] = dropped[j] or bool(over[i, j])
    return kept


@pytest.mark.parametrize("r", [1, 2, 7, 8, 9, 63, 64, 65, 200, 257])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 1.0])
def test_greedy_bits_and_pairs_equal_the_naive_scan(r, density):
    rng = np.random.default_rng(r * 10 + int(density * 100))
    upper = np.triu(rng.random((r, r)) < density, 1)
    symmetric = upper | upper.T | np.eye(r, dtype=bool)  # what an IoU matrix looks like
    noisy = upper | np.tril(rng.random((r, r)) < 0.5)  # at and below the diagonal: ignored
    expected = naive_greedy(upper)
    for over in (upper, symmetric, noisy):
        assert scan_module.greedy_bits(over) == expected
        assert scan_module.greedy_pairs(over) == expected


def test_greedy_bits_chain_and_star():
    r = 100
    chain = np.zeros((r, r), dtype=bool)
    chain[np.arange(r - 1), np.arange(1, r)] = True  # i drops i + 1
    assert scan_module.greedy_bits(chain) == list(range(0, r, 2))
    star = np.zeros((r, r), dtype=bool)
    star[0, 1:] = True  # the first drops every other
    assert scan_module.greedy_bits(star) == [0]
    star[1, 2:] = True  # row 1 is dropped, so its row does not count
    assert scan_module.greedy_bits(star) == [0]


KINDS = ("dense", "identical", "disjoint", "huge", "ties", "clustered", "chain")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [0, 1, 2, 10, 200, 700])
def test_bench_distributions_equal_the_naive_loop(kind, n):
    boxes, scores = nms_boxes(kind, n, torch.Generator().manual_seed(n + 5))
    for thr in (0.3, 0.5):
        check_nms(boxes, scores, thr)
    idxs = torch.randint(0, 6, (n,), generator=torch.Generator().manual_seed(n))
    check_batched(boxes, scores, idxs, 0.5)


def test_dense_clusters_batched_large():
    # The case of issue 15's leftovers: 2,000 boxes around 5 objects in 6 labels.
    boxes, scores = nms_boxes("dense", 2000, torch.Generator().manual_seed(7))
    idxs = torch.randint(0, 6, (2000,), generator=torch.Generator().manual_seed(7))
    check_batched(boxes, scores, idxs, 0.5)
    check_nms(boxes, scores, 0.5)


def test_probe_hands_the_rest_to_the_pair_searches(monkeypatch):
    # The best-scored boxes are one dense cluster (the probe's blocks drop it), the rest are
    # sparse (the probe stops and the band takes them): both parts must join exactly.
    monkeypatch.setattr(nms_module, "_HOST_BOXES", 0)  # the tensor path
    spy = _PathSpy(monkeypatch)
    dense = clustered_boxes(300, seed=30, clusters=1)
    sparse = random_boxes(500, seed=30, extent=2000.0, max_wh=30.0)
    boxes = torch.cat([dense, sparse])
    scores = torch.cat([1 + distinct_scores(300, seed=30), distinct_scores(500, seed=31)])
    check_nms(boxes, scores, 0.5)
    assert "probe" in spy.calls and "band_pairs" in spy.calls, spy.calls
    # Chains crossing from the cluster's tail into the sparse part.
    boxes[300:320] = dense[-20:] + torch.linspace(0, 40, 20)[:, None]
    check_nms(boxes, scores, 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [0, (1 << 23) - 3, 1 << 40])
def test_blocks_label_axis_is_exact(dtype, offset):
    # Labels ride on the IoU as a third interval axis [l, l + 1): exact while the boxes' dtype
    # holds l + 1, else dense label ids are used. Large offsets must not merge labels.
    boxes = clustered_boxes(600, seed=32, clusters=4).to(dtype)
    scores = distinct_scores(600, seed=32, dtype=dtype)
    idxs = torch.randint(0, 3, (600,), generator=torch.Generator().manual_seed(32)) + offset
    for thr in (0.5, 0.0, -0.5):  # a negative threshold passes other labels' IoU 0: masked
        check_batched(boxes, scores, idxs, thr)
    small = slice(0, 150)  # one matrix
    check_batched(boxes[small], scores[small], idxs[small], -0.5)


def test_blocks_non_finite_boxes():
    boxes = clustered_boxes(500, seed=33, clusters=3)
    boxes[::7, 0] = float("nan")
    boxes[1::9, 2] = float("inf")
    boxes[3::13, 2] = boxes[3::13, 0]  # zero width
    scores = distinct_scores(500, seed=33)
    for thr in (0.0, 0.5):
        check_nms(boxes, scores, thr)
        check_batched(boxes, scores, torch.arange(500) % 3, thr)


def test_one_box_and_empty_skip_all_work():
    for boxes in (torch.zeros(1, 4), torch.full((1, 4), float("nan"))):
        assert nms(boxes, torch.tensor([float("nan")]), 0.5).tolist() == [0]
        assert batched_nms(boxes, torch.tensor([0.3]), torch.tensor([7]), 0.5).tolist() == [0]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("n", [2, 9, 64, 200])
def test_host_path_equals_the_tensor_path(monkeypatch, n):
    # On a CPU the whole NMS runs in NumPy (nms_small); the tensor path must agree bit for bit.
    g = torch.Generator().manual_seed(n)
    cases = [
        (clustered_boxes(n, seed=n, clusters=3), distinct_scores(n, seed=n)),
        (random_boxes(n, seed=n, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g).double() / 3),
    ]
    boxes = clustered_boxes(n, seed=n + 1)
    boxes[::5, 2] = float("inf")
    boxes[1::7, 1] = float("nan")
    scores = torch.rand(n, generator=g)
    scores[::4] = float("nan")  # NumPy sorts NaN last, torch first: the host path steps aside
    cases.append((boxes, scores))
    idxs = torch.randint(-2, 3, (n,), generator=g) * (1 << 40)
    answers = []
    for host in (1 << 20, 0):
        monkeypatch.setattr(nms_module, "_HOST_BOXES", host)
        answers.append(
            [nms(b, s, thr) for b, s in cases for thr in (0.0, 0.5, -1.0)]
            + [batched_nms(b, s, idxs, thr) for b, s in cases for thr in (0.5, -1.0)]
        )
    for host, tensor in zip(*answers, strict=True):
        assert torch.equal(host, tensor)
    check_nms(*cases[1], 0.5)
    check_batched(*cases[0], idxs, -1.0)
