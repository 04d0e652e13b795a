"""``structpred.ops.ssim.ssim``: a per-window loop reference, scikit-image (the peer, used only
here), float64 ``gradcheck``, edge cases and bad input.

The loop reference computes each 3 x 3 window's statistics from the formula in Python floats:
means, biased variances and covariance (divide by 9), then SSIM with C1 = 0.01^2, C2 = 0.03^2.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import Tensor

from structpred.ops.ssim import ssim


def ref_ssim(x: Tensor, y: Tensor, c1: float = 0.01**2, c2: float = 0.03**2) -> Tensor:
    """Window-by-window reference (float64)."""
    B, C, H, W = x.shape
    out = torch.zeros(B, C, H - 2, W - 2, dtype=torch.float64)
    for b, c, i, j in itertools.product(range(B), range(C), range(H - 2), range(W - 2)):
        a = [float(v) for v in x[b, c, i : i + 3, j : j + 3].flatten()]
        e = [float(v) for v in y[b, c, i : i + 3, j : j + 3].flatten()]
        mx, my = sum(a) / 9, sum(e) / 9
        vx = sum((v - mx) ** 2 for v in a) / 9
        vy = sum((v - my) ** 2 for v in e) / 9
        cxy = sum((u - mx) * (v - my) for u, v in zip(a, e, strict=True)) / 9
        out[b, c, i, j] = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return out


@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (1, 1, 3, 3), (1, 2, 3, 9), (1, 1, 8, 4)])
def test_matches_loop_reference(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    out = ssim(x, y)
    assert out.shape == (shape[0], shape[1], shape[2] - 2, shape[3] - 2)
    torch.testing.assert_close(out, ref_ssim(x, y), rtol=1e-10, atol=1e-12)


def test_custom_constants_match_reference() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 1, 1, 5, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ssim(x, y, 0.1, 0.2), ref_ssim(x, y, 0.1, 0.2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_skimage_interior(seed: int) -> None:
    """skimage's full map (reflect-padded) equals ours away from its one-pixel border."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(seed)
    a = rng.random((9, 11))
    b = np.clip(a + 0.3 * rng.standard_normal((9, 11)), 0, 1)
    _, full = structural_similarity(
        a, b, win_size=3, gaussian_weights=False, use_sample_covariance=False, data_range=1.0, full=True
    )
    ours = ssim(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])[0, 0]
    np.testing.assert_allclose(ours.numpy(), full[1:-1, 1:-1], rtol=1e-9, atol=1e-12)


def test_identical_images_give_one_and_float32_works() -> None:
    x = torch.rand(1, 3, 5, 6)
    torch.testing.assert_close(ssim(x, x), torch.ones(1, 3, 3, 4))
    assert ssim(x, 1 - x).max() < 1


def test_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ssim, (x, y))


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.rand(3, 5, 5), torch.rand(3, 5, 5), "x must be a float Tensor"),
        (torch.rand(1, 1, 5, 5), torch.zeros(1, 1, 5, 5, dtype=torch.int64), "y must be a float Tensor"),
        (torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 6), "must share shape"),
        (torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5, dtype=torch.float64), "must share shape, dtype"),
        (torch.rand(1, 1, 2, 5), torch.rand(1, 1, 2, 5), "at least 3 x 3"),
        (torch.rand(0, 1, 5, 5), torch.rand(0, 1, 5, 5), "non-empty"),
        ([[0.0]], torch.rand(1, 1, 5, 5), "x must be a float Tensor"),
    ],
)
def test_bad_input(x: object, y: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ssim(x, y)  # type: ignore[arg-type]


def test_negative_constants_rejected() -> None:
    with pytest.raises(ValueError, match="c1 and c2"):
        ssim(torch.rand(1, 1, 3, 3), torch.rand(1, 1, 3, 3), c1=-1.0)
