"""SINT+'s box refinement: the closed-form ridge against least squares and sklearn, the R-CNN box
encoding round trip, the regressor's fit and clamp, training samples, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from structpred.heads.sint_refine import BoxRegressor, fit_box_regressor, refine_samples, ridge_regression
from structpred.ops.box_coder import decode_boxes, encode_boxes
from structpred.ops.boxes import box_iou


def _data(n: int, d: int, j: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5  # off-centre: the intercept matters
    y = x @ torch.randn(d, j, generator=g, dtype=torch.float64) + 3 + 0.1 * torch.randn(n, j, generator=g)
    return x, y.double()


@pytest.mark.parametrize(("n", "d", "lam"), [(50, 8, 0.5), (12, 30, 2.0), (40, 40, 1e-3)])
def test_ridge_equals_least_squares_on_the_augmented_system(n: int, d: int, lam: float) -> None:
    x, y = _data(n, d, 4)
    w, b = ridge_regression(x, y, lam)
    xn, yn = x.numpy(), y.numpy()
    xc, yc = xn - xn.mean(0), yn - yn.mean(0)
    # min ||Xc w - Yc||^2 + lam ||w||^2  ==  least squares of [Xc; sqrt(lam) I] w = [Yc; 0]
    a = np.concatenate([xc, math.sqrt(lam) * np.eye(d)])
    rhs = np.concatenate([yc, np.zeros((d, 4))])
    want = np.linalg.lstsq(a, rhs, rcond=None)[0]  # (d, 4)
    np.testing.assert_allclose(w.numpy(), want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b.numpy(), yn.mean(0) - xn.mean(0) @ want, rtol=1e-8, atol=1e-10)


def test_ridge_equals_sklearn() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = _data(60, 10, 4, seed=1)
    w, b = ridge_regression(x.float(), y.float(), 0.7)  # float32 in, float64 solve
    ref = sklearn.Ridge(alpha=0.7, fit_intercept=True).fit(x.float().numpy(), y.float().numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.numpy(), ref.intercept_, rtol=1e-4, atol=1e-4)


def test_rcnn_box_encoding_round_trip() -> None:
    g = torch.Generator().manual_seed(2)
    ref = torch.rand(20, 2, generator=g) * 50
    ref = torch.cat([ref, ref + 1 + 30 * torch.rand(20, 2, generator=g)], 1)  # (20, 4)
    gt = torch.rand(20, 2, generator=g) * 50
    gt = torch.cat([gt, gt + 1 + 30 * torch.rand(20, 2, generator=g)], 1)
    deltas = encode_boxes(gt, ref)
    torch.testing.assert_close(decode_boxes(deltas, ref), gt, atol=1e-4, rtol=0)
    # the R-CNN definition, written out for one box
    pw, ph = ref[0, 2] - ref[0, 0], ref[0, 3] - ref[0, 1]
    gw, gh = gt[0, 2] - gt[0, 0], gt[0, 3] - gt[0, 1]
    want = [
        ((gt[0, 0] + gw / 2) - (ref[0, 0] + pw / 2)) / pw,
        ((gt[0, 1] + gh / 2) - (ref[0, 1] + ph / 2)) / ph,
        torch.log(gw / pw),
        torch.log(gh / ph),
    ]
    torch.testing.assert_close(deltas[0], torch.stack(want))


def test_features_that_hold_the_deltas_recover_the_true_box() -> None:
    """If the features are (a linear map of) the R-CNN deltas, a weakly penalised regressor
    takes every training box back onto the target."""
    target = torch.tensor([30.0, 20.0, 70.0, 50.0])
    boxes = refine_samples(target, 200, (100, 120), torch.Generator().manual_seed(0))
    deltas = encode_boxes(target[None].expand_as(boxes), boxes)  # (N, 4)
    features = torch.cat([deltas @ torch.randn(4, 4, generator=torch.Generator().manual_seed(1)), deltas], 1)
    reg = fit_box_regressor(features, boxes, target, lam=1e-6)
    torch.testing.assert_close(reg.apply(features, boxes), target.expand_as(boxes), atol=1e-3, rtol=0)


def test_predictions_are_clamped_to_the_training_range() -> None:
    reg = BoxRegressor(
        weight=torch.eye(2, 4, dtype=torch.float64),
        bias=torch.zeros(4, dtype=torch.float64),
        low=torch.full((4,), -0.2, dtype=torch.float64),
        high=torch.full((4,), 0.3, dtype=torch.float64),
    )
    d = reg.deltas(torch.tensor([[5.0, -5.0], [0.1, 0.0]]))
    torch.testing.assert_close(d, torch.tensor([[0.3, -0.2, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]]))
    box = torch.tensor([[10.0, 10.0, 30.0, 20.0]])
    torch.testing.assert_close(reg.apply(torch.tensor([[0.1, 0.0]]), box), torch.tensor([[12.0, 10, 32, 20]]))


def test_refine_samples_overlap_the_target_and_are_seeded() -> None:
    target = torch.tensor([30.0, 20.0, 70.0, 50.0])
    a = refine_samples(target, 100, (64, 80), torch.Generator().manual_seed(3), min_iou=0.6)
    b = refine_samples(target, 100, (64, 80), torch.Generator().manual_seed(3), min_iou=0.6)
    torch.testing.assert_close(a, b)
    assert torch.equal(a[0], target) and 20 < len(a) <= 101
    assert bool((box_iou(a, target[None])[:, 0] >= 0.6).all())
    assert bool((a[:, 2] <= 80).all() & (a[:, 3] <= 64).all() & (a[:, :2] >= 0).all())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ridge_regression(torch.zeros(3, 2), torch.zeros(4, 1), 1.0), r"x must be \[N, D\]"),
        (lambda: ridge_regression(torch.zeros(3, 2), torch.zeros(3, 1), 0.0), "lam must be"),
        (lambda: ridge_regression(torch.zeros(3, 2), torch.zeros(3, 1), float("nan")), "lam must be"),
        (lambda: ridge_regression(torch.full((3, 2), float("nan")), torch.zeros(3, 1), 1.0), "NaN"),
        (
            lambda: fit_box_regressor(
                torch.zeros(5, 3), torch.ones(5, 4), torch.tensor([5.0, 5, 5.5, 9]), 1.0
            ),
            "degenerate",
        ),
        (
            lambda: fit_box_regressor(torch.zeros(5, 3), torch.ones(5, 4), torch.tensor([5.0, 5, 9]), 1.0),
            "finite xyxy",
        ),
        (
            lambda: fit_box_regressor(torch.zeros(2, 3), torch.ones(2, 4), torch.tensor([0.0, 0, 9, 9]), 1.0),
            "at least 4",
        ),
        (
            lambda: fit_box_regressor(torch.zeros(4, 3), torch.ones(4, 4), torch.tensor([0.0, 0, 9, 9]), 1.0),
            "zero width",
        ),
        (lambda: refine_samples(torch.tensor([0.0, 0, 9, 9]), 10, (20, 20), min_iou=1.0), "min_iou"),
    ],
)
def test_bad_input_is_a_clear_value_error(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_regressor_refuses_features_of_another_size() -> None:
    reg = BoxRegressor(*(torch.zeros(3, 4), torch.zeros(4), torch.zeros(4), torch.zeros(4)))
    with pytest.raises(ValueError, match=r"features must be \[K, 3\]"):
        reg.deltas(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"boxes must be \[2, 4\]"):
        reg.apply(torch.zeros(2, 3), torch.zeros(3, 4))
