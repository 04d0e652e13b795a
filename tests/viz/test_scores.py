"""The report's per-image scores and box confusion, against hand-worked cases and naive loops."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.viz.scores import (
    box_image_ap50,
    detection_confusion,
    greedy_matches,
    image_ap50,
    image_miou,
    mask_iou_matrix,
)


def _pred(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _gt(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}


A, B = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]


def test_image_ap50_hand_worked():
    gt = _gt([A, B], [1, 2])
    assert box_image_ap50(_pred([A, B], [0.9, 0.8], [1, 2]), gt) == pytest.approx(1.0)
    # Only the first object found: recall reaches 0.5 at precision 1 -> 51 of 101 points.
    assert box_image_ap50(_pred([A], [0.9], [1]), gt) == pytest.approx(51 / 101)
    # Wrong class: no hit.
    assert box_image_ap50(_pred([A, B], [0.9, 0.8], [2, 1]), gt) == 0.0
    # A false alarm ranked first: precision 1/2 at recall 0.5, 2/3 at recall 1 -> envelope 2/3.
    assert box_image_ap50(_pred([[50, 50, 60, 60], A, B], [0.95, 0.9, 0.8], [1, 1, 2]), gt) == pytest.approx(
        2 / 3
    )
    # A duplicate after the hit costs nothing at recall already reached.
    assert box_image_ap50(_pred([A, A, B], [0.9, 0.85, 0.8], [1, 1, 2]), gt) == pytest.approx(
        (51 + 50 * 2 / 3) / 101
    )
    # No detections at all.
    assert box_image_ap50(_pred([], [], []), gt) == 0.0


def test_image_ap50_without_objects():
    empty = _gt([], [])
    assert box_image_ap50(_pred([], [], []), empty) == 1.0
    assert box_image_ap50(_pred([A], [0.3], [1]), empty) == 1.0  # below the drawing threshold
    assert box_image_ap50(_pred([A], [0.6], [1]), empty) == 0.0


def test_image_ap50_shapes_checked():
    with pytest.raises(ValueError, match="gt_labels"):
        image_ap50(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="boxes"):
        box_image_ap50(_pred([A], [0.9], [1]) | {"boxes": torch.zeros(1, 5)}, _gt([A], [1]))


def test_greedy_matches_best_score_first_best_iou():
    ious = torch.tensor([[0.6, 0.9], [0.7, 0.8]])
    # Detection 1 has the higher score: it takes object 1 (its best), detection 0 gets object 0.
    assert greedy_matches(ious, torch.tensor([0.5, 0.9]), 0.5).tolist() == [0, 1]
    assert greedy_matches(ious, torch.tensor([0.9, 0.5]), 0.5).tolist() == [1, 0]
    assert greedy_matches(ious, torch.tensor([0.9, 0.5]), 0.85).tolist() == [1, -1]


def naive_miou(pred, target, K, ignore):
    ious = []
    for k in range(K):
        p = (pred == k) & (target != ignore)
        t = target == k
        union = int((p | t).sum())
        if union:
            ious.append(int((p & t).sum()) / union)
    return sum(ious) / len(ious) if ious else math.nan


def test_image_miou_against_naive():
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        target = torch.randint(0, 4, (12, 9), generator=g)
        target[torch.rand(12, 9, generator=g) < 0.2] = 255
        pred = torch.randint(0, 4, (12, 9), generator=g)
        assert image_miou(pred, target, 4, 255) == pytest.approx(naive_miou(pred, target, 4, 255))
    assert image_miou(target.clamp(max=3), target.clamp(max=3), 4, None) == 1.0
    assert math.isnan(image_miou(pred, torch.full_like(pred, 255), 4, 255))
    with pytest.raises(ValueError, match="outside"):
        image_miou(pred + 4, target, 4, 255)
    with pytest.raises(ValueError, match="one size"):
        image_miou(pred[:3], target, 4, 255)


def test_mask_iou_matrix():
    a = torch.zeros(2, 4, 4, dtype=torch.uint8)
    a[0, :2] = 1
    a[1, :, :2] = 1
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    b[0, :2, :2] = True
    assert mask_iou_matrix(a, b).flatten().tolist() == pytest.approx([0.5, 0.5])
    assert mask_iou_matrix(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)).item() == 0.0


def test_detection_confusion_counts_matches_false_alarms_and_misses():
    gt = _gt([A, B, [40, 40, 50, 50]], [1, 2, 3])
    pred = _pred(
        [A, B, [70, 70, 80, 80], [40, 40, 50, 50]],
        [0.9, 0.8, 0.7, 0.2],  # the last one is below the threshold: not counted, object 3 missed
        [1, 3, 2, 3],
    )
    c = detection_confusion(pred, gt, num_classes=3)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[1, 1] = 1  # right
    expected[2, 3] = 1  # object of class 2 taken for class 3
    expected[0, 2] = 1  # false alarm
    expected[3, 0] = 1  # missed
    assert torch.equal(c, expected)
    assert int(c.sum()) == 4
    with pytest.raises(ValueError, match="1..3"):
        detection_confusion(_pred([A], [0.9], [4]), gt, num_classes=3)
