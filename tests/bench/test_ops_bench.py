"""Smoke test of the NMS rows of ``structpred bench ops``: every distribution and size has a row,
each row's two callables run and agree (``nms_cases`` raises otherwise). No timing (DESIGN.md §5).
"""

from __future__ import annotations

import torch

from structpred.bench.ops import BATCHED_KINDS, NMS_KINDS, TINY_KINDS, nms_boxes, nms_cases


def test_every_nms_distribution_has_rows() -> None:
    cases = nms_cases(sizes=(30,), tiny=(0, 1))
    names = [name for name, _, _, _ in cases]
    assert len(names) == len(set(names))
    for kind in NMS_KINDS:
        assert f"nms {kind} (30 boxes)" in names
        assert (f"nms {kind} (0 boxes)" in names) == (kind in TINY_KINDS)
    for kind, labels in BATCHED_KINDS:
        assert f"batched_nms {kind}, {labels} classes (30 boxes)" in names
    assert {"dense", "identical", "disjoint", "huge", "ties"} <= set(NMS_KINDS)
    for _, ours, peer, _ in cases:
        assert torch.equal(torch.as_tensor(ours()).sort().values, torch.as_tensor(peer()).sort().values)


def test_adversarial_distributions_are_what_they_say() -> None:
    g = torch.Generator().manual_seed(0)
    boxes, _ = nms_boxes("identical", 50, g)
    assert torch.equal(boxes, boxes[:1].expand(50, 4))
    boxes, _ = nms_boxes("disjoint", 500, g)
    x1, y1, x2, y2 = boxes.unbind(1)
    overlap_w = torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None])
    overlap_h = torch.minimum(y2[:, None], y2[None]) - torch.maximum(y1[:, None], y1[None])
    touching = (overlap_w > 0) & (overlap_h > 0)
    assert touching.sum() == 500  # only each box with itself
    assert (x2 <= 1088).all() and (y2 <= 800).all()
    boxes, _ = nms_boxes("huge", 100, g)
    assert boxes[50].tolist() == [0.0, 0.0, 1088.0, 800.0]
    _, scores = nms_boxes("ties", 300, g)
    assert scores.unique().numel() <= 3
    boxes, _ = nms_boxes("dense", 1000, g)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).round(decimals=-2)
    assert centres.unique(dim=0).shape[0] < 100  # around 5 objects (not 200)
