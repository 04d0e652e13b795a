"""SINT's marginal contrastive loss against its direct formula, and pair sampling by IoU."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.heads.sint_loss import (
    marginal_contrastive_loss,
    sample_candidates,
    target_track,
    track_targets,
)


def _direct(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor, eps: float) -> float:
    """The paper's eq. 1 written out pair by pair."""
    total = 0.0
    for i in range(len(a)):
        d = math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a[i], b[i], strict=True)))
        total += 0.5 * d**2 if bool(same[i]) else 0.5 * max(0.0, eps - d) ** 2
    return total / len(a)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_loss_equals_the_direct_formula(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 6, generator=g) * 0.4, torch.randn(40, 6, generator=g) * 0.4
    same = torch.rand(40, generator=g) > 0.5
    got = float(marginal_contrastive_loss(a, b, same, eps))
    assert got == pytest.approx(_direct(a, b, same, eps), rel=1e-5)


def test_loss_terms_at_known_distances() -> None:
    a = torch.zeros(3, 2)
    b = torch.tensor([[3.0, 4.0], [0.3, 0.4], [3.0, 4.0]])  # d = 5, 0.5, 5
    same = torch.tensor([True, False, False])
    # (0.5 * 25 + 0.5 * (1 - 0.5)^2 + 0) / 3
    assert float(marginal_contrastive_loss(a, b, same, 1.0)) == pytest.approx((12.5 + 0.125) / 3, rel=1e-6)


def test_loss_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    same = torch.tensor([True, False, True, False, False, True])
    assert torch.autograd.gradcheck(lambda x, y: marginal_contrastive_loss(x, y, same, 3.0), (a, b))


def test_loss_identical_rows_have_finite_gradient_and_empty_is_zero() -> None:
    a = torch.ones(2, 4, requires_grad=True)
    loss = marginal_contrastive_loss(a, a.detach().clone(), torch.tensor([True, False]), 1.0)
    loss.backward()
    assert torch.isfinite(a.grad).all()  # type: ignore[arg-type]
    empty = marginal_contrastive_loss(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.bool))
    assert float(empty) == 0.0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(2, dtype=torch.bool), 1.0), "must be one"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.bool), 1.0), "same must be"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.bool), 0.0), "margin"),
    ],
)
def test_loss_rejects_bad_input(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        marginal_contrastive_loss(*args)


def test_candidates_are_labelled_by_iou() -> None:
    from structpred.ops.boxes import box_iou

    box = torch.tensor([40.0, 30.0, 60.0, 50.0])
    boxes, pos = sample_candidates(box, 400, (100, 120), torch.Generator().manual_seed(0))
    iou = box_iou(boxes, box[None])[:, 0]
    assert torch.equal(boxes[0], box) and bool(pos[0])
    assert bool((iou[pos] >= 0.7).all()) and bool((iou[~pos] <= 0.5).all())
    assert int(pos.sum()) > 5 and int((~pos).sum()) > 5  # both kinds are drawn
    assert bool((boxes[:, 0::2] >= 0).all() & (boxes[:, 0::2] <= 120).all() & (boxes[:, 1::2] <= 100).all())


def test_target_track_reads_boxes_or_the_first_track_seen_in_frame_0() -> None:
    nan = float("nan")
    tracks = torch.tensor(
        [[[nan] * 4, [1.0, 1, 5, 5]], [[2.0, 2, 8, 8], [3.0, 3, 9, 9]], [[0.0, 0, 4, 4], [nan] * 4]]
    )  # (M=3, T=2, 4): track 0 unseen in frame 0
    visible = torch.tensor([[False, True], [True, True], [True, False]])
    boxes, vis = target_track({"tracks": tracks, "visible": visible}, 2, "t")
    assert torch.equal(boxes, tracks[1]) and vis.tolist() == [True, True]
    assert len(track_targets({"tracks": tracks, "visible": visible}, 2, "t")) == 2
    boxes, vis = target_track({"boxes": tracks[2]}, 2, "t")
    assert vis.tolist() == [True, False]  # NaN box: not visible


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ({"boxes": torch.zeros(3, 4)}, r"'boxes' must be a float Tensor\[2, 4\]"),
        ({"boxes": torch.zeros(2, 4), "visible": torch.ones(3)}, "'visible'"),
        ({"tracks": torch.zeros(2, 4)}, "'tracks'"),
        ({"tracks": torch.full((1, 2, 4), float("nan"))}, "no track is visible in frame 0"),
        ({"labels": torch.zeros(1)}, "needs 'boxes'"),
    ],
)
def test_target_track_rejects_bad_targets(target: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        target_track(target, 2, "clip 3")
