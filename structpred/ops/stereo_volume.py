"""Disparity cost volumes for rectified stereo and the soft argmin that reads a disparity out of one.

A rectified pair's match for left pixel ``x`` lies on the same row of the right view, at
``x - d`` for a disparity ``d >= 0`` (the library's convention, :mod:`structpred.tasks.depth`).
A cost volume compares every left pixel with the right pixels at ``d = 0 .. D - 1``:

* :func:`correlation_volume` (DispNetC, Mayer et al. 2016): the mean channel product,
  ``[B, D, H, W]`` — one number per disparity, cheap to aggregate with 2-D or 3-D convolutions.
* :func:`concat_volume` (GC-Net, Kendall et al. 2017; PSMNet, Chang & Chen 2018): the two
  feature vectors stacked, ``[B, 2C, D, H, W]`` — the network learns the comparison (3-D convs).
* :func:`soft_argmin` (GC-Net): the expected disparity under ``softmax(-cost)`` (or
  ``softmax(logits)``) over the disparity axis — differentiable and sub-pixel.

Convention: ``d`` is in pixels *of the feature maps given* (a network working at 1/4 resolution
multiplies by 4). Where ``x - d < 0`` the right pixel does not exist: the volume is zero there
(both halves of the concatenation, as PSMNet), so ``D > W`` is allowed and its extra planes are zero.

Shape shorthand:
    B: pairs, C: feature channels, H, W: feature map height and width, D: disparities 0 .. D - 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK = 32  # left pixels per row chunk of correlation_volume's banded GEMM

COST_KINDS = ("cost", "logits")


def _check_pair(left: object, right: object, where: str) -> None:
    for name, f in (("left", left), ("right", right)):
        if not isinstance(f, Tensor) or f.dim() != 4 or not f.is_floating_point():
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"{where}: {name} must be a float Tensor[B, C, H, W], got {got}")
    assert isinstance(left, Tensor) and isinstance(right, Tensor)
    if left.shape != right.shape:
        raise ValueError(
            f"{where}: left {tuple(left.shape)} and right {tuple(right.shape)} must have one shape"
        )
    if left.dtype != right.dtype or left.device != right.device:
        raise ValueError(f"{where}: left and right must share dtype and device")


def _check_max_disp(max_disp: object, where: str) -> int:
    if not isinstance(max_disp, int) or isinstance(max_disp, bool) or max_disp < 1:
        raise ValueError(
            f"{where}: max_disp must be an int >= 1 (the number D of disparities), got {max_disp!r}"
        )
    return max_disp


def correlation_volume(left: Tensor, right: Tensor, max_disp: int) -> Tensor:
    """Mean channel product of each left pixel with the right pixel ``d`` to its left.

    ``out[b, d, y, x] = mean_c left[b, c, y, x] * right[b, c, y, x - d]``, zero where ``x - d < 0``.

    Args:
        left, right (Tensor[B, C, H, W]): feature maps of one shape, dtype and device.
        max_disp: D >= 1, the number of disparities (0 .. D - 1), in feature pixels.

    Returns:
        Tensor[B, D, H, W].
    """
    _check_pair(left, right, "correlation_volume")
    D = _check_max_disp(max_disp, "correlation_volume")
    B, C, H, W = left.shape
    # Banded GEMM: per image row, a chunk of c left pixels against the c + D - 1 right pixels any of
    # them can reach (x - D + 1 .. x), one (c x C) @ (C x (c + D - 1)) product; the wanted products
    # lie on the band prod[x, x + D - 1 - d], read as a strided view. (c + D - 1) / D times the
    # needed multiply-adds, but in one GEMM instead of D elementwise passes (benchmarks/depth.py).
    c = min(_CHUNK, W)
    chunks = -(-W // c)
    Wp = chunks * c  # W padded to whole chunks
    N = B * H * chunks
    # (B, C, H, Wp) -> (B, H, Wp, C) -> (N, c, C): rows of left pixels, chunk by chunk
    a = F.pad(left, (0, Wp - W)).permute(0, 2, 3, 1).reshape(N, c, C)
    padded = F.pad(right, (D - 1, Wp - W))  # (B, C, H, D - 1 + Wp): zeros where x - d < 0
    reach = padded.unfold(3, c + D - 1, c)  # (B, C, H, chunks, c + D - 1), overlapping windows
    b = reach.permute(0, 2, 3, 1, 4).reshape(N, C, c + D - 1)  # (N, C, c + D - 1)
    prod = torch.bmm(a, b)  # (N, c, c + D - 1): [n, i, j] = left x_i . right (x_0 + j - D + 1)
    s0, s1, s2 = prod.stride()
    band = prod.as_strided((N, c, D), (s0, s1 + s2, s2))  # [n, i, k] = prod[n, i, i + k], k = D - 1 - d
    # (N, c, D) -> (B, H, Wp, D) -> crop, flip k to d -> (B, D, H, W)
    out = band.reshape(B, H, Wp, D)[:, :, :W].flip(-1).permute(0, 3, 1, 2)
    return out.contiguous() / max(C, 1)


#: Volumes of at least this many elements are filled by slice copies when no gradient is needed.
SLICE_FILL_ELEMENTS = 1 << 18


def _fill_by_slices(left: Tensor, right: Tensor, elements: int) -> bool:
    """Inference on a large volume, eager: the slice fill (memory-bound, contiguous rows) wins."""
    if elements < SLICE_FILL_ELEMENTS:
        return False  # a few ops beat 3 D small copies
    if torch.is_grad_enabled() and (left.requires_grad or right.requires_grad):
        return False  # the unfold's backward is one strided sum, the slices' D accumulations
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def _concat_by_slices(left: Tensor, right: Tensor, D: int) -> Tensor:
    """:func:`concat_volume` as D row-slice copies per view into one uninitialised volume."""
    B, C, H, W = left.shape
    out = left.new_empty(B, 2 * C, D, H, W)
    for d in range(D):
        k = min(d, W)  # columns x < k have no right pixel x - d
        out[:, :C, d, :, k:] = left[..., k:]  # (B, C, H, W - k)
        out[:, C:, d, :, k:] = right[..., : W - k]
        if k:
            out[:, :, d, :, :k] = 0
    return out


def concat_volume(left: Tensor, right: Tensor, max_disp: int) -> Tensor:
    """Left and shifted right features stacked per disparity (GC-Net / PSMNet).

    ``out[b, :C, d, y, x] = left[b, :, y, x]`` and ``out[b, C:, d, y, x] = right[b, :, y, x - d]``,
    both zero where ``x - d < 0``.

    Args:
        left, right (Tensor[B, C, H, W]): feature maps of one shape, dtype and device.
        max_disp: D >= 1, the number of disparities, in feature pixels.

    Returns:
        Tensor[B, 2C, D, H, W].

    Two fills, equal to the last bit: one strided ``unfold`` of the padded right view and one
    ``cat`` (used whenever a gradient is needed: its backward is one strided sum; also under
    tracing / export and for small volumes), and, for inference on volumes of
    :data:`SLICE_FILL_ELEMENTS` or more, D row-slice copies per view into an uninitialised volume
    (PSMNet's loop without its zero fill: the forward is memory-bound and contiguous rows win).
    """
    _check_pair(left, right, "concat_volume")
    D = _check_max_disp(max_disp, "concat_volume")
    B, C, H, W = left.shape
    if _fill_by_slices(left, right, 2 * B * C * D * H * W):
        return _concat_by_slices(left, right, D)
    padded = F.pad(right, (D - 1, 0))  # (B, C, H, D - 1 + W)
    # window k of pixel x reads padded x + k = right x + k - D + 1, i.e. d = D - 1 - k
    shifted = padded.unfold(3, D, 1).flip(-1)  # (B, C, H, W, D), [.., x, d] = right x - d (0 outside)
    shifted = shifted.permute(0, 1, 4, 2, 3)  # (B, C, H, W, D) -> (B, C, D, H, W)
    d = torch.arange(D, device=left.device)[:, None]  # (D, 1)
    x = torch.arange(W, device=left.device)[None, :]  # (1, W)
    inside = (x >= d).to(left.dtype)[:, None, :]  # (D, 1, W): the right pixel exists
    lefts = left[:, :, None] * inside  # (B, C, 1, H, W) * (D, 1, W) -> (B, C, D, H, W)
    return torch.cat([lefts, shifted], dim=1)  # (B, 2C, D, H, W)


def soft_argmin(values: Tensor, dim: int = 1, kind: str = "cost") -> Tensor:
    """Expected index along ``dim`` under ``softmax(-values)`` (``kind="cost"``, GC-Net's soft argmin)
    or ``softmax(values)`` (``kind="logits"``).

    ``out = sum_d d * softmax(+-values, dim)[d]``, in index units (disparity planes ``0 .. D - 1``).

    Args:
        values (Tensor[..., D, ...]): costs or logits, float, ``D >= 1`` along ``dim``.
        dim: the disparity axis.
        kind: ``"cost"`` (low = likely) or ``"logits"`` (high = likely).

    Returns:
        Tensor of ``values``' shape with ``dim`` of size 1 (kept).
    """
    if not isinstance(values, Tensor) or not values.is_floating_point() or values.dim() == 0:
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"soft_argmin: values must be a float Tensor with a disparity axis, got {got}")
    if kind not in COST_KINDS:
        raise ValueError(f"soft_argmin: kind must be one of {COST_KINDS}, got {kind!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -values.dim() <= dim < values.dim():
        raise ValueError(f"soft_argmin: dim must be an int in [{-values.dim()}, {values.dim()}), got {dim!r}")
    D = values.shape[dim]
    if D == 0:
        raise ValueError(f"soft_argmin: the disparity axis (dim {dim}) is empty: {tuple(values.shape)}")
    prob = torch.softmax(-values if kind == "cost" else values, dim=dim)
    shape = [1] * values.dim()
    shape[dim] = D
    planes = torch.arange(D, dtype=values.dtype, device=values.device).reshape(shape)  # 1 x .. D .. x 1
    return (prob * planes).sum(dim=dim, keepdim=True)
