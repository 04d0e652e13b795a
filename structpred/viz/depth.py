"""Pictures of disparity: a perceptual colour map over a batch with a validity mask, and its colour bar.

Shape shorthand: B maps, H x W pixels.

Convention: disparity in pixels of the left view, positive; near (large disparity) is bright.
A value ``d`` is drawn at position ``d / max_disp`` (clamped to [0, 1]) of the colour map, so 0 px
(infinitely far) gets the map's first colour; unknown pixels (NaN, inf, ``<= 0``, or ``valid``
False) are **black**. Any matplotlib map works (its 256-entry table, as :mod:`.colors` draws depth):
``plasma`` (what Godard et al.'s ``monodepth_simple.py`` writes) is the default because its darkest
colour is a blue, so black unknown pixels stand out from far ones; ``magma`` is monodepth2's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .colors import colormap_lut

__all__ = ["colormap", "disparity_legend", "disparity_to_color"]


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def colormap(t: Tensor, cmap: str = "plasma") -> Tensor:
    """Positions ``t`` (float, any shape ``S``, clamped to [0, 1]; NaN as 0) -> ``uint8[*S, 3]`` colours
    of matplotlib's ``cmap`` (its 256-entry table, :func:`structpred.viz.colors.colormap_lut`)."""
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise ValueError(f"t must be a float Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    table = colormap_lut(cmap)  # (256, 3) uint8; a ValueError for an unknown name
    K = table.shape[0]
    index = (t.detach().cpu().double().nan_to_num(0.0).clamp(0.0, 1.0) * (K - 1)).round().long()  # (*S,)
    return table[index]  # (*S, 3)


def disparity_to_color(
    disp: Tensor, max_disp: float | None = None, valid: Tensor | None = None, cmap: str = "plasma"
) -> Tensor:
    """Colour a disparity map ``[H, W]`` / ``[1, H, W]`` -> ``uint8[3, H, W]``, or ``[B, 1, H, W]``
    -> ``uint8[B, 3, H, W]``.

    ``max_disp`` (px) is drawn in the map's brightest colour; by default the largest known
    disparity of the **whole batch** (one scale per batch). ``valid`` (bool, ``disp``'s shape
    without the channel, ``[H, W]`` or ``[B, H, W]``) marks known pixels; unknown ones are black.
    """
    if not isinstance(disp, Tensor) or not (
        disp.dim() == 2 or (disp.dim() in (3, 4) and disp.shape[-3] == 1)
    ):
        raise ValueError(f"disp must be a Tensor[H, W], [1, H, W] or [B, 1, H, W], got {_shape(disp)}")
    if not disp.is_floating_point():
        raise ValueError(f"disp must be a floating point tensor, got {disp.dtype}")
    if max_disp is not None and not (max_disp > 0 and math.isfinite(max_disp)):
        raise ValueError(f"max_disp must be a positive finite number, got {max_disp}")
    batched = disp.dim() == 4
    H, W = disp.shape[-2:]
    d = disp.detach().cpu().double().reshape(-1, H, W)  # (B, H, W)
    known = torch.isfinite(d) & (d > 0)  # (B, H, W)
    if valid is not None:
        want = (d.shape[0], H, W) if batched else (H, W)
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool or tuple(valid.shape) != want:
            got = (getattr(valid, "dtype", None), _shape(valid))
            raise ValueError(f"valid must be a bool Tensor of shape {want} to match disp, got {got}")
        known &= valid.cpu().reshape(-1, H, W)
    if max_disp is None:
        largest = float(d[known].max()) if known.any() else 1.0
        max_disp = largest
    rgb = colormap(torch.where(known, d / max_disp, 0.0), cmap)  # (B, H, W, 3)
    rgb[~known] = 0
    out = rgb.permute(0, 3, 1, 2).contiguous()  # (B, H, W, 3) -> (B, 3, H, W)
    return out if batched else out[0]


def disparity_legend(height: int = 16, width: int = 256, cmap: str = "plasma") -> Tensor:
    """The colour bar ``uint8[3, height, width]`` of :func:`disparity_to_color`: column ``j`` is the
    colour of ``j / (width - 1) * max_disp`` px, far (0 px) on the left, near (``max_disp``) on the right."""
    if height < 1 or width < 2:
        raise ValueError(f"legend size must be height >= 1 and width >= 2, got {height} x {width}")
    row = colormap(torch.linspace(0.0, 1.0, width, dtype=torch.float64), cmap)  # (W, 3)
    return row.t().unsqueeze(1).expand(3, height, width).contiguous()  # (W, 3) -> (3, height, W)
