"""Correlation (cost) volumes for optical flow and stereo: a local window and all pairs.

Two ways to compare every pixel of one feature map with pixels of another:

* :func:`local_correlation` (FlowNetC, Dosovitskiy et al. 2015; PWC-Net, Sun et al. 2018): each
  pixel of ``f1`` against the ``(2d + 1)^2`` pixels of ``f2`` within ``d`` of it, the mean of the
  channel-wise products. ``[B, (2d + 1)^2, H, W]``; memory grows with ``d^2``, not with the image.
* :func:`all_pairs_correlation` + :func:`correlation_pyramid` + :func:`pyramid_lookup` (RAFT,
  Teed & Deng 2020): every pixel against every pixel, ``f1 . f2 / sqrt(C)`` ``[B, H, W, H, W]``,
  average-pooled over the second image's axes into ``L`` levels; each refinement step reads a
  ``(2r + 1)^2`` window around the current match ``p + flow(p)`` (scaled by ``2^-l`` on level l)
  with bilinear interpolation, zero outside. The lookup gathers one ``(2r + 2)^2`` integer patch
  per pixel and blends it with the four bilinear weights, which are the same for the whole
  window (its offsets are whole pixels); that is ``grid_sample(..., align_corners=True)`` on the
  window's points, read directly. No size is too small: a one-pixel level reads zeros around
  its single value (torchvision's normalisation divides by ``W - 1`` there and returns NaN).

Shape shorthand:
    B: images, C: channels, H, W: feature map height and width, N = B*H*W: pixels of f1,
    d: local displacement radius, r: lookup radius, L: pyramid levels, S = 2r + 2: patch side.

Channel orders (what trained weights expect):
    * local: displacement ``(dy, dx)`` row-major, channel ``(dy + d) * (2d + 1) + (dx + d)``.
    * lookup: level-major, then **x-offset-major** within a level, channel
      ``l * (2r + 1)^2 + (dx + r) * (2r + 1) + (dy + r)`` — RAFT's (and torchvision's) order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK = 32  # f1 pixels per row chunk of local_correlation's banded GEMM


def _check_pair(f1: object, f2: object, where: str) -> None:
    for name, f in (("f1", f1), ("f2", f2)):
        if not isinstance(f, Tensor) or f.dim() != 4 or not f.is_floating_point():
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"{where}: {name} must be a float Tensor[B, C, H, W], got {got}")
    assert isinstance(f1, Tensor) and isinstance(f2, Tensor)
    if f1.shape != f2.shape:
        raise ValueError(f"{where}: f1 {tuple(f1.shape)} and f2 {tuple(f2.shape)} must have one shape")
    if f1.dtype != f2.dtype or f1.device != f2.device:
        raise ValueError(f"{where}: f1 and f2 must share dtype and device")


def _check_int(value: object, name: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def local_correlation(f1: Tensor, f2: Tensor, max_displacement: int) -> Tensor:
    """Mean channel product of each ``f1`` pixel with ``f2`` pixels up to ``max_displacement`` away.

    ``out[b, (dy + d) * (2d + 1) + (dx + d), y, x] = mean_c f1[b, c, y, x] * f2[b, c, y + dy, x + dx]``,
    zero where ``(y + dy, x + dx)`` falls outside ``f2``.

    Args:
        f1, f2 (Tensor[B, C, H, W]): feature maps of one shape, dtype and device.
        max_displacement: d >= 0, in feature pixels.

    Returns:
        Tensor[B, (2d + 1)^2, H, W].
    """
    _check_pair(f1, f2, "local_correlation")
    d = _check_int(max_displacement, "local_correlation: max_displacement", 0)
    B, C, H, W = f1.shape
    side = 2 * d + 1
    # Banded GEMM: per image row, a chunk of ``c`` f1 pixels against the ``c + 2d`` f2 pixels that
    # any of them can reach, one (c x C) @ (C x (c + 2d)) product; the wanted products are the
    # band prod[x, x + k], k = 0..2d, read as a strided view. (c + 2d) / (2d + 1) times the needed
    # multiply-adds, but in a GEMM: ~25x faster than elementwise products on the CPU at 46 x 62.
    c = min(_CHUNK, W)
    chunks = -(-W // c)
    Wp = chunks * c  # W padded to whole chunks
    N = B * H * chunks
    # (B, C, H, Wp) -> (B, H, Wp, C) -> (N, c, C): rows of f1 pixels, chunk by chunk
    a = F.pad(f1, (0, Wp - W)).permute(0, 2, 3, 1).reshape(N, c, C)
    padded = F.pad(f2, (d, d + Wp - W, d, d))  # (B, C, H + 2d, Wp + 2d)
    rows = []
    for dy in range(side):
        band = padded[:, :, dy : dy + H, :]  # (B, C, H, Wp + 2d): f2 rows shifted by dy - d
        reach = band.unfold(3, c + 2 * d, c)  # (B, C, H, chunks, c + 2d), overlapping windows
        b = reach.permute(0, 2, 3, 1, 4).reshape(N, C, c + 2 * d)  # (N, C, c + 2d)
        prod = torch.bmm(a, b)  # (N, c, c + 2d)
        s0, s1, s2 = prod.stride()
        diagonal = prod.as_strided((N, c, side), (s0, s1 + s2, s2))  # [n, x, k] = prod[n, x, x + k]
        # (N, c, side) -> (B, H, Wp, side) -> crop -> (B, side (dx), H, W)
        rows.append(diagonal.reshape(B, H, Wp, side)[:, :, :W].permute(0, 3, 1, 2))
    return torch.cat(rows, dim=1) / max(C, 1)  # (B, side * side, H, W), dy-major


def all_pairs_correlation(f1: Tensor, f2: Tensor) -> Tensor:
    """Every ``f1`` pixel against every ``f2`` pixel: ``f1 . f2 / sqrt(C)``.

    Args:
        f1, f2 (Tensor[B, C, H, W]).

    Returns:
        Tensor[B, H, W, H, W]: ``[b, y1, x1, y2, x2]``. Its size is ``B (H W)^2`` floats
        (:func:`all_pairs_bytes`).
    """
    _check_pair(f1, f2, "all_pairs_correlation")
    B, C, H, W = f1.shape
    a = f1.reshape(B, C, H * W).transpose(1, 2)  # (B, HW, C)
    b = f2.reshape(B, C, H * W)  # (B, C, HW)
    scale = 1.0 / (C ** 0.5) if C else 1.0
    return (torch.bmm(a, b) * scale).reshape(B, H, W, H, W)  # (B, HW, HW) -> (B, H, W, H, W)


def all_pairs_bytes(batch: int, height: int, width: int, num_levels: int = 4, itemsize: int = 4) -> int:
    """Bytes held by the all-pairs volume and its pooled levels for ``batch`` maps of H x W."""
    total, h, w = 0, height, width
    for _ in range(num_levels):
        total += batch * height * width * h * w * itemsize
        h, w = h // 2, w // 2
    return total


def correlation_pyramid(volume: Tensor, num_levels: int = 4) -> list[Tensor]:
    """Average-pool the all-pairs volume ``num_levels - 1`` times over its second image's axes.

    Args:
        volume (Tensor[B, H, W, H2, W2]): from :func:`all_pairs_correlation`.

    Returns:
        ``num_levels`` Tensors ``[B*H*W, 1, H2 / 2^l, W2 / 2^l]`` (floor division; a level that
        would be empty keeps one pixel's worth only while the previous level has >= 2 pixels).
    """
    if not isinstance(volume, Tensor) or volume.dim() != 5:
        got = tuple(volume.shape) if isinstance(volume, Tensor) else type(volume).__name__
        raise ValueError(f"correlation_pyramid: volume must be a Tensor[B, H, W, H2, W2], got {got}")
    levels = _check_int(num_levels, "correlation_pyramid: num_levels", 1)
    B, H, W, H2, W2 = volume.shape
    level = volume.reshape(B * H * W, 1, H2, W2)  # one single-channel map per f1 pixel
    pyramid = [level]
    for _ in range(levels - 1):
        kh, kw = min(2, level.shape[-2]), min(2, level.shape[-1])  # a 1-pixel axis stays 1 pixel
        level = F.avg_pool2d(level, kernel_size=(kh, kw), stride=(kh, kw)) if kh * kw > 1 else level
        pyramid.append(level)
    return pyramid


def _lookup_level(level: Tensor, cx: Tensor, cy: Tensor, radius: int) -> Tensor:
    """Bilinear ``(2r + 1)^2`` windows of one level around ``(cx, cy)``.

    Args:
        level (Tensor[N, 1, h, w]); cx, cy (Tensor[N]) pixel coordinates on this level.

    Returns:
        Tensor[N, (2r + 1)^2], x-offset-major.
    """
    N, _, h, w = level.shape
    side = 2 * radius + 2  # S: whole-pixel patch that covers every bilinear tap of the window
    x0, y0 = cx.detach().floor(), cy.detach().floor()
    fx, fy = (cx - x0)[:, None], (cy - y0)[:, None]  # (N, 1): shared by the whole window
    steps = torch.arange(-radius, radius + 2, device=level.device, dtype=torch.int64)  # (S,)
    cols = x0.to(torch.int64)[:, None] + steps  # (N, S)
    rows = y0.to(torch.int64)[:, None] + steps  # (N, S)
    # The patch is gathered transposed, (N, S cols x, S rows y), so the window comes out x-major
    # (RAFT's channel order) with no copy at the end.
    index = cols.clamp(0, w - 1)[:, :, None] + rows.clamp(0, h - 1)[:, None, :] * w  # (N, S, S)
    patch = level.reshape(N, h * w).gather(1, index.reshape(N, side * side)).reshape(N, side, side)
    # Separable bilinear blend; a tap outside the level gets weight 0 (zero padding), folded into
    # the (N, S - 1) weights so no mask touches the (N, S, S) patch.
    col_in = ((cols >= 0) & (cols < w)).to(patch.dtype)  # (N, S)
    row_in = ((rows >= 0) & (rows < h)).to(patch.dtype)
    west, east = (1 - fx) * col_in[:, :-1], fx * col_in[:, 1:]  # (N, S - 1) each
    north, south = (1 - fy) * row_in[:, :-1], fy * row_in[:, 1:]
    down = patch[:, :, :-1] * north[:, None, :] + patch[:, :, 1:] * south[:, None, :]  # (N, S x, 2r+1 dy)
    window = down[:, :-1] * west[:, :, None] + down[:, 1:] * east[:, :, None]  # (N, 2r+1 dx, 2r+1 dy)
    return window.reshape(N, -1)  # (N, (2r + 1)^2), dx-major


def pyramid_lookup(pyramid: list[Tensor], coords: Tensor, radius: int = 4) -> Tensor:
    """Read each pyramid level in a ``(2r + 1)^2`` window around ``coords / 2^l`` (RAFT's lookup).

    Args:
        pyramid: from :func:`correlation_pyramid`, levels ``[B*H*W, 1, h_l, w_l]``.
        coords (Tensor[B, 2, H, W]): (x, y) pixel positions in the second map, level 0's scale
            (``p + flow(p)``); gradients flow to them and to the pyramid.
        radius: r >= 0.

    Returns:
        Tensor[B, L * (2r + 1)^2, H, W] (channel order in the module docstring).
    """
    r = _check_int(radius, "pyramid_lookup: radius", 0)
    if not isinstance(coords, Tensor) or coords.dim() != 4 or coords.shape[1] != 2:
        got = tuple(coords.shape) if isinstance(coords, Tensor) else type(coords).__name__
        raise ValueError(f"pyramid_lookup: coords must be a Tensor[B, 2, H, W] of (x, y), got {got}")
    if not pyramid:
        raise ValueError("pyramid_lookup: the pyramid has no level")
    B, _, H, W = coords.shape
    N = B * H * W
    if pyramid[0].shape[0] != N:
        raise ValueError(f"pyramid_lookup: the pyramid has {pyramid[0].shape[0]} maps, coords {N} pixels")
    points = coords.permute(0, 2, 3, 1).reshape(N, 2)  # (B, 2, H, W) -> (N, 2)
    cx, cy = points[:, 0].to(pyramid[0].dtype), points[:, 1].to(pyramid[0].dtype)
    out = []
    for lvl, level in enumerate(pyramid):
        scale = 2.0 ** -lvl
        out.append(_lookup_level(level, cx * scale, cy * scale, r))  # (N, (2r + 1)^2)
    # (N, L * (2r + 1)^2) -> (B, H, W, K) -> (B, K, H, W)
    return torch.cat(out, dim=1).reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
