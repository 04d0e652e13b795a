"""Disparity cost volumes and soft argmin (ops/stereo_volume.py) against naive loops."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from structpred.ops import stereo_volume
from structpred.ops.stereo_volume import concat_volume, correlation_volume, soft_argmin


def naive_correlation(left: Tensor, right: Tensor, D: int) -> Tensor:
    """The definition, one pixel and disparity at a time."""
    B, C, H, W = left.shape
    out = torch.zeros(B, D, H, W, dtype=left.dtype)
    for b in range(B):
        for d in range(D):
            for y in range(H):
                for x in range(W):
                    if x - d >= 0:
                        out[b, d, y, x] = (left[b, :, y, x] * right[b, :, y, x - d]).sum() / C
    return out


def naive_concat(left: Tensor, right: Tensor, D: int) -> Tensor:
    B, C, H, W = left.shape
    out = torch.zeros(B, 2 * C, D, H, W, dtype=left.dtype)
    for d in range(D):
        for x in range(W):
            if x - d >= 0:
                out[:, :C, d, :, x] = left[:, :, :, x]
                out[:, C:, d, :, x] = right[:, :, :, x - d]
    return out


def _pair(
    B: int, C: int, H: int, W: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g, dtype=dtype), torch.randn(
        B, C, H, W, generator=g, dtype=dtype
    )


# (B, C, H, W, D): ordinary, D = 1, D > W, 1 x 1 maps, a row wider than one GEMM chunk (32) with
# D spanning the chunk seam, C = 1.
CASES = [
    (2, 5, 4, 7, 3),
    (1, 3, 2, 6, 1),
    (1, 2, 3, 4, 9),
    (2, 3, 1, 1, 4),
    (1, 4, 2, 70, 20),
    (1, 1, 3, 5, 2),
]


@pytest.mark.parametrize("case", CASES)
def test_correlation_volume_matches_the_definition(case: tuple[int, ...]) -> None:
    B, C, H, W, D = case
    left, right = _pair(B, C, H, W)
    out = correlation_volume(left, right, D)
    assert out.shape == (B, D, H, W)
    torch.testing.assert_close(out, naive_correlation(left, right, D), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_concat_volume_matches_the_definition(case: tuple[int, ...]) -> None:
    B, C, H, W, D = case
    left, right = _pair(B, C, H, W)
    out = concat_volume(left, right, D)
    assert out.shape == (B, 2 * C, D, H, W)
    torch.testing.assert_close(out, naive_concat(left, right, D), atol=0, rtol=0)


@pytest.mark.parametrize("case", CASES + [(1, 4, 3, 5, 9), (2, 3, 4, 6, 6)])
def test_concat_volume_slice_fill_equals_the_unfold(case: tuple[int, ...], monkeypatch) -> None:
    """The inference fill (slice copies, no zero fill) is bit-equal to the unfold + cat path."""
    B, C, H, W, D = case
    left, right = _pair(B, C, H, W)
    unfold = concat_volume(left, right, D)  # small: the unfold path
    monkeypatch.setattr(stereo_volume, "SLICE_FILL_ELEMENTS", 1)
    with torch.no_grad():
        sliced = concat_volume(left, right, D)
    torch.testing.assert_close(sliced, unfold, atol=0, rtol=0)
    torch.testing.assert_close(sliced, naive_concat(left, right, D), atol=0, rtol=0)
    # a gradient keeps the unfold path (its backward is one strided sum)
    grad_left = left.clone().requires_grad_(True)
    assert concat_volume(grad_left, right, D).grad_fn.name() == "CatBackward0"


def test_a_shifted_copy_peaks_at_its_disparity() -> None:
    g = torch.Generator().manual_seed(1)
    right = torch.randn(1, 16, 4, 40, generator=g)
    left = torch.zeros_like(right)
    left[..., 5:] = right[..., :-5]  # left x shows right x - 5
    volume = correlation_volume(left, right, 12)
    assert bool((volume[0, :, :, 12:].argmax(0) == 5).all())


def test_gradcheck_float64() -> None:
    left, right = _pair(1, 3, 2, 6, seed=2, dtype=torch.float64)
    left.requires_grad_(True)
    right.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: correlation_volume(a, b, 4), (left, right))
    assert torch.autograd.gradcheck(lambda a, b: concat_volume(a, b, 4), (left, right))
    cost = torch.randn(2, 5, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: soft_argmin(c, 1), (cost,))
    assert torch.autograd.gradcheck(lambda c: soft_argmin(c, 2, kind="logits"), (cost,))


def test_soft_argmin_is_the_expected_index() -> None:
    g = torch.Generator().manual_seed(3)
    cost = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    out = soft_argmin(cost, dim=1)
    assert out.shape == (2, 1, 3, 4)
    for b in range(2):
        for y in range(3):
            for x in range(4):
                p = torch.exp(-cost[b, :, y, x])
                expected = (p * torch.arange(6, dtype=torch.float64)).sum() / p.sum()
                assert float(out[b, 0, y, x]) == pytest.approx(float(expected), rel=1e-12)
    torch.testing.assert_close(soft_argmin(-cost, 1, kind="logits"), out)
    # a sharp minimum reads as its index; the 5-D layout [B, 1, D, H, W] works along dim 2
    sharp = torch.full((1, 1, 8, 2, 2), 100.0)
    sharp[0, 0, 5] = 0.0
    assert torch.allclose(soft_argmin(sharp, dim=2), torch.full((1, 1, 1, 2, 2), 5.0))
    assert soft_argmin(torch.randn(3, 1, 2), dim=1).abs().max() == 0  # D = 1: plane 0


def test_bad_input_is_a_clear_value_error() -> None:
    a = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="left .* and right .* must have one shape"):
        correlation_volume(a, torch.randn(1, 2, 3, 5), 2)
    with pytest.raises(ValueError, match=r"left must be a float Tensor\[B, C, H, W\]"):
        concat_volume(a[0], a[0], 2)
    with pytest.raises(ValueError, match="right must be a float"):
        correlation_volume(a, a.long(), 2)
    with pytest.raises(ValueError, match="share dtype"):
        concat_volume(a, a.double(), 2)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="max_disp must be an int >= 1"):
            correlation_volume(a, a, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        soft_argmin(a, 1, kind="prob")
    with pytest.raises(ValueError, match="dim must be an int"):
        soft_argmin(a, 4)
    with pytest.raises(ValueError, match="is empty"):
        soft_argmin(torch.zeros(1, 0, 2), 1)
    with pytest.raises(ValueError, match="float Tensor"):
        soft_argmin(torch.zeros(2, 3, dtype=torch.long), 1)
