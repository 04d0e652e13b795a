"""ops.motion_fit: affine / homography fits, RANSAC and IRLS against known motions, cv2 as the peer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structpred.ops.motion_fit import (
    apply_motion,
    fit_affine,
    fit_homography,
    irls_motion,
    motion_flow,
    ransac_motion,
    robust_dominant_motion,
)

H_TRUE = torch.tensor([[1.02, 0.03, 2.5], [-0.02, 0.98, -1.5], [1e-4, -2e-4, 1.0]], dtype=torch.float64)
A_TRUE = torch.tensor([[0.99, 0.02, 1.5], [-0.03, 1.01, -2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _max_transfer_gap(M1: torch.Tensor, M2: torch.Tensor, size: int = 100) -> float:
    """Largest distance between the two maps' images of a size x size grid's points."""
    ys, xs = torch.meshgrid(torch.arange(0, size, 5.0), torch.arange(0, size, 5.0), indexing="ij")
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).double()
    return float((apply_motion(M1, pts) - apply_motion(M2, pts)).norm(dim=1).max())


def _matches(
    M: torch.Tensor, n: int, outlier_share: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    q = apply_motion(M, p)
    bad = torch.rand(n, generator=g) < outlier_share
    k = int(bad.sum())
    angle = torch.rand(k, generator=g, dtype=torch.float64) * 6.2832
    length = 3 + 17 * torch.rand(k, generator=g, dtype=torch.float64)  # outliers 3..20 px off
    q[bad] += length[:, None] * torch.stack([angle.cos(), angle.sin()], 1)
    return p, q, bad


def test_exact_fits_recover_the_maps():
    p, q, _ = _matches(H_TRUE, 30, 0.0, 0)
    assert _max_transfer_gap(fit_homography(p, q), H_TRUE) < 1e-8
    p, q, _ = _matches(A_TRUE, 30, 0.0, 1)
    M = fit_affine(p, q)
    assert torch.allclose(M, A_TRUE, atol=1e-10)
    # four points determine a homography exactly
    assert _max_transfer_gap(fit_homography(p[:4], apply_motion(H_TRUE, p[:4])), H_TRUE) < 1e-8


def test_weights_ignore_zero_weight_matches():
    p, q, bad = _matches(A_TRUE, 40, 0.3, 2)
    assert bad.any()
    w = (~bad).double()
    assert torch.allclose(fit_affine(p, q, w), A_TRUE, atol=1e-9)
    assert _max_transfer_gap(fit_homography(p, q, w), fit_homography(p[~bad], q[~bad])) < 1e-8


@pytest.mark.parametrize("model,M", [("homography", H_TRUE), ("affine", A_TRUE)])
def test_ransac_with_30_percent_outliers(model, M):
    p, q, bad = _matches(M, 300, 0.3, 3)
    fit = ransac_motion(p, q, model, threshold=0.5, seed=0)
    assert _max_transfer_gap(fit.matrix, M) < 1e-3
    assert torch.equal(fit.inliers, ~bad)


@pytest.mark.parametrize("model,M", [("homography", H_TRUE), ("affine", A_TRUE)])
def test_irls_from_a_rough_start_with_30_percent_outliers(model, M):
    p, q, _ = _matches(M, 300, 0.3, 4)
    rough = M.clone()
    rough[:2, 2] += 0.7  # within the robust scale, far from the answer
    fit = irls_motion(p, q, model, threshold=0.5, init=rough)
    assert _max_transfer_gap(fit.matrix, M) < 1e-3


def test_plain_least_squares_is_pulled_by_outliers():
    """The robust fits are needed: ordinary least squares misses by pixels (the test can fail)."""
    p, q, _ = _matches(H_TRUE, 300, 0.3, 5)
    assert _max_transfer_gap(fit_homography(p, q), H_TRUE) > 0.5


def test_against_cv2_find_homography():
    cv2 = pytest.importorskip("cv2")
    p, q, bad = _matches(H_TRUE, 300, 0.3, 6)
    noise = torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.1
    q = q + noise
    ours = ransac_motion(p, q, "homography", threshold=1.0, seed=0).matrix
    theirs, _ = cv2.findHomography(p.numpy(), q.numpy(), cv2.RANSAC, 1.0)
    theirs = torch.from_numpy(theirs)
    # both near the truth and near each other (noise 0.1 px over 210 inliers)
    assert _max_transfer_gap(ours, H_TRUE) < 0.1
    assert _max_transfer_gap(ours, theirs) < 0.1
    # on exact inliers, our DLT equals cv2's least-squares homography (method 0)
    exact, _ = cv2.findHomography(p[~bad].numpy(), apply_motion(H_TRUE, p[~bad]).numpy(), 0)
    assert (
        _max_transfer_gap(fit_homography(p[~bad], apply_motion(H_TRUE, p[~bad])), torch.from_numpy(exact))
        < 1e-6
    )


@pytest.mark.parametrize("model", ["ransac", "irls"])
def test_dominant_motion_of_a_flow_field_with_a_moving_object(model):
    H, W = 60, 80
    flow = motion_flow(H_TRUE, H, W)
    flow[:, 10:35, 20:50] = torch.tensor([6.0, -4.0])[:, None, None]  # an object: ~16 % of the field
    fit = robust_dominant_motion(flow, model="homography", method=model, seed=0, threshold=0.5)
    assert _max_transfer_gap(fit.matrix, H_TRUE, 80) < 1e-3
    assert not fit.inliers[10:35, 20:50].any()
    assert fit.inliers.float().mean() > 0.8
    residual = flow - motion_flow(fit.matrix, H, W)
    assert residual[:, fit.inliers].abs().max() < 1e-3


def test_motion_flow_matches_apply_motion():
    flow = motion_flow(H_TRUE, 5, 7)
    p = torch.tensor([[3.0, 2.0]], dtype=torch.float64)
    expected = apply_motion(H_TRUE, p)[0] - p[0]
    assert torch.allclose(flow[:, 2, 3].double(), expected, atol=1e-5)


def test_degenerate_inputs_are_clear_errors():
    p = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="collinear"):
        fit_homography(p, p + 1)
    with pytest.raises(ValueError, match="collinear"):
        fit_affine(p, p + 1)
    with pytest.raises(ValueError, match="at least 4 points"):
        fit_homography(p[:3] * torch.tensor([1.0, 0.5]), p[:3])
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_affine(p[:2], p[:2])
    with pytest.raises(ValueError, match="at least 4 points"):
        fit_homography(torch.rand(6, 2), torch.rand(6, 2), torch.tensor([1.0, 1, 1, 0, 0, 0]))
    with pytest.raises(ValueError, match="Tensor\\[N, 2\\]"):
        fit_affine(torch.rand(5, 3), torch.rand(5, 3))
    with pytest.raises(ValueError, match="finite"):
        fit_affine(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, float("nan")]]), torch.rand(3, 2))
    with pytest.raises(ValueError, match="model"):
        robust_dominant_motion(torch.zeros(2, 8, 8), model="similarity")
    with pytest.raises(ValueError, match="method"):
        robust_dominant_motion(torch.zeros(2, 8, 8), method="lmeds")
    with pytest.raises(ValueError, match="at least 4"):
        robust_dominant_motion(torch.zeros(2, 8, 8), torch.zeros(8, 8, dtype=torch.bool))


def test_seeded_determinism():
    p, q, _ = _matches(H_TRUE, 200, 0.3, 7)
    q = q + 0.05 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = ransac_motion(p, q, seed=3).matrix
    b = ransac_motion(p, q, seed=3).matrix
    assert torch.equal(a, b)
    assert np.isfinite(a.numpy()).all()
