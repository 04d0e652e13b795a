"""Colours for pictures: colour parsing, palettes, the optical-flow colour wheel, colormaps.

Convention: a colour is an ``(r, g, b)`` tuple of ints in ``0..255``; a palette or lookup
table is a ``uint8`` Tensor ``[K, 3]`` whose row ``k`` is the colour of value ``k``. The
dense colourings (``flow_to_color``, ``depth_to_color``) return ``uint8[3, H, W]`` on the CPU.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import ImageColor
from torch import Tensor

Color = tuple[int, int, int]
ColorLike = str | Sequence[int]

# Segment lengths of the Middlebury colour wheel (Baker et al., "A Database and Evaluation
# Methodology for Optical Flow", IJCV 2011): red-yellow, yellow-green, green-cyan,
# cyan-blue, blue-magenta, magenta-red. Chosen so that hues are perceptually evenly spaced.
WHEEL_SEGMENTS: tuple[tuple[str, int], ...] = (
    ("RY", 15),
    ("YG", 6),
    ("GC", 4),
    ("CB", 11),
    ("BM", 13),
    ("MR", 6),
)

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895
# .flo files mark unknown flow with values above 1e9 (Middlebury's UNKNOWN_FLOW_THRESH).
UNKNOWN_FLOW_THRESHOLD = 1e9


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def parse_color(color: ColorLike, name: str = "color") -> Color:
    """``"red"``, ``"#ff0000"`` or ``(255, 0, 0)`` -> ``(255, 0, 0)``; ``ValueError`` otherwise."""
    if isinstance(color, str):
        try:
            rgb = ImageColor.getrgb(color)
        except ValueError:
            raise ValueError(f"{name}={color!r} is not a colour name or #rrggbb string") from None
        return int(rgb[0]), int(rgb[1]), int(rgb[2])
    if isinstance(color, Tensor):
        color = color.tolist()
    try:
        values = [int(c) for c in color]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a colour name or an (r, g, b) tuple, got {color!r}") from None
    if len(values) != 3 or any(v < 0 or v > 255 for v in values):
        raise ValueError(f"{name} must be an (r, g, b) tuple of ints in 0..255, got {color!r}")
    return values[0], values[1], values[2]


def distinct_color(index: int) -> Color:
    """A bright colour for class or instance ``index``; neighbouring indices get distant hues.

    Hues step by the golden ratio around the circle (so any run of indices is well spread);
    saturation and value stay high so that the colour shows on photographs.
    """
    hue = (index * _GOLDEN_RATIO_CONJUGATE) % 1.0
    value = 0.95 if index % 2 == 0 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(r * 255), round(g * 255), round(b * 255)


def voc_palette(num_colors: int = 256) -> Tensor:
    """The PASCAL VOC label palette ``uint8[num_colors, 3]``.

    Row 0 (background) is black, 1 is (128, 0, 0), 2 is (0, 128, 0), 3 is (128, 128, 0)...:
    the bits of the label are spread over the high bits of r, g and b, as in VOC's
    ``labelcolormap``. The palette repeats after 256 entries.
    """
    if num_colors <= 0:
        raise ValueError(f"num_colors must be positive, got {num_colors}")
    rows = []
    for label in range(num_colors):
        r = g = b = 0
        code = label % 256
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        rows.append((r, g, b))
    return torch.tensor(rows, dtype=torch.uint8)


def flow_color_wheel() -> Tensor:
    """The Middlebury flow colour wheel ``uint8[55, 3]``, ordered by angle.

    Row 0 is pure red (the colour of flow pointing along +x); the rows go through yellow
    (+y, i.e. down in image coordinates), green, cyan (-x), blue (-y) and magenta back
    towards red. Within a segment of length ``n`` the rising (or falling) channel is
    ``floor(255 * i / n)`` for ``i = 0..n-1``.
    """
    rows: list[tuple[int, int, int]] = []
    for segment, n in WHEEL_SEGMENTS:
        for i in range(n):
            ramp = (255 * i) // n
            rows.append(
                {
                    "RY": (255, ramp, 0),
                    "YG": (255 - ramp, 255, 0),
                    "GC": (0, 255, ramp),
                    "CB": (0, 255 - ramp, 255),
                    "BM": (ramp, 0, 255),
                    "MR": (255, 0, 255 - ramp),
                }[segment]
            )
    return torch.tensor(rows, dtype=torch.uint8)


def colormap_lut(cmap: str, num_colors: int = 256) -> Tensor:
    """Lookup table ``uint8[num_colors, 3]`` sampled evenly from matplotlib's colormap ``cmap``.

    Any name in ``matplotlib.colormaps`` works ("magma", "turbo", "viridis", "gray"...).
    """
    import matplotlib  # deferred: importing matplotlib costs ~0.3 s and only depth needs it

    if cmap not in matplotlib.colormaps:
        raise ValueError(f"cmap={cmap!r} is not a matplotlib colormap (e.g. 'magma', 'turbo', 'viridis')")
    if num_colors < 2:
        raise ValueError(f"num_colors must be >= 2, got {num_colors}")
    positions = torch.linspace(0.0, 1.0, num_colors, dtype=torch.float64).numpy()
    rgba = matplotlib.colormaps[cmap](positions)  # (num_colors, 4) floats in [0, 1]
    rgb = torch.from_numpy(rgba[:, :3].copy())
    return (rgb * 255.0).round().clamp(0, 255).to(torch.uint8)


def apply_colormap(values: Tensor, cmap: str = "magma", num_colors: int = 256) -> Tensor:
    """Colour ``values`` (float ``[H, W]`` in [0, 1], clamped) with a colormap -> ``uint8[3, H, W]``.

    Value 0 gets the colormap's first colour and 1 its last; values are binned into
    ``num_colors`` levels. NaNs are treated as 0: mask them yourself (``depth_to_color`` does).
    """
    if not isinstance(values, Tensor) or values.dim() != 2 or not values.is_floating_point():
        got = (values.dtype, tuple(values.shape)) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values must be a float Tensor[H, W], got {got}")
    lut = colormap_lut(cmap, num_colors).to(values.device)  # (L, 3)
    index = (values.nan_to_num(0.0).clamp(0.0, 1.0) * (num_colors - 1)).round().long()  # (H, W)
    return lut[index].permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


# ----------------------------------------------------------------------------- flow and depth


def flow_to_color(flow: Tensor, max_flow: float | None = None) -> Tensor:
    """Colour-code optical flow ``[2, H, W]`` (u = +x right, v = +y down, pixels) -> ``uint8[3, H, W]``.

    The Middlebury colour wheel (Baker et al. 2011): hue gives the direction (+x red, +y
    yellow, -x cyan, -y blue), saturation the magnitude relative to ``max_flow`` (default: the
    largest valid magnitude in ``flow``), so zero flow is white. Vectors longer than
    ``max_flow`` are drawn at 75 % brightness. Pixels with NaN, inf or ``|u|``, ``|v|`` > 1e9
    (unknown flow in .flo files) are black.
    """
    if not isinstance(flow, Tensor) or flow.dim() != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be a Tensor[2, H, W] (u, v), got {_shape(flow)}")
    if not flow.is_floating_point():
        raise ValueError(f"flow must be a floating point tensor, got {flow.dtype}")
    if max_flow is not None and not (max_flow > 0 and math.isfinite(max_flow)):
        raise ValueError(f"max_flow must be a positive finite number, got {max_flow}")
    flow = flow.detach().cpu().double()
    valid = torch.isfinite(flow).all(0) & (flow.abs() <= UNKNOWN_FLOW_THRESHOLD).all(0)  # (H, W)
    u = torch.where(valid, flow[0], 0.0)
    v = torch.where(valid, flow[1], 0.0)
    rad = torch.sqrt(u * u + v * v)  # (H, W)
    max_rad = float(rad.max()) if max_flow is None and rad.numel() else (max_flow or 0.0)
    eps = float(torch.finfo(torch.float64).eps)
    rad = rad / (max_rad + eps)

    wheel = flow_color_wheel().double() / 255.0  # (K, 3)
    K = wheel.shape[0]
    angle = torch.atan2(-v, -u) / math.pi  # in [-1, 1]; -1 and 1 both mean +x flow
    angle = torch.where(angle >= 1.0, -1.0, angle)  # so +x maps to wheel row 0 whatever the sign of v = 0
    fk = (angle + 1.0) / 2.0 * (K - 1)  # position on the wheel, [0, K - 1]
    k0 = fk.floor().long().clamp(0, K - 1)
    k1 = (k0 + 1) % K
    f = (fk - k0.double()).unsqueeze(-1)  # (H, W, 1)
    col = (1.0 - f) * wheel[k0] + f * wheel[k1]  # (H, W, 3), interpolated between wheel rows
    inside = (rad <= 1.0).unsqueeze(-1)
    col = torch.where(inside, 1.0 - rad.unsqueeze(-1) * (1.0 - col), col * 0.75)
    out = (255.0 * col).floor().clamp(0, 255).to(torch.uint8)
    out[~valid] = 0
    return out.permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def depth_to_color(
    depth: Tensor,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "magma",
    invert: bool = False,
) -> Tensor:
    """Colour a depth (or disparity) map ``[1, H, W]`` or ``[H, W]`` -> ``uint8[3, H, W]``.

    Values are scaled linearly from ``[vmin, vmax]`` (default: the min and max of the valid
    pixels) onto the matplotlib colormap ``cmap`` ("magma", "turbo", ...) and clamped, so
    ``vmin`` gets the colormap's first colour. ``invert=True`` reverses that (near = bright
    for depth with "magma"). Invalid pixels (NaN, inf, ``<= 0``) are black.
    """
    if not isinstance(depth, Tensor) or not (depth.dim() == 2 or (depth.dim() == 3 and depth.shape[0] == 1)):
        raise ValueError(f"depth must be a Tensor[1, H, W] or [H, W], got {_shape(depth)}")
    if not depth.is_floating_point():
        raise ValueError(f"depth must be a floating point tensor, got {depth.dtype}")
    d = depth.detach().cpu().double().reshape(depth.shape[-2:])  # (1, H, W) -> (H, W)
    valid = torch.isfinite(d) & (d > 0)
    values = d[valid]
    lo = vmin if vmin is not None else (float(values.min()) if values.numel() else 0.0)
    hi = vmax if vmax is not None else (float(values.max()) if values.numel() else 1.0)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"need finite vmin <= vmax, got vmin={lo}, vmax={hi}")
    t = (d - lo) / (hi - lo) if hi > lo else torch.zeros_like(d)  # (H, W) in [0, 1] after clamp
    t = t.clamp(0.0, 1.0)
    if invert:
        t = 1.0 - t
    out = apply_colormap(t.where(valid, 0.0).float(), cmap)
    out[:, ~valid] = 0
    return out
