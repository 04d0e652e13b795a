"""Differentiable image warping: affine sampling grids and bilinear / nearest grid sampling.

The two halves of a Spatial Transformer (Jaderberg et al., 2015) after the localisation net:
:func:`affine_grid` turns ``theta`` into a sampling grid (the "meshgrid" step) and
:func:`grid_sample` reads the input at those points. Same results and gradients as
``torch.nn.functional.affine_grid`` / ``grid_sample`` (2-D; modes ``bilinear`` and ``nearest``,
padding ``zeros`` and ``border``), computed here with ``gather``; autograd differentiates it
(the backward of a gather is a scatter-add into the input; the bilinear weights carry the
gradient to the grid).

Shape shorthand:
    B: images, C: channels, H, W: input height and width,
    Ho, Wo: output (grid) height and width, P = Ho*Wo: sample points per image.

Convention:
    * Coordinates are normalised to [-1, 1] per axis: ``x = -1`` is the left side of the input
      and ``x = +1`` the right, ``y = -1`` the top and ``y = +1`` the bottom. A grid's last
      dimension is ``(x, y)``: x (the W axis) first, then y (the H axis), the reverse of the
      tensor's ``(H, W)`` order.
    * ``align_corners=True``: -1 and +1 are the *centres* of the corner pixels, so column ``i``
      is at ``x = -1 + 2 i / (W - 1)`` (every point maps to column 0 when ``W == 1``).
      In pixels: ``ix = (x + 1) * (W - 1) / 2``.
    * ``align_corners=False`` (default): -1 and +1 are the outer *edges* of the corner pixels,
      so column ``i``'s centre is at ``x = -1 + (2 i + 1) / W`` (independent of resolution).
      In pixels: ``ix = (x + 1) * W / 2 - 0.5``.
    * ``theta`` maps *output* to *input* coordinates (a backward warp):
      ``[x_in, y_in] = theta @ [x_out, y_out, 1]``; the identity ``theta`` reproduces the
      input with either ``align_corners``, as long as both functions get the same value.
    * Padding: ``"zeros"`` reads 0 at taps outside the input; ``"border"`` first clamps the
      pixel coordinate into ``[0, W - 1] x [0, H - 1]`` (as torch, the gradient with respect to
      the grid is 0 where a coordinate is clamped *or lies exactly on the border*).
    * ``"nearest"`` rounds pixel coordinates half to even (``torch.round``, like torch's
      ``nearbyint``); its gradient flows to the input only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border")


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _check_align_corners(align_corners: object) -> None:
    if not isinstance(align_corners, bool):
        raise ValueError(f"align_corners must be a bool, got {align_corners!r}")


def _linspace_from_neg_one(steps: int, align_corners: bool, like: Tensor) -> Tensor:
    """Normalised coordinates of ``steps`` pixel centres along one axis (``[steps]``)."""
    if steps <= 1:
        return torch.zeros(steps, dtype=like.dtype, device=like.device)  # the single centre is 0
    coords = torch.linspace(-1.0, 1.0, steps, dtype=like.dtype, device=like.device)
    if not align_corners:
        coords = coords * (steps - 1) / steps  # corner centres move in by half a pixel
    return coords


def affine_grid(theta: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Sampling grid of the affine maps ``theta`` for an output of ``size``.

    Args:
        theta (Tensor[B, 2, 3]): float; output -> input maps in normalised coordinates.
        size: ``(B, C, Ho, Wo)`` of the output the grid is for (C is not used).
        align_corners: see the module's Convention.

    Returns:
        grid (Tensor[B, Ho, Wo, 2]): ``(x, y)`` input coordinates of every output pixel.
    """
    if not isinstance(theta, Tensor) or theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"theta must be a Tensor[B, 2, 3] (2-D affine maps), got {_shape(theta)}")
    if not theta.is_floating_point():
        raise ValueError(f"theta must be a floating point tensor, got {theta.dtype}")
    _check_align_corners(align_corners)
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 4:
        raise ValueError(f"size must be (B, C, H, W), got {size!r}")
    # SymInts too: under torch.export the batch size is symbolic.
    if not all(isinstance(s, int | torch.SymInt) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"size must hold 4 positive ints (B, C, H, W), got {tuple(size)!r}")
    B, _, Ho, Wo = size
    if theta.shape[0] != B:
        raise ValueError(f"theta holds {theta.shape[0]} maps but size asks for a batch of {B}")
    xs = _linspace_from_neg_one(Wo, align_corners, theta)  # (Wo,)
    ys = _linspace_from_neg_one(Ho, align_corners, theta)  # (Ho,)
    base = torch.stack(
        [xs.view(1, Wo).expand(Ho, Wo), ys.view(Ho, 1).expand(Ho, Wo), torch.ones_like(xs).expand(Ho, Wo)],
        dim=-1,
    )  # (Ho, Wo, 3): (x, y, 1) per output pixel
    base = base.reshape(1, Ho * Wo, 3).expand(B, Ho * Wo, 3)  # (Ho, Wo, 3) -> (B, P, 3)
    grid = torch.bmm(base, theta.transpose(1, 2))  # (B, P, 3) @ (B, 3, 2) -> (B, P, 2)
    return grid.reshape(B, Ho, Wo, 2)  # (B, P, 2) -> (B, Ho, Wo, 2)


