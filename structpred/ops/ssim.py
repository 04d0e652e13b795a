"""Structural similarity (SSIM) as Godard et al. (CVPR 2017) compute it for their appearance loss.

Shape shorthand:
    B: images, C: channels, H, W: image size, Ho = H - 2, Wo = W - 2 (the valid 3 x 3 windows).

Convention (the reference code's ``SSIM``, ``monodepth_model.py``): the local statistics are
**3 x 3 box averages** (not Gaussian-weighted), computed per channel with **no padding**: the
output holds one value per fully inside window, ``[B, C, H - 2, W - 2]``. Variances and the
covariance are the biased (population, divide-by-9) ones,
``sigma_x = E[x^2] - E[x]^2``, ``sigma_xy = E[xy] - E[x] E[y]``, and

    SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x + sigma_y + C2))

with ``C1 = 0.01^2``, ``C2 = 0.03^2`` (``K1 = 0.01``, ``K2 = 0.03`` at data range 1: images in
[0, 1]). Valid output rather than padding: a padded window mixes in pixels that are not in the
image, so its SSIM would measure the padding; the border loses one pixel each side instead.
This is scikit-image's ``structural_similarity(..., win_size=3, gaussian_weights=False,
use_sample_covariance=False, data_range=1, full=True)`` map without its one-pixel border.
The loss form ``clip((1 - SSIM) / 2, 0, 1)`` lives in :mod:`structpred.heads.monodepth_loss`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

C1 = 0.01**2
C2 = 0.03**2


def ssim(x: Tensor, y: Tensor, c1: float = C1, c2: float = C2) -> Tensor:
    """Per-window SSIM of ``x`` and ``y`` over 3 x 3 box windows, valid (no padding).

    Args:
        x, y (Tensor[B, C, H, W]): float images of one shape, dtype and device (range [0, 1] for
            the default constants), ``H, W >= 3``.
        c1, c2: the stabilising constants (the paper's ``0.01^2`` and ``0.03^2``).

    Returns:
        Tensor[B, C, H - 2, W - 2]: SSIM in [-1, 1], 1 where the windows are identical.
    """
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor) or t.dim() != 4 or not t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"ssim: {name} must be a float Tensor[B, C, H, W], got {got}")
    if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device:
        raise ValueError(
            f"ssim: x {tuple(x.shape)} {x.dtype} and y {tuple(y.shape)} {y.dtype} must share shape, dtype "
            "and device"
        )
    if x.shape[-2] < 3 or x.shape[-1] < 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"ssim: images must be non-empty and at least 3 x 3, got {tuple(x.shape)}")
    if c1 < 0 or c2 < 0:
        raise ValueError(f"ssim: c1 and c2 must be >= 0, got {c1}, {c2}")

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, 3, stride=1)  # (B, C, H, W) -> (B, C, Ho, Wo), valid windows

    mu_x, mu_y = mean(x), mean(y)
    sigma_x = mean(x * x) - mu_x * mu_x
    sigma_y = mean(y * y) - mu_y * mu_y
    sigma_xy = mean(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return numerator / denominator
