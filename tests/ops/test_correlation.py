"""Correlation volumes: against naive loops, torchvision's RAFT CorrBlock, gradcheck, edge sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.optical_flow.raft import CorrBlock

from structpred.ops.correlation import (
    all_pairs_bytes,
    all_pairs_correlation,
    correlation_pyramid,
    local_correlation,
    pyramid_lookup,
)


def _naive_local(f1: torch.Tensor, f2: torch.Tensor, d: int) -> torch.Tensor:
    B, C, H, W = f1.shape
    side = 2 * d + 1
    out = torch.zeros(B, side * side, H, W, dtype=f1.dtype)
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            k = (dy + d) * side + (dx + d)
            for y in range(H):
                for x in range(W):
                    if 0 <= y + dy < H and 0 <= x + dx < W:
                        out[:, k, y, x] = (f1[:, :, y, x] * f2[:, :, y + dy, x + dx]).mean(1)
    return out


def _naive_bilinear(level: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """One bilinear read of a [h, w] map at pixel (x, y), zero outside (a Python loop)."""
    h, w = level.shape
    x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
    total = torch.zeros((), dtype=level.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total = total + level[yy, xx] * wy * wx
    return total


def _grid(B: int, H: int, W: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(B, 1, 1, 1)  # (B, 2 (x, y), H, W)


@pytest.mark.parametrize(
    "shape,d", [((2, 4, 7, 9), 2), ((1, 1, 1, 1), 3), ((1, 3, 5, 4), 0), ((1, 6, 3, 8), 4)]
)
def test_local_correlation_matches_a_naive_loop(shape: tuple[int, int, int, int], d: int) -> None:
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    out = local_correlation(f1, f2, d)
    assert out.shape == (shape[0], (2 * d + 1) ** 2, shape[2], shape[3])
    torch.testing.assert_close(out, _naive_local(f1, f2, d), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "shape,d", [((2, 16, 12, 14), 3), ((1, 5, 3, 70), 2), ((1, 4, 2, 64), 4), ((1, 2, 1, 33), 0)]
)
def test_local_correlation_matches_an_unfold_reference(shape: tuple[int, int, int, int], d: int) -> None:
    # widths of one, two and three row chunks, whole and partial (the banded GEMM's seams)
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    B, C, H, W = f1.shape
    side = 2 * d + 1
    patches = F.unfold(f2, kernel_size=side, padding=d).view(B, C, side * side, H, W)  # (B, C, K, H, W)
    ref = (f1[:, :, None] * patches).mean(1)  # (B, K, H, W), K dy-major as unfold's kernel order
    torch.testing.assert_close(local_correlation(f1, f2, d), ref, atol=1e-5, rtol=1e-5)


def test_local_correlation_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: local_correlation(a, b, 2), (f1, f2))


def test_all_pairs_is_the_scaled_dot_product() -> None:
    g = torch.Generator().manual_seed(3)
    f1, f2 = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g)
    vol = all_pairs_correlation(f1, f2)
    assert vol.shape == (2, 3, 4, 3, 4)
    ref = torch.einsum("bcyx,bcvu->byxvu", f1, f2) / 5**0.5
    torch.testing.assert_close(vol, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape,radius", [((1, 8, 16, 16), 4), ((2, 5, 16, 20), 3), ((1, 3, 24, 17), 4)])
def test_pyramid_lookup_matches_torchvision_corr_block(shape: tuple[int, int, int, int], radius: int) -> None:
    g = torch.Generator().manual_seed(4)
    B, C, H, W = shape
    f1, f2 = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    coords = _grid(B, H, W) + 5 * torch.randn(B, 2, H, W, generator=g)  # inside and outside the map
    block = CorrBlock(num_levels=4, radius=radius)
    block.build_pyramid(f1, f2)
    ref = block.index_pyramid(coords)
    ours = pyramid_lookup(correlation_pyramid(all_pairs_correlation(f1, f2), 4), coords, radius)
    torch.testing.assert_close(ours, ref, atol=5e-5, rtol=1e-5)


def test_pyramid_lookup_matches_a_naive_loop_including_whole_pixel_points() -> None:
    g = torch.Generator().manual_seed(5)
    f1, f2 = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g)
    pyramid = correlation_pyramid(all_pairs_correlation(f1, f2), 2)
    coords = _grid(1, 3, 4) + torch.tensor([1.0, -0.5]).view(1, 2, 1, 1)  # x on whole pixels
    coords[0, :, 0, 0] = torch.tensor([-7.25, 9.5])  # far outside: the window reads zeros
    r = 1
    out = pyramid_lookup(pyramid, coords, r)  # (1, 2 * 9, 3, 4)
    for y in range(3):
        for x in range(4):
            n = y * 4 + x
            for lvl, level in enumerate(pyramid):
                cx, cy = (float(v) / 2**lvl for v in coords[0, :, y, x])
                for dx in range(-r, r + 1):
                    for dy in range(-r, r + 1):
                        k = lvl * 9 + (dx + r) * 3 + (dy + r)  # x-offset-major, as RAFT
                        ref = _naive_bilinear(level[n, 0], cx + dx, cy + dy)
                        torch.testing.assert_close(out[0, k, y, x], ref, atol=1e-6, rtol=1e-5)


def test_pyramid_lookup_gradcheck_in_pyramid_and_coords() -> None:
    g = torch.Generator().manual_seed(6)
    f1 = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    f2 = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    vol = all_pairs_correlation(f1, f2).requires_grad_(True)
    # off whole pixels: bilinear reads are differentiable there
    coords = (_grid(1, 4, 4).double() + 0.3 + 0.2 * torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64))
    coords.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, c: pyramid_lookup(correlation_pyramid(v, 2), c, 1), (vol, coords)
    )


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (3, 2), (2, 2)])
def test_tiny_maps_give_finite_values_at_every_level(size: tuple[int, int]) -> None:
    H, W = size
    f1, f2 = torch.randn(1, 4, H, W), torch.randn(1, 4, H, W)
    pyramid = correlation_pyramid(all_pairs_correlation(f1, f2), 4)
    assert len(pyramid) == 4 and all(level.numel() > 0 for level in pyramid)
    out = pyramid_lookup(pyramid, _grid(1, H, W), 4)
    assert out.shape == (1, 4 * 81, H, W)
    assert torch.isfinite(out).all()
    # the window's centre at level 0 reads the pixel's own match exactly
    centre = 4 * 9 + 4
    vol = all_pairs_correlation(f1, f2)[0]
    for y in range(H):
        for x in range(W):
            torch.testing.assert_close(out[0, centre, y, x], vol[y, x, y, x])


def test_all_pairs_bytes_counts_every_level() -> None:
    assert all_pairs_bytes(1, 46, 62, num_levels=1) == 46 * 62 * 46 * 62 * 4
    assert all_pairs_bytes(2, 8, 8, num_levels=2) == 2 * 64 * (64 + 16) * 4


def test_bad_inputs_raise_one_line_value_errors() -> None:
    f = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="one shape"):
        local_correlation(f, torch.randn(1, 3, 4, 5), 1)
    with pytest.raises(ValueError, match="max_displacement"):
        local_correlation(f, f, -1)
    with pytest.raises(ValueError, match="float Tensor"):
        all_pairs_correlation(f.long(), f.long())
    with pytest.raises(ValueError, match="num_levels"):
        correlation_pyramid(all_pairs_correlation(f, f), 0)
    with pytest.raises(ValueError, match="coords"):
        pyramid_lookup(correlation_pyramid(all_pairs_correlation(f, f), 2), torch.zeros(1, 3, 4, 4), 1)
    with pytest.raises(ValueError, match="maps"):
        pyramid_lookup(correlation_pyramid(all_pairs_correlation(f, f), 2), torch.zeros(1, 2, 4, 3), 1)
