"""Pictures of disparity: a perceptual colour map written as a small table, and its colour bar.

Shape shorthand: B maps, H x W pixels.

Convention: disparity in pixels of the left view, positive; near (large disparity) is bright.
A value ``d`` is drawn at position ``d / max_disp`` (clamped to [0, 1]) of the colour map, so 0 px
(infinitely far) gets the map's first colour; unknown pixels (NaN, inf, ``<= 0``, or ``valid``
False) are **black**. The maps are matplotlib's ``plasma`` (what Godard et al.'s
``monodepth_simple.py`` writes) and ``magma`` (monodepth2's figures), sampled at 33 evenly spaced
points and linearly interpolated: within 3 levels of matplotlib's 256-entry tables (tested), and no
matplotlib import on the compute path. ``plasma`` is the default because its darkest colour is a
blue, so black unknown pixels stand out from far ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["COLORMAPS", "colormap", "disparity_legend", "disparity_to_color"]

# 33 evenly spaced samples (positions 0, 1/32, ..., 1) of matplotlib's maps, RGB 0..255.
COLORMAPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "plasma": (
        (13, 8, 135), (34, 6, 144), (49, 5, 151), (63, 4, 156), (76, 2, 161), (89, 1, 165),
        (102, 0, 167), (114, 1, 168), (126, 3, 168), (138, 9, 165), (149, 17, 161), (160, 26, 156),
        (170, 35, 149), (179, 44, 142), (188, 53, 135), (196, 62, 127), (204, 71, 120), (211, 81, 113),
        (218, 90, 106), (224, 99, 99), (230, 108, 92), (235, 118, 85), (240, 128, 78), (245, 139, 71),
        (248, 149, 64), (251, 161, 57), (253, 172, 51), (254, 184, 44), (253, 197, 39), (252, 210, 37),
        (248, 223, 37), (244, 237, 39), (240, 249, 33),
    ),
    "magma": (
        (0, 0, 4), (3, 3, 18), (10, 8, 34), (19, 13, 52), (29, 17, 71), (41, 17, 90),
        (54, 16, 107), (68, 15, 118), (81, 18, 124), (93, 23, 127), (106, 28, 129), (118, 33, 129),
        (131, 38, 129), (144, 42, 129), (156, 46, 127), (170, 51, 125), (183, 55, 121), (196, 60, 117),
        (208, 65, 111), (220, 72, 105), (231, 82, 99), (239, 93, 94), (245, 107, 92), (249, 121, 93),
        (252, 137, 97), (253, 152, 105), (254, 167, 114), (254, 182, 124), (254, 196, 136), (254, 211, 149),
        (253, 226, 163), (252, 240, 178), (252, 253, 191),
    ),
}  # fmt: skip


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def colormap(t: Tensor, cmap: str = "plasma") -> Tensor:
    """Positions ``t`` (float, any shape ``S``, clamped to [0, 1]; NaN as 0) -> ``uint8[*S, 3]`` colours."""
    if cmap not in COLORMAPS:
        raise ValueError(f"cmap must be one of {sorted(COLORMAPS)}, got {cmap!r}")
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise ValueError(f"t must be a float Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    table = torch.tensor(COLORMAPS[cmap], dtype=torch.float64)  # (K, 3)
    K = table.shape[0]
    pos = t.detach().cpu().double().nan_to_num(0.0).clamp(0.0, 1.0) * (K - 1)  # (*S,) in [0, K - 1]
    k0 = pos.floor().long().clamp(max=K - 2)  # (*S,) left anchor; t = 1 interpolates to the last one
    f = (pos - k0.double()).unsqueeze(-1)  # (*S, 1)
    rgb = (1.0 - f) * table[k0] + f * table[k0 + 1]  # (*S, 3)
    return rgb.round().clamp(0, 255).to(torch.uint8)


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