def _unnormalize(coord: Tensor, size: int, align_corners: bool) -> Tensor:
    """Normalised coordinates -> pixel coordinates along an axis of ``size`` pixels."""
    if align_corners:
        return (coord + 1) * ((size - 1) / 2)
    return (coord + 1) * (size / 2) - 0.5


def _clip_to_border(coord: Tensor, size: int) -> Tensor:
    """Clamp pixel coordinates into ``[0, size - 1]``; no gradient on or beyond the border."""
    inside = (coord > 0) & (coord < size - 1)
    return torch.where(inside, coord, coord.detach().clamp(0, size - 1))


def _tap(flat: Tensor, ix: Tensor, iy: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    """Values at integer-valued pixel coordinates, and whether each tap is inside the input.

    Args:
        flat (Tensor[B, C, H*W]): the input, rows flattened.
        ix, iy (Tensor[B, P]): float pixel coordinates holding integers (any range).

    Returns:
        values (Tensor[B, C, P]) (outside taps, NaN included, read pixel 0: mask them out),
        inside (Tensor[B, 1, P]) bool.
    """
    B, C, _ = flat.shape
    inside = (ix >= 0) & (ix <= W - 1) & (iy >= 0) & (iy <= H - 1)  # (B, P); False for NaN
    col = torch.where(inside, ix, 0).to(torch.int64)
    row = torch.where(inside, iy, 0).to(torch.int64)
    index = (row * W + col).unsqueeze(1).expand(B, C, ix.shape[1])  # (B, P) -> (B, C, P)
    return flat.gather(2, index), inside.unsqueeze(1)  # (B, C, P), (B, 1, P)


def _sample_pixels(input: Tensor, ix: Tensor, iy: Tensor, mode: str, padding_mode: str) -> Tensor:
    """``input`` [B, C, H, W] read at pixel coordinates ``ix``, ``iy`` [B, P]; returns [B, C, P]."""
    B, C, H, W = input.shape
    if padding_mode == "border":
        ix, iy = _clip_to_border(ix, W), _clip_to_border(iy, H)
    flat = input.reshape(B, C, H * W)  # (B, C, H, W) -> (B, C, H*W)
    if mode == "nearest":
        value, inside = _tap(flat, ix.detach().round(), iy.detach().round(), H, W)
        return value * inside.to(value.dtype)  # (B, C, P)
    # Floors carry no gradient; the distances to them carry all of it (to the grid).
    x_w, y_n = ix.detach().floor(), iy.detach().floor()
    w, n = ix - x_w, iy - y_n  # (B, P): distances to the west / north neighbours
    e, s = 1 - w, 1 - n
    out = input.new_zeros(B, C, ix.shape[1])
    for dx, dy, weight in ((0, 0, s * e), (1, 0, s * w), (0, 1, n * e), (1, 1, n * w)):
        value, inside = _tap(flat, x_w + dx, y_n + dy, H, W)
        out = out + value * (weight.unsqueeze(1) * inside.to(weight.dtype))  # (B, C, P)
    return out


def grid_sample(
    input: Tensor,
    grid: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Sample ``input`` at the normalised ``(x, y)`` points of ``grid``.

    Args:
        input (Tensor[B, C, H, W]): float images or feature maps.
        grid (Tensor[B, Ho, Wo, 2]): same dtype and device; ``(x, y)`` per output pixel.
        mode: ``"bilinear"`` (differentiable in input and grid) or ``"nearest"``.
        padding_mode: ``"zeros"`` or ``"border"`` (what outside points read).
        align_corners: see the module's Convention.

    Returns:
        Tensor[B, C, Ho, Wo].
    """
    if not isinstance(input, Tensor) or input.dim() != 4:
        raise ValueError(f"input must be a Tensor[B, C, H, W], got {_shape(input)}")
    if not isinstance(grid, Tensor) or grid.dim() != 4 or grid.shape[-1] != 2:
        raise ValueError(f"grid must be a Tensor[B, Ho, Wo, 2] of (x, y) points, got {_shape(grid)}")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating point tensor, got {input.dtype}")
    if grid.dtype != input.dtype:
        raise ValueError(f"grid ({grid.dtype}) and input ({input.dtype}) must have the same dtype")
    if grid.device != input.device:
        raise ValueError(f"grid is on {grid.device} but input is on {input.device}")
    if grid.shape[0] != input.shape[0]:
        raise ValueError(f"grid has {grid.shape[0]} images but input has {input.shape[0]}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (bicubic is not implemented), got {mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode must be one of {PADDING_MODES} (reflection is not implemented), "
            f"got {padding_mode!r}"
        )
    _check_align_corners(align_corners)
    B, C, H, W = input.shape
    _, Ho, Wo, _ = grid.shape
    if H == 0 or W == 0:
        raise ValueError(f"input must have non-empty spatial dimensions, got {tuple(input.shape)}")

    points = grid.reshape(B, Ho * Wo, 2)  # (B, Ho, Wo, 2) -> (B, P, 2)
    ix = _unnormalize(points[..., 0], W, align_corners)  # (B, P)
    iy = _unnormalize(points[..., 1], H, align_corners)
    return _sample_pixels(input, ix, iy, mode, padding_mode).reshape(B, C, Ho, Wo)  # (B, C, P) -> ...


def flow_warp(input: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Backward-warp ``input`` by a flow field: ``out[p] = input[p + flow[p]]`` (bilinear).

    The warp of optical-flow networks (PWC-Net's feature warping, photometric losses): with
    ``flow`` from frame 0 to frame 1 and ``input`` = frame 1, ``out`` is frame 1 brought back to
    frame 0. Points outside read 0 (``"zeros"``) or the nearest border pixel (``"border"``).

    Args:
        input (Tensor[B, C, H, W]): float.
        flow (Tensor[B, 2, H, W]): (dx, dy) in pixels, same dtype and device.

    Returns:
        Tensor[B, C, H, W].
    """
    if not isinstance(flow, Tensor) or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow_warp: flow must be a Tensor[B, 2, H, W] of (dx, dy), got {_shape(flow)}")
    if not isinstance(input, Tensor) or input.dim() != 4 or input.shape[-2:] != flow.shape[-2:]:
        size = tuple(flow.shape[-2:])
        raise ValueError(f"flow_warp: input {_shape(input)} must be [B, C, H, W] with flow's H, W {size}")
    B, C, H, W = input.shape
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"flow_warp: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if flow.dtype != input.dtype or flow.device != input.device:
        raise ValueError("flow_warp: input and flow must share dtype and device")
    ys = torch.arange(H, dtype=flow.dtype, device=flow.device).view(1, H, 1)
    xs = torch.arange(W, dtype=flow.dtype, device=flow.device).view(1, 1, W)
    # pixel coordinates read directly (no round trip through [-1, 1]: whole-pixel flow stays exact)
    ix = (xs + flow[:, 0]).reshape(B, H * W)  # (B, H, W) -> (B, P)
    iy = (ys + flow[:, 1]).reshape(B, H * W)
    return _sample_pixels(input, ix, iy, "bilinear", padding_mode).reshape(B, C, H, W)
