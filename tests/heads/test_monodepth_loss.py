"""``structpred.heads.monodepth_loss``: every term against a direct loop reference (float64),
the reconstruction against exact whole-pixel shifts, ``gradcheck``, the post-processing ramps
against the reference formula, and bad input.

The loop references read the paper's formulas pixel by pixel: the 1-D horizontal bilinear
sampler with the border clamped (``read(x) = (1 - f) I[floor x] + f I[floor x + 1]`` after
clamping ``x`` into ``[0, W - 1]``), forward differences for the smoothness.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from structpred.heads.monodepth_loss import (
    appearance_loss,
    edge_ramps,
    lr_consistency_loss,
    monodepth_loss,
    post_process_disparity,
    reconstruct_left,
    reconstruct_right,
    scale_pyramid,
    smoothness_loss,
)
from tests.ops.test_ssim import ref_ssim

F64 = torch.float64


def ref_sample(image: Tensor, shift_px: Tensor) -> Tensor:
    """``image`` [B, C, H, W] read at ``x + shift`` per pixel (float64 loops, border clamp)."""
    B, C, H, W = image.shape
    out = torch.zeros(B, C, H, W, dtype=F64)
    for b, y, x in itertools.product(range(B), range(H), range(W)):
        p = min(max(x + float(shift_px[b, 0, y, x]), 0.0), W - 1.0)
        x0 = math.floor(p)
        f = p - x0
        x1 = min(x0 + 1, W - 1)
        for c in range(C):
            out[b, c, y, x] = (1 - f) * float(image[b, c, y, x0]) + f * float(image[b, c, y, x1])
    return out


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> Tensor:
    return scale * torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_reconstruct_matches_loop_reference() -> None:
    image, disp = _rand(2, 3, 4, 9, seed=1), _rand(2, 1, 4, 9, seed=2, scale=0.3)
    W = image.shape[-1]
    torch.testing.assert_close(reconstruct_left(image, disp), ref_sample(image, -disp * W))
    torch.testing.assert_close(reconstruct_right(image, disp), ref_sample(image, disp * W))


def test_whole_pixel_shift_is_exact() -> None:
    """A right view = the left shifted by d px: the left is rebuilt exactly where x - d is inside."""
    left = _rand(1, 3, 5, 12, seed=3)
    d = 2
    right = torch.cat([left[..., d:], left[..., -1:].expand(1, 3, 5, d)], dim=-1)  # right(x) = left(x + d)
    disp_left = torch.full((1, 1, 5, 12), d / 12, dtype=F64)
    rebuilt = reconstruct_left(right, disp_left)
    torch.testing.assert_close(rebuilt[..., d:], left[..., d:], rtol=0, atol=1e-12)
    disp_right = torch.full((1, 1, 5, 12), d / 12, dtype=F64)
    torch.testing.assert_close(reconstruct_right(left, disp_right)[..., : 12 - d], right[..., : 12 - d])


def test_reconstruct_gradcheck() -> None:
    image = _rand(1, 2, 3, 6, seed=4).requires_grad_()
    disp = (0.05 + _rand(1, 1, 3, 6, seed=5, scale=0.2)).requires_grad_()  # off whole pixels
    assert torch.autograd.gradcheck(reconstruct_left, (image, disp))


@pytest.mark.parametrize("alpha", [0.85, 0.0, 1.0])
def test_appearance_matches_reference(alpha: float) -> None:
    est, img = _rand(2, 3, 5, 6, seed=6), _rand(2, 3, 5, 6, seed=7)
    ssim_term = ((1 - ref_ssim(est, img)) / 2).clamp(0, 1).mean()
    l1 = (
        sum(abs(float(a) - float(b)) for a, b in zip(est.flatten(), img.flatten(), strict=True)) / est.numel()
    )
    expected = alpha * float(ssim_term) + (1 - alpha) * l1
    assert float(appearance_loss(est, img, alpha)) == pytest.approx(expected, rel=1e-10)
    assert float(appearance_loss(img, img)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("directions", ["xy", "x"])
def test_smoothness_matches_reference(directions: str) -> None:
    disp, img = _rand(2, 1, 4, 5, seed=8), _rand(2, 3, 4, 5, seed=9)
    B, C, H, W = img.shape
    sx = sy = 0.0
    for b, y, x in itertools.product(range(B), range(H), range(W)):
        if x + 1 < W:
            gi = sum(abs(float(img[b, c, y, x] - img[b, c, y, x + 1])) for c in range(C)) / C
            sx += abs(float(disp[b, 0, y, x] - disp[b, 0, y, x + 1])) * math.exp(-gi)
        if y + 1 < H:
            gi = sum(abs(float(img[b, c, y, x] - img[b, c, y + 1, x])) for c in range(C)) / C
            sy += abs(float(disp[b, 0, y, x] - disp[b, 0, y + 1, x])) * math.exp(-gi)
    expected = sx / (B * H * (W - 1)) + (sy / (B * (H - 1) * W) if directions == "xy" else 0.0)
    assert float(smoothness_loss(disp, img, directions)) == pytest.approx(expected, rel=1e-10)


def test_smoothness_is_edge_aware() -> None:
    """A disparity step on an image edge costs less than the same step on a flat image."""
    disp = torch.zeros(1, 1, 4, 8, dtype=F64)
    disp[..., 4:] = 0.1
    edge = torch.zeros(1, 3, 4, 8, dtype=F64)
    edge[..., 4:] = 1.0
    assert smoothness_loss(disp, edge) < smoothness_loss(disp, torch.zeros_like(edge))


def test_lr_consistency_matches_reference() -> None:
    d_l, d_r = _rand(2, 1, 3, 8, seed=10, scale=0.3), _rand(2, 1, 3, 8, seed=11, scale=0.3)
    W = d_l.shape[-1]
    left_term = (d_l - ref_sample(d_r, -d_l * W)).abs().mean()
    right_term = (d_r - ref_sample(d_l, d_r * W)).abs().mean()
    torch.testing.assert_close(lr_consistency_loss(d_l, d_r), left_term + right_term)


def test_lr_consistency_zero_for_consistent_disparities() -> None:
    """A fronto-parallel plane: equal constant disparities in both views are consistent."""
    d = torch.full((1, 1, 4, 10), 0.2, dtype=F64)
    assert float(lr_consistency_loss(d, d)) == pytest.approx(0.0, abs=1e-12)
    assert float(lr_consistency_loss(d, 0.5 * d)) > 0.05


def test_total_loss_is_the_weighted_sum_over_scales() -> None:
    left, right = _rand(2, 3, 24, 32, seed=12), _rand(2, 3, 24, 32, seed=13)
    disps = [_rand(2, 2, 24 >> s, 32 >> s, seed=20 + s, scale=0.3) for s in range(4)]
    losses = monodepth_loss(disps, left, right)
    assert set(losses) == {"loss_appearance", "loss_smoothness", "loss_lr"}
    app = smooth = lr = 0.0
    for s, d in enumerate(disps):
        size = d.shape[-2:]
        il = torch.nn.functional.interpolate(left, size=size, mode="area") if s else left
        ir = torch.nn.functional.interpolate(right, size=size, mode="area") if s else right
        dl, dr = d[:, :1], d[:, 1:]
        app += float(
            appearance_loss(reconstruct_left(ir, dl), il) + appearance_loss(reconstruct_right(il, dr), ir)
        )
        smooth += float(smoothness_loss(dl, il) + smoothness_loss(dr, ir)) / 2**s
        lr += float(lr_consistency_loss(dl, dr))
    assert float(losses["loss_appearance"]) == pytest.approx(app, rel=1e-10)
    assert float(losses["loss_smoothness"]) == pytest.approx(0.1 * smooth, rel=1e-10)
    assert float(losses["loss_lr"]) == pytest.approx(lr, rel=1e-10)
    off = monodepth_loss(disps, left, right, lr_consistency=False, smoothness_weight=1.0)
    assert set(off) == {"loss_appearance", "loss_smoothness"}
    assert float(off["loss_smoothness"]) == pytest.approx(smooth, rel=1e-10)


def test_scale_pyramid_is_area_average() -> None:
    img = _rand(1, 3, 8, 8, seed=14)
    full, half = scale_pyramid(img, [(8, 8), (4, 4)])
    assert full is img
    torch.testing.assert_close(half[0, 0, 0, 0], img[0, 0, :2, :2].mean())


@pytest.mark.parametrize("width", [1, 7, 20, 64, 513])
def test_edge_ramps_are_the_reference_masks(width: int) -> None:
    cols, _ = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, 2))
    expected = 1.0 - np.clip(20 * (cols - 0.05), 0, 1)
    np.testing.assert_allclose(edge_ramps(width, torch.float64).numpy(), expected[0], atol=1e-12)


def test_edge_ramps_five_percent() -> None:
    ramp = edge_ramps(201, torch.float64)  # columns at l = k / 200
    assert bool((ramp[:11] == 1).all())  # l <= 0.05
    assert float(ramp[15]) == pytest.approx(0.5)  # halfway up the ramp, l = 0.075
    assert bool((ramp[20:] == 0).all())  # l >= 0.1


def test_post_process_reference_formula() -> None:
    d, f = _rand(2, 1, 3, 40, seed=15), _rand(2, 1, 3, 40, seed=16)
    l_mask = 1.0 - np.clip(20 * (np.linspace(0, 1, 40) - 0.05), 0, 1)
    r_mask = l_mask[::-1]
    dn, back = d.numpy(), f.numpy()[..., ::-1]
    expected = r_mask * dn + l_mask * back + (1 - l_mask - r_mask) * 0.5 * (dn + back)
    np.testing.assert_allclose(post_process_disparity(d, f).numpy(), expected, atol=1e-12)


def test_post_process_symmetry() -> None:
    """A symmetric image predicts the same on itself and its mirror: the blend is symmetric; a
    prediction that mirrors exactly with the image is left unchanged."""
    d = _rand(1, 1, 4, 30, seed=17)
    out = post_process_disparity(d, d)
    torch.testing.assert_close(out, out.flip(-1))
    torch.testing.assert_close(post_process_disparity(d, d.flip(-1)), d)


def test_gradients_reach_disparities() -> None:
    left, right = _rand(1, 3, 24, 24, seed=18), _rand(1, 3, 24, 24, seed=19)
    disps = [_rand(1, 2, 24 >> s, 24 >> s, seed=30 + s, scale=0.3).requires_grad_() for s in range(4)]
    torch.stack(list(monodepth_loss(disps, left, right).values())).sum().backward()
    assert all(
        d.grad is not None and bool(torch.isfinite(d.grad).all()) and d.grad.abs().sum() > 0 for d in disps
    )


def test_bad_input() -> None:
    img, disp = torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8)
    with pytest.raises(
        ValueError, match="reconstruct_left: image and disparity must share B, H, W|share B, H, W"
    ):
        reconstruct_left(img, torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match="disparity must have 1 channel"):
        reconstruct_right(img, torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="non-empty float Tensor"):
        reconstruct_left(torch.rand(1, 3, 0, 8), disp)
    with pytest.raises(ValueError, match="alpha must be in"):
        appearance_loss(img, img, alpha=1.5)
    with pytest.raises(ValueError, match="directions"):
        smoothness_loss(disp, img, "y")
    with pytest.raises(ValueError, match="must share one shape"):
        lr_consistency_loss(disp, torch.rand(1, 1, 8, 4))
    with pytest.raises(ValueError, match="disps is empty"):
        monodepth_loss([], img, img)
    with pytest.raises(ValueError, match="differ"):
        monodepth_loss([torch.rand(1, 2, 8, 8)], img, torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"disps\[0\] must have 2 channel"):
        monodepth_loss([disp], img, img)
    with pytest.raises(ValueError, match="images, the pair"):
        monodepth_loss([torch.rand(2, 2, 8, 8)], img, img)
    with pytest.raises(ValueError, match="width must be a positive int"):
        edge_ramps(0)
    with pytest.raises(ValueError, match="must share one shape"):
        post_process_disparity(disp, torch.rand(1, 1, 8, 7))
    with pytest.raises(ValueError, match="disp must be a non-empty float"):
        post_process_disparity(torch.zeros(1, 1, 8, 8, dtype=torch.int64), disp)
