"""The packed, zero-bordered correlation pyramid (RAFT's fast layout) against the reference ops."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.optical_flow.raft import CorrBlock

from structpred.ops.correlation import all_pairs_correlation, correlation_pyramid, pyramid_lookup
from structpred.ops.correlation_packed import (
    packed_correlation_pyramid,
    packed_lookup,
    packed_pyramid_bytes,
)


def _grid(B: int, H: int, W: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([xs, ys]).to(dtype)[None].repeat(B, 1, 1, 1)  # (B, 2 (x, y), H, W)


def _reference(f1: torch.Tensor, f2: torch.Tensor, coords: torch.Tensor, levels: int, r: int) -> torch.Tensor:
    return pyramid_lookup(correlation_pyramid(all_pairs_correlation(f1, f2), levels), coords, r)


@pytest.mark.parametrize(
    "shape,levels,radius",
    [((1, 8, 16, 20), 4, 4), ((2, 5, 9, 7), 4, 3), ((1, 3, 1, 1), 4, 2), ((1, 4, 1, 5), 3, 1),
     ((2, 4, 3, 2), 2, 0), ((1, 6, 5, 33), 1, 2)],
)
@pytest.mark.parametrize("grad", [False, True], ids=["in_place", "autograd"])
def test_packed_lookup_equals_the_reference(
    shape: tuple[int, int, int, int], levels: int, radius: int, grad: bool
) -> None:
    g = torch.Generator().manual_seed(sum(shape) + levels + radius)
    B, C, H, W = shape
    f1, f2 = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    coords = _grid(B, H, W) + 4 * torch.randn(B, 2, H, W, generator=g)  # inside and outside
    coords[:, :, 0, 0] = torch.tensor([-50.0, 70.0])  # far outside: zeros
    coords[..., -1, -1] = torch.tensor([1.0, 2.0])[:, None].expand(2, B).T  # whole pixels
    ref = _reference(f1, f2, coords, levels, radius)
    with torch.set_grad_enabled(grad):
        got = packed_lookup(packed_correlation_pyramid(f1.requires_grad_(grad), f2, levels), coords, radius)
    assert got.shape == (B, levels * (2 * radius + 1) ** 2, H, W)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-5)


def test_the_in_place_buffer_matches_the_differentiable_one() -> None:
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(2, 16, 11, 13, generator=g), torch.randn(2, 16, 11, 13, generator=g)
    with torch.no_grad():
        fast = packed_correlation_pyramid(f1, f2, 4)
    slow = packed_correlation_pyramid(f1.requires_grad_(True), f2, 4)
    assert fast.sizes == slow.sizes == ((11, 13), (5, 6), (2, 3), (1, 1))
    torch.testing.assert_close(fast.packed, slow.packed.detach(), atol=1e-6, rtol=1e-6)
    # the borders are zero in both (the lookup's zero padding)
    start = 0
    for h, w in fast.sizes:
        level = fast.packed[:, start : start + (h + 2) * (w + 2)].view(-1, h + 2, w + 2)
        ring = torch.ones(h + 2, w + 2, dtype=torch.bool)
        ring[1:-1, 1:-1] = False
        assert not level[:, ring].any()
        start += (h + 2) * (w + 2)
    assert start == fast.packed.shape[1]
    assert packed_pyramid_bytes(2, 11, 13, 4) == fast.packed.numel() * fast.packed.element_size()


def test_matches_torchvision_corr_block() -> None:
    g = torch.Generator().manual_seed(2)
    f1, f2 = torch.randn(1, 32, 24, 17, generator=g), torch.randn(1, 32, 24, 17, generator=g)
    coords = _grid(1, 24, 17) + 6 * torch.randn(1, 2, 24, 17, generator=g)
    block = CorrBlock(num_levels=4, radius=4)
    block.build_pyramid(f1, f2)
    with torch.no_grad():
        ours = packed_lookup(packed_correlation_pyramid(f1, f2, 4), coords, 4)
    torch.testing.assert_close(ours, block.index_pyramid(coords), atol=5e-5, rtol=1e-5)


def test_gradcheck_through_features_and_coords() -> None:
    g = torch.Generator().manual_seed(3)
    f1 = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    # off whole pixels, some windows over the border: bilinear reads are differentiable there
    jitter = 1.5 * torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64)
    coords = _grid(1, 4, 5, torch.float64) + 0.3 + jitter
    coords.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: packed_lookup(packed_correlation_pyramid(a, b, 2), c, 1), (f1, f2, coords)
    )


def test_gradients_reach_coords_when_the_pyramid_is_built_without_autograd() -> None:
    f1, f2 = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        pyramid = packed_correlation_pyramid(f1, f2, 2)
    coords = (_grid(1, 6, 6) + 0.4).requires_grad_(True)
    packed_lookup(pyramid, coords, 1).sum().backward()
    assert coords.grad is not None and torch.isfinite(coords.grad).all() and coords.grad.abs().sum() > 0


def test_autocast_takes_the_out_of_place_path() -> None:
    f1, f2 = torch.randn(1, 8, 6, 7), torch.randn(1, 8, 6, 7)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pyramid = packed_correlation_pyramid(f1, f2, 3)
        out = packed_lookup(pyramid, _grid(1, 6, 7), 2)
    assert pyramid.packed.dtype == torch.bfloat16
    ref = _reference(f1, f2, _grid(1, 6, 7), 3, 2)
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.02)


def test_bad_inputs_raise_one_line_value_errors() -> None:
    f = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="f2"):
        packed_correlation_pyramid(f, torch.randn(1, 3, 4), 2)
    with pytest.raises(ValueError, match="num_levels"):
        packed_correlation_pyramid(f, f, 0)
    pyramid = packed_correlation_pyramid(f, f, 2)
    with pytest.raises(ValueError, match=r"coords must be a Tensor\[1, 2, 4, 4\]"):
        packed_lookup(pyramid, torch.zeros(1, 2, 4, 5), 1)
    with pytest.raises(ValueError, match="radius"):
        packed_lookup(pyramid, _grid(1, 4, 4), -1)
