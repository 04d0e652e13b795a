"""RAFT's correlation pyramid in one zero-bordered buffer, and its lookup (the fast layout).

Same values as :func:`~structpred.ops.correlation.correlation_pyramid` +
:func:`~structpred.ops.correlation.pyramid_lookup` (the reference, kept for readers and tests),
laid out for speed, since RAFT reads the pyramid once per update (12 times per pair):

* **One buffer** ``[N, T]``: row ``n`` holds f1 pixel ``n``'s maps of every level, each with a
  one-pixel border of zeros, one after the other (``T = sum_l (h_l + 2)(w_l + 2)``). A lookup
  is then one ``gather`` for all levels instead of one per level.
* **The zero border replaces the masks.** Bilinear reads outside a level are zero (RAFT's
  ``grid_sample`` padding). Clamping every tap to ``[-1, w_l]`` x ``[-1, h_l]`` lands a tap
  that is outside on the border, which holds zero, so no in-bounds mask is needed and the
  blend is two ``lerp``s (rows, then columns) with the window's shared fractions.
* **Level 0 is born bordered**: the volume is ``f1 . pad(f2) / sqrt(C)`` (a zero feature
  vector gives a zero correlation). Without autograd the GEMM writes straight into the buffer;
  with autograd, or under ``torch.export`` / tracing / autocast, the same values come from
  differentiable out-of-place ops.

The border costs memory: ``(h + 2)(w + 2) / (h w)`` of the volume (+8 % at RAFT's 46 x 62 for a
368 x 496 frame; :func:`packed_pyramid_bytes`).

Shape shorthand as in :mod:`structpred.ops.correlation`: B, C, H, W (feature maps), N = B*H*W,
L levels of ``h_l x w_l``, r lookup radius, S = 2r + 2 patch side. Channel order of the lookup:
level-major, then x-offset-major, RAFT's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .correlation import _check_int, _check_pair


class PackedPyramid(NamedTuple):
    """The pyramid of :func:`packed_correlation_pyramid`.

    Attributes:
        packed (Tensor[N, T]): every level of every f1 pixel, zero-bordered, level after level.
        sizes: ``(h_l, w_l)`` of each level, without the border.
        batch, height, width: B, H, W of the f1 map (N = B*H*W).
    """

    packed: Tensor
    sizes: tuple[tuple[int, int], ...]
    batch: int
    height: int
    width: int


def _level_sizes(height: int, width: int, num_levels: int) -> tuple[tuple[int, int], ...]:
    """Level sizes by :func:`correlation_pyramid`'s rule: halve (floor); a 1-pixel axis stays 1."""
    sizes = [(height, width)]
    for _ in range(num_levels - 1):
        h, w = sizes[-1]
        sizes.append((h // min(2, h), w // min(2, w)))
    return tuple(sizes)


def packed_pyramid_bytes(batch: int, height: int, width: int, num_levels: int = 4, itemsize: int = 4) -> int:
    """Bytes of the packed, bordered pyramid for ``batch`` maps of ``height x width``."""
    total = sum((h + 2) * (w + 2) for h, w in _level_sizes(height, width, num_levels))
    return batch * height * width * total * itemsize


def _in_place_ok(f1: Tensor, f2: Tensor) -> bool:
    """True when the GEMM may write into the buffer: no autograd, no graph capture, no autocast."""
    if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return not torch.is_autocast_enabled(f1.device.type)


def _pool_into(prev: Tensor, out: Tensor) -> Tensor:
    """``avg_pool2d`` of ``prev`` (a strided view) written into ``out`` (another), no copies.

    Args:
        prev (Tensor[N, 1, h', w']); out (Tensor[N, 1, h, w]) with ``h = h' // k_h`` and
        ``k_h = min(2, h')`` (the same for w).

    Returns:
        ``out``. The taps are summed in ``avg_pool2d``'s order, then scaled by ``1 / (k_h k_w)``.
    """
    h, w = out.shape[-2:]
    kh, kw = min(2, prev.shape[-2]), min(2, prev.shape[-1])
    taps = [prev[:, :, i : i + kh * h : kh, j : j + kw * w : kw] for i in range(kh) for j in range(kw)]
    out.copy_(taps[0])
    for tap in taps[1:]:
        out.add_(tap)
    return out.mul_(1.0 / (kh * kw)) if len(taps) > 1 else out


def packed_correlation_pyramid(f1: Tensor, f2: Tensor, num_levels: int = 4) -> PackedPyramid:
    """All-pairs correlation ``f1 . f2 / sqrt(C)`` average-pooled into ``num_levels`` levels.

    Args:
        f1, f2 (Tensor[B, C, H, W]): feature maps of the two frames.
        num_levels: L >= 1.

    Returns:
        A :class:`PackedPyramid` whose ``packed`` is ``[B*H*W, T]`` (module docstring).
    """
    _check_pair(f1, f2, "packed_correlation_pyramid")
    levels = _check_int(num_levels, "packed_correlation_pyramid: num_levels", 1)
    B, C, H, W = f1.shape
    N = B * H * W
    sizes = _level_sizes(H, W, levels)
    spans = [(h + 2) * (w + 2) for h, w in sizes]  # bordered level sizes, in buffer columns
    P0, T = spans[0], sum(spans)
    scale = 1.0 / (C**0.5) if C else 1.0
    a = f1.reshape(B, C, H * W).transpose(1, 2)  # (B, HW, C)
    b = F.pad(f2, (1, 1, 1, 1)).reshape(B, C, P0)  # (B, C, (H + 2)(W + 2)), zero border
    if _in_place_ok(f1, f2):
        packed = f1.new_empty(N, T)
        level0 = packed[:, :P0].view(B, H * W, P0)  # row stride T: the GEMM writes in place
        torch.baddbmm(level0, a, b, beta=0.0, alpha=scale, out=level0)
        prev = packed[:, :P0].view(N, 1, H + 2, W + 2)[:, :, 1:-1, 1:-1]  # level 0 without border
        start = P0
        for (h, w), span in zip(sizes[1:], spans[1:], strict=True):
            slot = packed[:, start : start + span].view(N, 1, h + 2, w + 2)  # (N, 1, h + 2, w + 2)
            for edge in (slot[:, :, 0], slot[:, :, -1], slot[:, :, :, 0], slot[:, :, :, -1]):
                edge.zero_()
            prev = _pool_into(prev, slot[:, :, 1:-1, 1:-1])
            start += span
        return PackedPyramid(packed, sizes, B, H, W)
    volume = torch.bmm(a, b) * scale  # (B, HW, (H + 2)(W + 2))
    parts = [volume.reshape(N, P0)]
    prev = volume.reshape(N, 1, H + 2, W + 2)[:, :, 1:-1, 1:-1]
    for h, w in sizes[1:]:
        k = (min(2, prev.shape[-2]), min(2, prev.shape[-1]))
        level = F.avg_pool2d(prev, kernel_size=k, stride=k) if k != (1, 1) else prev  # (N, 1, h, w)
        parts.append(F.pad(level, (1, 1, 1, 1)).reshape(N, (h + 2) * (w + 2)))
        prev = level
    return PackedPyramid(torch.cat(parts, dim=1), sizes, B, H, W)  # (N, T)


def packed_lookup(pyramid: PackedPyramid, coords: Tensor, radius: int = 4) -> Tensor:
    """Read each level in a ``(2r + 1)^2`` window around ``coords / 2^l`` (RAFT's lookup).

    Args:
        pyramid: from :func:`packed_correlation_pyramid`.
        coords (Tensor[B, 2, H, W]): (x, y) positions in the second map at level 0's scale;
            gradients flow to them and to the pyramid.
        radius: r >= 0.

    Returns:
        Tensor[B, L * (2r + 1)^2, H, W], the channel order of
        :func:`~structpred.ops.correlation.pyramid_lookup`.
    """
    r = _check_int(radius, "packed_lookup: radius", 0)
    B, H, W = pyramid.batch, pyramid.height, pyramid.width
    if not isinstance(coords, Tensor) or tuple(coords.shape) != (B, 2, H, W):
        got = tuple(coords.shape) if isinstance(coords, Tensor) else type(coords).__name__
        raise ValueError(f"packed_lookup: coords must be a Tensor[{B}, 2, {H}, {W}] of (x, y), got {got}")
    packed = pyramid.packed
    N, L, S = B * H * W, len(pyramid.sizes), 2 * r + 2
    points = coords.permute(0, 2, 3, 1).reshape(N, 2).to(packed.dtype)  # (B, 2, H, W) -> (N, 2)
    steps = torch.arange(-r, r + 2, device=packed.device)  # (S,)
    index, fx, fy = [], [], []
    start = 0
    for lvl, (h, w) in enumerate(pyramid.sizes):
        cx, cy = points[:, 0] * 2.0**-lvl, points[:, 1] * 2.0**-lvl  # (N,) each
        x0, y0 = cx.detach().floor(), cy.detach().floor()
        fx.append(cx - x0)
        fy.append(cy - y0)
        # bordered columns / rows: a tap outside the level is clamped onto the zero border
        cols = (x0.to(torch.int64)[:, None] + steps).clamp_(-1, w).add_(start + 1)  # (N, S)
        rows = (y0.to(torch.int64)[:, None] + steps).clamp_(-1, h).add_(1).mul_(w + 2)  # (N, S)
        index.append(cols[:, :, None] + rows[:, None, :])  # (N, S x, S y): gathered x-major
        start += (h + 2) * (w + 2)
    idx = torch.stack(index, dim=1).reshape(N, L * S * S)  # (N, L, S, S) -> (N, L S S)
    patch = packed.gather(1, idx).view(N, L, S, S)  # (N, L, S x, S y)
    wx = torch.stack(fx, dim=1)[:, :, None, None]  # (N, L, 1, 1): shared by the window
    wy = torch.stack(fy, dim=1)[:, :, None, None]
    down = torch.lerp(patch[..., :-1], patch[..., 1:], wy)  # (N, L, S x, 2r + 1 dy)
    window = torch.lerp(down[:, :, :-1], down[:, :, 1:], wx)  # (N, L, 2r + 1 dx, 2r + 1 dy)
    # (N, L (2r+1)^2) -> (B, H, W, K) -> (B, K, H, W)
    return window.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
