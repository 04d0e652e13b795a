"""The modern YOLO's head pieces against naive references: DFL decoding and loss, the
task-aligned assigner (a per-object, per-anchor Python loop), the loss on images without objects."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.heads.yolo_assign import aligned_box_iou, task_aligned_assign
from structpred.heads.yolo_head import (
    YOLOHead,
    anchor_points,
    dfl_decode,
    dfl_loss,
    pad_targets,
    yolo_loss,
    yolo_postprocess,
)


def test_anchor_points_are_cell_centres() -> None:
    points, strides = anchor_points([(2, 3), (1, 2)], [8, 16], torch.zeros(1))
    assert points.shape == (8, 2) and strides.tolist() == [8] * 6 + [16] * 2
    assert points[:6].tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert points[6:].tolist() == [[8, 8], [24, 8]]


@pytest.mark.parametrize("reg_max", [1, 8, 16])
def test_dfl_decode_is_the_expected_bin(reg_max: int) -> None:
    g = torch.Generator().manual_seed(reg_max)
    logits = torch.randn(2, 5, 4 * reg_max, generator=g, dtype=torch.float64)
    got = dfl_decode(logits, reg_max)
    want = torch.zeros(2, 5, 4, dtype=torch.float64)
    for b in range(2):
        for a in range(5):
            for side in range(4):
                z = logits[b, a, side * reg_max : (side + 1) * reg_max].tolist()
                e = [math.exp(v - max(z)) for v in z]
                want[b, a, side] = sum(i * v for i, v in enumerate(e)) / sum(e)
    torch.testing.assert_close(got, want)


def test_dfl_loss_naive_and_gradcheck() -> None:
    R = 6
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4 * R, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(7, 4, generator=g, dtype=torch.float64) * (R + 1) - 0.5  # some clamped
    target[0, 0] = 2.0  # exactly on a bin
    got = dfl_loss(logits, target, R)
    for p in range(7):
        total = 0.0
        for side in range(4):
            y = min(max(float(target[p, side]), 0.0), R - 1 - 0.01)
            z = logits[p, side * R : (side + 1) * R].tolist()
            lse = max(z) + math.log(sum(math.exp(v - max(z)) for v in z))
            lo = int(math.floor(y))
            total += -((lo + 1 - y) * (z[lo] - lse) + (y - lo) * (z[lo + 1] - lse))
        assert abs(float(got[p].detach()) - total / 4) < 1e-10
    assert torch.autograd.gradcheck(lambda x: dfl_loss(x, target, R), (logits,))


def _naive_assign(scores, pred, points, labels, boxes, mask, topk, alpha, beta, eps=1e-9):
    """TOOD's rule, one object and one anchor at a time (see yolo_assign's docstring)."""
    B, A, K = scores.shape
    M = boxes.shape[1]
    out_labels = torch.zeros(B, A, dtype=torch.long)
    out_scores = torch.zeros(B, A, K, dtype=scores.dtype)
    out_boxes = torch.zeros(B, A, 4, dtype=scores.dtype)
    fg = torch.zeros(B, A, dtype=torch.bool)
    for b in range(B):
        iou, metric, chosen = {}, {}, {}
        for m in range(M):
            if not mask[b, m]:
                continue
            x1, y1, x2, y2 = boxes[b, m].tolist()
            inside = []
            for a in range(A):
                px, py = points[a].tolist()
                if min(px - x1, py - y1, x2 - px, y2 - py) > eps:
                    u = max(float(aligned_box_iou(boxes[b, m], pred[b, a])), 0.0)
                    s = float(scores[b, a, int(labels[b, m]) - 1])
                    iou[m, a], metric[m, a] = u, s**alpha * u**beta
                    inside.append(a)
            inside.sort(key=lambda a: (-metric[m, a], a))
            chosen[m] = inside[:topk]
        owner = {}
        for a in range(A):
            takers = [m for m in sorted(chosen) if a in chosen[m]]
            if takers:
                owner[a] = max(takers, key=lambda m: (iou[m, a], -m))
        for m in chosen:
            mine = [a for a in owner if owner[a] == m]
            if not mine:
                continue
            max_t, max_u = max(metric[m, a] for a in mine), max(iou[m, a] for a in mine)
            for a in mine:
                fg[b, a] = True
                out_labels[b, a] = labels[b, m]
                out_boxes[b, a] = boxes[b, m]
                out_scores[b, a, int(labels[b, m]) - 1] = metric[m, a] * max_u / (max_t + eps)
    return out_labels, out_boxes, out_scores, fg


def _random_case(seed: int, tied: bool = False):
    g = torch.Generator().manual_seed(seed)
    points, _ = anchor_points([(6, 6), (3, 3)], [8, 16], torch.zeros(1, dtype=torch.float64))
    B, A, K, M = 3, points.shape[0], 4, 5
    xy = torch.rand(B, M, 2, generator=g, dtype=torch.float64) * 36
    boxes = torch.cat([xy, xy + 4 + torch.rand(B, M, 2, generator=g, dtype=torch.float64) * 20], -1)
    labels = torch.randint(1, K + 1, (B, M), generator=g)
    mask = torch.rand(B, M, generator=g) < 0.8
    mask[2] = False  # an image without objects
    if tied:  # every prediction equal: the metric ties inside each box, order by anchor index
        scores = torch.full((B, A, K), 0.3, dtype=torch.float64)
        pred = torch.tensor([10.0, 10.0, 30.0, 30.0], dtype=torch.float64).expand(B, A, 4).clone()
    else:
        scores = torch.rand(B, A, K, generator=g, dtype=torch.float64)
        c = points[None] + torch.randn(B, A, 2, generator=g, dtype=torch.float64) * 3
        wh = 4 + torch.rand(B, A, 2, generator=g, dtype=torch.float64) * 20
        pred = torch.cat([c - wh / 2, c + wh / 2], -1)
    return scores, pred, points, labels, boxes, mask


@pytest.mark.parametrize(
    ("seed", "topk", "tied"), [(0, 10, False), (1, 3, False), (2, 1, False), (3, 4, True)]
)
def test_assigner_matches_naive_loop(seed: int, topk: int, tied: bool) -> None:
    case = _random_case(seed, tied)
    got = task_aligned_assign(*case, topk=topk, alpha=0.5, beta=6.0)
    labels, boxes, scores, fg = _naive_assign(*case, topk=topk, alpha=0.5, beta=6.0)
    assert fg.any() and not fg[2].any()
    assert torch.equal(got.fg, fg)
    assert torch.equal(got.labels, labels)
    torch.testing.assert_close(got.boxes[fg], boxes[fg])
    torch.testing.assert_close(got.scores, scores, atol=1e-12, rtol=1e-9)


def test_assigner_without_objects() -> None:
    scores, pred, points, *_ = _random_case(0)
    a = task_aligned_assign(
        scores,
        pred,
        points,
        torch.zeros(3, 0, dtype=torch.long),
        torch.zeros(3, 0, 4, dtype=torch.float64),
        torch.zeros(3, 0, dtype=torch.bool),
    )
    assert not a.fg.any() and a.scores.abs().sum() == 0 and a.labels.shape == (3, points.shape[0])


def test_loss_finite_without_objects_and_trains_negatives() -> None:
    torch.manual_seed(0)
    head = YOLOHead([8, 16], [8, 16], num_classes=3, reg_max=4, box_channels=8, cls_channels=8)
    maps = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    cls_logits, box_logits, sizes = head(maps)
    assert cls_logits.shape == (2, 20, 3) and box_logits.shape == (2, 20, 16)
    points, strides = anchor_points(sizes, head.strides, box_logits)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = yolo_loss(head, cls_logits, box_logits, points, strides, empty)
    assert set(losses) == {"loss_cls", "loss_box", "loss_dfl"}
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    assert float(losses["loss_box"]) == 0 and float(losses["loss_cls"]) > 0
    sum(losses.values()).backward()
    assert head.cls_bias.grad is not None and head.cls_bias.grad.abs().sum() > 0


def test_pad_targets() -> None:
    t = [
        {"boxes": torch.tensor([[1.0, 2, 3, 4]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    labels, boxes, mask = pad_targets(t, torch.zeros(1))
    assert labels.tolist() == [[2], [0]] and mask.tolist() == [[True], [False]]
    assert boxes[0, 0].tolist() == [1, 2, 3, 4]


def test_postprocess_multilabel_threshold_and_nms() -> None:
    # 3 points, 2 classes; point 1 duplicates point 0's box (suppressed within class 1 only).
    logits = torch.logit(torch.tensor([[[0.9, 0.6], [0.8, 0.0005], [0.0001, 0.7]]]))
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0.0, 0, 10, 10], [20.0, 20, 40, 50]]])
    (out,) = yolo_postprocess(logits, boxes, [(32, 32)], score_thresh=0.001, nms_thresh=0.5)
    assert out["labels"].tolist() == [1, 2, 2]
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.7, 0.6]))
    assert out["boxes"].tolist() == [[0, 0, 10, 10], [20, 20, 32, 32], [0, 0, 10, 10]]  # clipped to 32 x 32
