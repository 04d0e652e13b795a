"""``structpred.ops.affine_grid`` and ``grid_sample``: a naive loop reference, torch.nn.functional
(the peer, used only here), float64 ``gradcheck``, edge cases and bad input.

The naive reference samples one point at a time in Python scalars, from the documented
convention: pixel coordinate ``ix = (x + 1) (W - 1) / 2`` (align_corners) or
``(x + 1) W / 2 - 0.5``; border padding clamps it into ``[0, W - 1]``; bilinear mixes the four
neighbours (outside ones read 0); nearest rounds half to even.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from structpred.ops import affine_grid, grid_sample

COMBOS = list(itertools.product(("bilinear", "nearest"), ("zeros", "border"), (False, True)))
SHAPES = [(5, 7, 4, 6), (1, 1, 3, 3), (1, 6, 2, 5), (8, 3, 8, 3), (4, 4, 1, 1)]  # (H, W, Ho, Wo)


def _pixel(coord: float, size: int, align_corners: bool, padding_mode: str) -> float:
    ix = (coord + 1) * (size - 1) / 2 if align_corners else ((coord + 1) * size - 1) / 2
    return min(max(ix, 0.0), size - 1.0) if padding_mode == "border" else ix


def ref_grid_sample(x: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    """Point-by-point Python reference (float64 scalars)."""
    B, C, H, W = x.shape
    _, Ho, Wo, _ = grid.shape
    out = torch.zeros(B, C, Ho, Wo, dtype=torch.float64)

    def read(b: int, c: int, row: int, col: int) -> float:
        return float(x[b, c, row, col]) if 0 <= row < H and 0 <= col < W else 0.0

    for b, i, j in itertools.product(range(B), range(Ho), range(Wo)):
        ix = _pixel(float(grid[b, i, j, 0]), W, align_corners, padding_mode)
        iy = _pixel(float(grid[b, i, j, 1]), H, align_corners, padding_mode)
        for c in range(C):
            if mode == "nearest":
                out[b, c, i, j] = read(b, c, round(iy), round(ix))  # Python's round: half to even
            else:
                x0, y0 = math.floor(ix), math.floor(iy)
                fx, fy = ix - x0, iy - y0
                out[b, c, i, j] = (
                    read(b, c, y0, x0) * (1 - fx) * (1 - fy)
                    + read(b, c, y0, x0 + 1) * fx * (1 - fy)
                    + read(b, c, y0 + 1, x0) * (1 - fx) * fy
                    + read(b, c, y0 + 1, x0 + 1) * fx * fy
                )
    return out


def _inputs(H: int, W: int, Ho: int, Wo: int, dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, H, W, generator=g, dtype=dtype)
    grid = torch.rand(2, Ho, Wo, 2, generator=g, dtype=dtype) * 3 - 1.5  # many points outside
    return x, grid


def _pixel_to_norm(ix: Tensor, size: int, align_corners: bool) -> Tensor:
    """Inverse of the unnormalisation (exact for the dyadic values used below)."""
    return ix * 2 / (size - 1) - 1 if align_corners else (2 * ix + 1) / size - 1


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("mode,padding_mode,align_corners", COMBOS)
@pytest.mark.parametrize("H,W,Ho,Wo", SHAPES)
def test_matches_naive_reference(
    mode: str, padding_mode: str, align_corners: bool, H: int, W: int, Ho: int, Wo: int
) -> None:
    x, grid = _inputs(H, W, Ho, Wo, torch.float64)
    ours = grid_sample(x, grid, mode, padding_mode, align_corners)
    torch.testing.assert_close(ours, ref_grid_sample(x, grid, mode, padding_mode, align_corners))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode,padding_mode,align_corners", COMBOS)
@pytest.mark.parametrize("H,W,Ho,Wo", SHAPES)
def test_values_and_gradients_match_torch(
    dtype: torch.dtype, mode: str, padding_mode: str, align_corners: bool, H: int, W: int, Ho: int, Wo: int
) -> None:
    x, grid = _inputs(H, W, Ho, Wo, dtype, seed=1)
    x.requires_grad_()
    grid.requires_grad_(mode == "bilinear")
    ours = grid_sample(x, grid, mode, padding_mode, align_corners)
    peer = F.grid_sample(x, grid, mode, padding_mode, align_corners)
    torch.testing.assert_close(ours, peer)
    upstream = torch.randn_like(ours)
    wrt = (x, grid) if mode == "bilinear" else (x,)
    for g_ours, g_peer in zip(
        torch.autograd.grad(ours, wrt, upstream), torch.autograd.grad(peer, wrt, upstream), strict=True
    ):
        torch.testing.assert_close(g_ours, g_peer)


@pytest.mark.parametrize("mode,padding_mode,align_corners", COMBOS)
def test_points_on_borders_centres_and_ties(mode: str, padding_mode: str, align_corners: bool) -> None:
    """Pixel coordinates exactly on centres, half-way (nearest ties), on and beyond the borders."""
    H, W = 4, 6
    x = torch.randn(1, 2, H, W, dtype=torch.float64, requires_grad=True)
    steps = torch.arange(-6, 2 * W + 6, dtype=torch.float64) / 4  # pixel coords -1.5 .. W+1.25, /4 steps
    px, py = torch.meshgrid(steps, steps[: 2 * H + 12], indexing="xy")  # (Hg, Wg) each
    grid = torch.stack([_pixel_to_norm(px, W, align_corners), _pixel_to_norm(py, H, align_corners)], -1)
    grid = grid[None].requires_grad_(mode == "bilinear")  # (1, Hg, Wg, 2)
    ours = grid_sample(x, grid, mode, padding_mode, align_corners)
    peer = F.grid_sample(x, grid, mode, padding_mode, align_corners)
    torch.testing.assert_close(ours, peer, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        ours, ref_grid_sample(x.detach(), grid.detach(), mode, padding_mode, align_corners)
    )
    upstream = torch.randn_like(ours)
    wrt = (x, grid) if mode == "bilinear" else (x,)
    for g_ours, g_peer in zip(
        torch.autograd.grad(ours, wrt, upstream), torch.autograd.grad(peer, wrt, upstream), strict=True
    ):
        torch.testing.assert_close(g_ours, g_peer, rtol=0, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_nearest_rounds_half_to_even(align_corners: bool) -> None:
    W = 8
    x = torch.arange(W, dtype=torch.float32).view(1, 1, 1, W)  # the value is the column
    px = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    grid = torch.stack([_pixel_to_norm(px, W, align_corners), torch.zeros_like(px)], -1).view(1, 1, -1, 2)
    ours = grid_sample(x, grid, "nearest", align_corners=align_corners).flatten()
    assert ours.tolist() == [0.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0]
    assert torch.equal(ours, F.grid_sample(x, grid, "nearest", align_corners=align_corners).flatten())


def test_far_outside_and_nan_points_read_zero() -> None:
    x = torch.ones(1, 1, 3, 3)
    grid = torch.tensor([[[[5.0, 0.0], [-1e6, 1e6], [0.0, -3.0], [float("nan"), 0.0]]]])  # (1, 1, 4, 2)
    out = grid_sample(x, grid, "nearest")
    assert out.flatten().tolist() == [0.0, 0.0, 0.0, 0.0]
    assert grid_sample(x, grid[:, :, :3], "bilinear").abs().max() == 0


def test_nearest_gives_no_gradient_to_the_grid() -> None:
    x = torch.randn(1, 1, 4, 4)
    grid = (torch.rand(1, 3, 3, 2) * 2 - 1).requires_grad_()
    out = grid_sample(x, grid, "nearest")
    assert not out.requires_grad


# ----------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gradcheck_bilinear(padding_mode: str, align_corners: bool) -> None:
    x, grid = _inputs(4, 5, 3, 4, torch.float64, seed=2)
    grid = grid * 0.8  # some inside, some outside; random points avoid the floor's kinks
    x.requires_grad_()
    grid.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, g: grid_sample(a, g, "bilinear", padding_mode, align_corners), (x, grid)
    )


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_gradcheck_nearest_wrt_input(padding_mode: str) -> None:
    x, grid = _inputs(4, 5, 3, 4, torch.float64, seed=3)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: grid_sample(a, grid, "nearest", padding_mode), (x,))


@pytest.mark.parametrize("align_corners", [False, True])
def test_gradcheck_affine_grid_then_sample(align_corners: bool) -> None:
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(2, 2, 3, generator=g, dtype=torch.float64)
    theta = (torch.eye(2, 3, dtype=torch.float64) + 0.2 * noise).requires_grad_()
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)

    def warp(a: Tensor, t: Tensor) -> Tensor:
        return grid_sample(a, affine_grid(t, (2, 2, 4, 3), align_corners), align_corners=align_corners)

    assert torch.autograd.gradcheck(warp, (x, theta))


# ----------------------------------------------------------------------------- affine_grid


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")  # torch warns on unit-size grids
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(3, 1, 5, 7), (3, 2, 1, 1), (3, 1, 1, 4), (3, 4, 6, 2)])
def test_affine_grid_matches_torch(align_corners: bool, size: tuple[int, int, int, int]) -> None:
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(3, 2, 3, dtype=dtype, generator=torch.Generator().manual_seed(5))
        ours = affine_grid(theta, size, align_corners)
        assert ours.shape == (size[0], size[2], size[3], 2)
        torch.testing.assert_close(ours, F.affine_grid(theta, list(size), align_corners))


def test_affine_grid_layout_is_x_then_y() -> None:
    grid = affine_grid(torch.eye(2, 3)[None], (1, 1, 2, 3), align_corners=True)
    assert grid[0, 0, 0].tolist() == [-1.0, -1.0]  # top-left
    assert grid[0, 0, 2].tolist() == [1.0, -1.0]  # top-right: x varies along W
    assert grid[0, 1, 0].tolist() == [-1.0, 1.0]  # bottom-left: y varies along H


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_identity_theta_reproduces_the_input(align_corners: bool, mode: str) -> None:
    x = torch.rand(2, 3, 7, 5)
    theta = torch.eye(2, 3).expand(2, 2, 3)
    out = grid_sample(x, affine_grid(theta, x.shape, align_corners), mode, align_corners=align_corners)
    torch.testing.assert_close(out, x)


def test_translation_by_one_pixel_shifts_the_image() -> None:
    x = torch.rand(1, 1, 4, 8)
    theta = torch.tensor([[[1.0, 0.0, 2.0 / 8], [0.0, 1.0, 0.0]]])  # +1 pixel in x (align_corners=False)
    out = grid_sample(x, affine_grid(theta, x.shape))
    torch.testing.assert_close(out[..., :-1], x[..., 1:])
    assert out[..., -1].abs().max() < 1e-6  # the column shifted in from outside reads 0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"input": torch.zeros(3, 4, 4)}, "input must be a Tensor"),
        ({"input": torch.zeros(1, 1, 4, 4, dtype=torch.int64)}, "floating point"),
        ({"input": torch.zeros(1, 1, 0, 4)}, "non-empty spatial"),
        ({"grid": torch.zeros(1, 2, 2, 3)}, "grid must be a Tensor"),
        ({"grid": torch.zeros(1, 2, 2)}, "grid must be a Tensor"),
        ({"grid": torch.zeros(2, 2, 2, 2)}, "grid has 2 images but input has 1"),
        ({"grid": torch.zeros(1, 2, 2, 2, dtype=torch.float64)}, "same dtype"),
        ({"mode": "bicubic"}, "mode must be one of"),
        ({"padding_mode": "reflection"}, "padding_mode must be one of"),
        ({"align_corners": None}, "align_corners must be a bool"),
    ],
)
def test_grid_sample_bad_input(kwargs: dict, match: str) -> None:
    args = {"input": torch.zeros(1, 1, 4, 4), "grid": torch.zeros(1, 2, 2, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        grid_sample(**args)


@pytest.mark.parametrize(
    "theta,size,match",
    [
        (torch.zeros(1, 3, 3), (1, 1, 4, 4), r"theta must be a Tensor\[B, 2, 3\]"),
        (torch.zeros(2, 3), (1, 1, 4, 4), r"theta must be a Tensor\[B, 2, 3\]"),
        (torch.zeros(1, 2, 3, dtype=torch.int64), (1, 1, 4, 4), "floating point"),
        (torch.zeros(1, 2, 3), (1, 4, 4), r"size must be \(B, C, H, W\)"),
        (torch.zeros(1, 2, 3), (1, 1, 0, 4), "4 positive ints"),
        (torch.zeros(1, 2, 3), (1, 1, 4.0, 4), "4 positive ints"),
        (torch.zeros(2, 2, 3), (3, 1, 4, 4), "theta holds 2 maps but size asks for a batch of 3"),
    ],
)
def test_affine_grid_bad_input(theta: Tensor, size: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        affine_grid(theta, size)


# ---------------------------------------------------------------------------------------------- flow_warp


def test_flow_warp_whole_pixel_flow_moves_pixels_exactly() -> None:
    from structpred.ops.warp import flow_warp

    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 6, 7, generator=g)
    flow = torch.zeros(2, 2, 6, 7)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # out[y, x] = image[y - 1, x + 2]
    out = flow_warp(image, flow)
    torch.testing.assert_close(out[:, :, 1:, :5], image[:, :, :-1, 2:])
    assert (out[:, :, 0] == 0).all() and (out[:, :, :, 5:] == 0).all()  # read outside: zeros
    border = flow_warp(image, flow, padding_mode="border")
    torch.testing.assert_close(border[:, :, 0, :5], image[:, :, 0, 2:])


def test_flow_warp_matches_torch_grid_sample_and_gradcheck() -> None:
    from structpred.ops.warp import flow_warp

    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    flow = (3 * torch.randn(1, 2, 5, 8, generator=g, dtype=torch.float64)).requires_grad_(True)
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(8.0), indexing="ij")
    grid = torch.stack([(xs + flow[:, 0]) * 2 / 7 - 1, (ys + flow[:, 1]) * 2 / 4 - 1], dim=-1)
    ref = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    torch.testing.assert_close(flow_warp(image, flow), ref)
    assert torch.autograd.gradcheck(flow_warp, (image, flow))


def test_flow_warp_bad_input() -> None:
    from structpred.ops.warp import flow_warp

    with pytest.raises(ValueError, match="flow must be"):
        flow_warp(torch.rand(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="flow's H, W"):
        flow_warp(torch.rand(1, 3, 4, 5), torch.zeros(1, 2, 4, 4))
