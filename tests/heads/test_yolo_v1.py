"""YOLO v1's loss and decoding against naive per-cell, per-box Python loops written here.

The loop reads the paper's equation 3 cell by cell (the responsible predictor by IoU, the
nearest one when every IoU is 0; the first object of a cell keeps it) and the test-time rule
(class-specific confidence, per-class greedy NMS) box by box; the vectorised code must agree
within 1e-6, gradients too (float64).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from structpred.heads.yolo_v1 import (
    YOLOv1Head,
    cell_of,
    decode_yolo_v1,
    paired_iou,
    split_output,
    yolo_v1_loss,
)
from structpred.ops import box_iou


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _pred_box(out: Tensor, n: int, row: int, col: int, j: int) -> list[float]:
    """Predictor j of cell (row, col) as image-relative xyxy (plain floats)."""
    S = out.shape[1]
    x, y, sw, sh = out[n, row, col, 5 * j : 5 * j + 4].tolist()
    cx, cy, w, h = (col + x) / S, (row + y) / S, sw * sw, sh * sh
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def naive_loss(
    out: Tensor, boxes: list[Tensor], labels: list[Tensor], B: int, l_coord: float = 5.0, l_noobj: float = 0.5
) -> dict[str, Tensor]:
    N, S, _, D = out.shape
    C = D - 5 * B
    terms = {k: out.new_zeros(()) for k in ("loss_box", "loss_object", "loss_noobject", "loss_class")}
    for n in range(N):
        owner: dict[tuple[int, int], int] = {}
        for m, (x1, y1, x2, y2) in enumerate(boxes[n].tolist()):
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            cell = (min(math.floor(cy * S), S - 1), min(math.floor(cx * S), S - 1))
            owner.setdefault(cell, m)  # the first object listed keeps the cell
        for row in range(S):
            for col in range(S):
                m = owner.get((row, col))
                responsible, ious = -1, [0.0] * B
                if m is not None:
                    gt = boxes[n][m].tolist()
                    cx, cy, w, h = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2, gt[2] - gt[0], gt[3] - gt[1]
                    errors = []
                    for j in range(B):
                        p = _pred_box(out, n, row, col, j)
                        ious[j] = _iou(p, gt)
                        pc = [(p[0] + p[2]) / 2, (p[1] + p[3]) / 2, p[2] - p[0], p[3] - p[1]]
                        errors.append(sum((a - b) ** 2 for a, b in zip(pc, [cx, cy, w, h], strict=True)))
                    if max(ious) > 0:
                        responsible = ious.index(max(ious))
                    else:
                        responsible = errors.index(min(errors))
                for j in range(B):
                    conf = out[n, row, col, 5 * j + 4]
                    if j == responsible:
                        x, y, sw, sh = out[n, row, col, 5 * j : 5 * j + 4]
                        terms["loss_box"] = terms["loss_box"] + l_coord * (
                            (x - (cx * S - col)) ** 2
                            + (y - (cy * S - row)) ** 2
                            + (sw - math.sqrt(w)) ** 2
                            + (sh - math.sqrt(h)) ** 2
                        )
                        terms["loss_object"] = terms["loss_object"] + (conf - ious[j]) ** 2
                    else:
                        terms["loss_noobject"] = terms["loss_noobject"] + l_noobj * conf**2
                if m is not None:
                    label = int(labels[n][m])
                    for c in range(C):
                        truth = 1.0 if c == label - 1 else 0.0
                        terms["loss_class"] = terms["loss_class"] + (out[n, row, col, 5 * B + c] - truth) ** 2
    return {k: v / N for k, v in terms.items()}


def _objects(g: torch.Generator, M: int, C: int) -> tuple[Tensor, Tensor]:
    centre = torch.rand(M, 2, generator=g, dtype=torch.float64) * 0.9 + 0.05
    size = torch.rand(M, 2, generator=g, dtype=torch.float64) * 0.4 + 0.02
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1).clamp(0, 1)
    return boxes, torch.randint(1, C + 1, (M,), generator=g)


def _output(g: torch.Generator, N: int, S: int, B: int, C: int) -> Tensor:
    out = torch.rand(N, S, S, B * 5 + C, generator=g, dtype=torch.float64)
    box = out[..., : 5 * B].reshape(N, S, S, B, 5)
    box[..., 2:4] = box[..., 2:4] * 0.6 + 0.1  # sqrt(w), sqrt(h): boxes 1..50% of the image
    return out.requires_grad_()


# Each case: (S, B, C, objects per image); two images per batch.
CASES = [(2, 1, 1, (1, 0)), (4, 2, 3, (5, 2)), (7, 2, 20, (3, 6)), (3, 3, 2, (9, 4))]


@pytest.mark.parametrize(("S", "B", "C", "counts"), CASES)
def test_loss_and_gradients_equal_the_naive_loop(S: int, B: int, C: int, counts: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(S * 100 + B * 10 + C)
    out = _output(g, len(counts), S, B, C)
    objects = [_objects(g, M, C) for M in counts]
    boxes, labels = [b for b, _ in objects], [lab for _, lab in objects]
    if counts[0] >= 2:  # a second object whose centre falls in the first one's cell
        centre, half = (boxes[0][0, :2] + boxes[0][0, 2:]) / 2, (boxes[0][0, 2:] - boxes[0][0, :2]) * 0.4
        boxes[0][1] = torch.cat([centre - half, centre + half])  # same centre, 80% of the size
    ours = yolo_v1_loss(out, boxes, labels, B)
    ref = naive_loss(out, boxes, labels, B)
    assert set(ours) == set(ref)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], atol=1e-6, rtol=0)
        (g_ours,) = torch.autograd.grad(ours[k], out, retain_graph=True, allow_unused=False)
        (g_ref,) = torch.autograd.grad(ref[k], out, retain_graph=True)
        torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=0)


def test_loss_gradcheck_float64() -> None:
    """The confidence target (the IoU) is detached, so ``loss_object`` is checked as a function of
    the confidences alone (boxes fixed); every other term as a function of the whole output."""
    g = torch.Generator().manual_seed(3)
    out = _output(g, 1, 3, 2, 2)
    boxes, labels = _objects(g, 3, 2)

    def others(x: Tensor) -> Tensor:
        losses = yolo_v1_loss(x, [boxes], [labels], 2)
        return losses["loss_box"] + losses["loss_noobject"] + losses["loss_class"]

    assert torch.autograd.gradcheck(others, (out,))
    box_part = out.detach()[..., :4].clone()  # (1, S, S, 4): predictor 0's box stays put

    def objectness(conf: Tensor) -> Tensor:
        x = torch.cat([box_part, conf, out.detach()[..., 5:]], -1)
        return yolo_v1_loss(x, [boxes], [labels], 2)["loss_object"]

    conf = out.detach()[..., 4:5].clone().requires_grad_()
    assert torch.autograd.gradcheck(objectness, (conf,))


def test_border_centre_goes_to_the_cell_after_it_and_the_last_cell_clamps() -> None:
    S = 4
    boxes = torch.tensor(
        [[0.4, 0.4, 0.6, 0.6], [0.9, 0.9, 1.0, 1.1], [0.0, 0.2, 0.5, 0.3]], dtype=torch.float64
    )
    row, col = cell_of(boxes, S)  # centres (0.5, 0.5): on a border; (0.95, 1.0): the image edge
    assert row.tolist() == [2, 3, 1] and col.tolist() == [2, 3, 1]
    # The loss agrees with the naive loop on a centre exactly on a border (x offset 0 in its cell).
    g = torch.Generator().manual_seed(0)
    out = _output(g, 1, S, 2, 2)
    labels = torch.tensor([1, 2, 1])
    ours, ref = yolo_v1_loss(out, [boxes], [labels], 2), naive_loss(out, [boxes], [labels], 2)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], atol=1e-6, rtol=0)


def test_two_objects_in_one_cell_the_first_listed_keeps_it() -> None:
    g = torch.Generator().manual_seed(1)
    out = _output(g, 1, 4, 2, 3)
    a = torch.tensor([[0.30, 0.30, 0.45, 0.45]], dtype=torch.float64)  # centre (0.375, 0.375): cell (1, 1)
    b = torch.tensor([[0.26, 0.26, 0.49, 0.49]], dtype=torch.float64)  # same cell, another box and class
    la, lb = torch.tensor([1]), torch.tensor([3])
    both = yolo_v1_loss(out, [torch.cat([a, b])], [torch.cat([la, lb])], 2)
    only_a = yolo_v1_loss(out, [a], [la], 2)
    only_b = yolo_v1_loss(out, [b], [lb], 2)
    for k in both:
        torch.testing.assert_close(both[k], only_a[k], atol=0, rtol=0)
    assert not torch.allclose(both["loss_class"], only_b["loss_class"])
    assert not torch.allclose(both["loss_box"], only_b["loss_box"])


def test_no_objects_leaves_only_the_noobject_term() -> None:
    g = torch.Generator().manual_seed(2)
    out = _output(g, 2, 3, 2, 4)
    empty = torch.zeros(0, 4, dtype=torch.float64)
    losses = yolo_v1_loss(out, [empty, empty], [torch.zeros(0, dtype=torch.int64)] * 2, 2)
    _, confidence, _ = split_output(out, 2)
    zeros = [float(losses[k].detach()) for k in ("loss_box", "loss_object", "loss_class")]
    assert zeros == [0.0, 0.0, 0.0]
    torch.testing.assert_close(losses["loss_noobject"], 0.5 * (confidence**2).sum() / 2)
    sum(losses.values()).backward()  # type: ignore[union-attr]
    assert out.grad is not None and torch.isfinite(out.grad).all()


def test_all_zero_iou_picks_the_nearest_predictor() -> None:
    S, B, C = 2, 3, 1
    out = torch.zeros(1, S, S, B * 5 + C, dtype=torch.float64)
    # Cell (0, 0); three tiny predictors, none overlapping the truth; predictor 1 is nearest.
    for j, (x, y) in enumerate([(0.05, 0.05), (0.6, 0.6), (0.95, 0.05)]):
        out[0, 0, 0, 5 * j : 5 * j + 4] = torch.tensor([x, y, 0.01, 0.01], dtype=torch.float64)
    truth = torch.tensor([[0.30, 0.30, 0.45, 0.45]], dtype=torch.float64)  # centre (0.375, 0.375)
    out.requires_grad_()
    losses = yolo_v1_loss(out, [truth], [torch.tensor([1])], B)
    (grad,) = torch.autograd.grad(losses["loss_box"], out)
    moved = grad[0, 0, 0, : 5 * B].reshape(B, 5).abs().sum(1)  # which predictor the box term trains
    assert moved.nonzero().flatten().tolist() == [1]
    ref = naive_loss(out, [truth], [torch.tensor([1])], B)
    for k in ref:
        torch.testing.assert_close(losses[k], ref[k], atol=1e-6, rtol=0)


def test_paired_iou_is_the_diagonal_of_box_iou() -> None:
    g = torch.Generator().manual_seed(4)
    a, _ = _objects(g, 7, 1)
    b, _ = _objects(g, 7, 1)
    b[0] = a[0]  # identical
    b[1] = torch.tensor([2.0, 2.0, 3.0, 3.0], dtype=torch.float64)  # disjoint
    torch.testing.assert_close(paired_iou(a, b), box_iou(a, b).diagonal())
    zero = torch.zeros(1, 4, dtype=torch.float64)
    assert float(paired_iou(zero, zero)[0]) == 0.0  # empty union: 0, not nan


# -------------------------------------------------------------------------------- decoding
def _greedy(
    cands: list[tuple[float, list[float], int]], thresh: float
) -> list[tuple[float, list[float], int]]:
    kept: list[tuple[float, list[float], int]] = []
    for cand in sorted(cands, key=lambda c: -c[0]):
        if all(k[2] != cand[2] or _iou(k[1], cand[1]) <= thresh for k in kept):
            kept.append(cand)
    return kept


def naive_decode(
    out: Tensor, size: tuple[int, int], B: int, score_thresh: float, nms_thresh: float, top: int
) -> list[tuple[float, list[float], int]]:
    S, D = out.shape[1], out.shape[-1]
    C, (H, W) = D - 5 * B, size
    cands = []
    for row in range(S):
        for col in range(S):
            for j in range(B):
                x1, y1, x2, y2 = _pred_box(out, 0, row, col, j)
                box = [
                    min(max(x1 * W, 0), W),
                    min(max(y1 * H, 0), H),
                    min(max(x2 * W, 0), W),
                    min(max(y2 * H, 0), H),
                ]
                conf = min(max(float(out[0, row, col, 5 * j + 4]), 0.0), 1.0)
                for c in range(C):
                    score = conf * min(max(float(out[0, row, col, 5 * B + c]), 0.0), 1.0)
                    if score > score_thresh and box[2] - box[0] >= 1e-2 and box[3] - box[1] >= 1e-2:
                        cands.append((score, box, c + 1))
    return _greedy(cands, nms_thresh)[:top]


@pytest.mark.parametrize(
    ("S", "B", "C", "size"), [(3, 2, 2, (60, 90)), (5, 1, 4, (128, 128)), (7, 2, 20, (70, 50))]
)
def test_decoding_equals_the_naive_loop(S: int, B: int, C: int, size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(S)
    out = _output(g, 1, S, B, C).detach() * 1.4 - 0.2  # some negative confidences and probabilities
    (ours,) = decode_yolo_v1(out, [size], B, score_thresh=0.05, nms_thresh=0.5, detections_per_img=25)
    ref = naive_decode(out, size, B, 0.05, 0.5, 25)
    assert len(ours["scores"]) == len(ref) > 0
    torch.testing.assert_close(
        ours["scores"], torch.tensor([r[0] for r in ref], dtype=out.dtype), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        ours["boxes"], torch.tensor([r[1] for r in ref], dtype=out.dtype), atol=1e-9, rtol=0
    )
    assert ours["labels"].tolist() == [r[2] for r in ref]
    assert ours["labels"].dtype == torch.int64


def test_decoding_negative_outputs_never_score() -> None:
    out = -torch.ones(2, 3, 3, 2 * 5 + 2)  # conf * prob would be +1 without the clamp
    for det in decode_yolo_v1(out, [(32, 32), (40, 20)], 2, score_thresh=0.0):
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].shape == (0,)


def test_head_shape_and_validation() -> None:
    head = YOLOv1Head(12, grid_size=3, boxes_per_cell=2, num_classes=4, hidden=8)
    assert head(torch.rand(5, 3, 2, 2)).shape == (5, 3, 3, 14)
    with pytest.raises(ValueError, match="grid_size"):
        YOLOv1Head(12, grid_size=0)
    with pytest.raises(ValueError, match="num_classes"):
        YOLOv1Head(12, num_classes=True)  # type: ignore[arg-type]
