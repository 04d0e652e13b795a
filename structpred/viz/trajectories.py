"""Draw point trajectories on a frame: each living track's recent path as a polyline and a dot.

Shape shorthand: P trajectories, T frames, H, W frame size.

Convention: positions are ``(x, y)`` pixel index coordinates (pixel ``(i, j)`` at ``(j, i)``,
:mod:`structpred.ops.trajectories`); PIL draws at pixel centres, so a point is drawn at
``(x + 0.5, y + 0.5)`` in PIL's edge coordinates. Colours: one per track
(:func:`~structpred.viz.colors.distinct_color` of its index) or, with ``color_by="motion"``, by
the direction of its last displacement on the flow colour wheel's hues.
"""

from __future__ import annotations

import colorsys
import math

import torch
from PIL import ImageDraw
from torch import Tensor

from .colors import Color, distinct_color
from .draw import _from_pil, _to_pil, to_uint8_image

COLOR_BY = ("track", "motion")


def _motion_color(dx: float, dy: float) -> Color:
    hue = (math.atan2(-dy, -dx) / math.pi + 1.0) / 2.0  # as the flow wheel: direction -> hue
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_tracks(
    image: Tensor,
    points: Tensor,
    frame: int,
    tail: int = 10,
    color_by: str = "track",
    width: int = 1,
    radius: int = 1,
) -> Tensor:
    """``image`` with the tracks alive at ``frame`` drawn over it.

    Args:
        image (Tensor[3, H, W]): float in [0, 1] or uint8, the frame ``frame``.
        points (Tensor[P, T, 2]): track positions, NaN where not alive.
        frame: which frame ``image`` is (0 <= frame < T).
        tail: frames of history drawn behind each point (0: dots only).
        color_by: ``"track"`` (a colour per track) or ``"motion"`` (hue = direction of motion).
        width, radius: line width and dot radius in pixels.

    Returns:
        uint8 Tensor[3, H, W].
    """
    out = to_uint8_image(image, "draw_tracks: image")
    if not isinstance(points, Tensor) or points.dim() != 3 or points.shape[2] != 2:
        raise ValueError(
            f"draw_tracks: points must be a Tensor[P, T, 2], got {tuple(getattr(points, 'shape', ()))}"
        )
    P, T, _ = points.shape
    if not 0 <= frame < T:
        raise ValueError(f"draw_tracks: frame must be in [0, {T}), got {frame}")
    if tail < 0 or width < 1 or radius < 0:
        raise ValueError(
            f"draw_tracks: tail >= 0, width >= 1, radius >= 0 needed, got {tail}, {width}, {radius}"
        )
    if color_by not in COLOR_BY:
        raise ValueError(f"draw_tracks: color_by must be one of {COLOR_BY}, got {color_by!r}")
    pil = _to_pil(out)
    pen = ImageDraw.Draw(pil)
    start = max(0, frame - tail)
    window = points[:, start : frame + 1].detach().cpu().double()  # (P, L, 2)
    alive = torch.nonzero(~window[:, -1].isnan().any(-1)).squeeze(1).tolist()
    for p in alive:
        path = window[p]
        path = path[~path.isnan().any(-1)] + 0.5  # (L', 2): the living stretch, PIL edge coordinates
        xy = [(float(x), float(y)) for x, y in path.tolist()]
        if color_by == "track":
            color = distinct_color(p)
        else:
            d = path[-1] - path[-2] if len(xy) > 1 else torch.zeros(2, dtype=torch.float64)
            color = _motion_color(float(d[0]), float(d[1]))
        if len(xy) > 1:
            pen.line(xy, fill=color, width=width)
        x, y = xy[-1]
        if radius:
            pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
        else:
            pen.point((x, y), fill=color)
    return _from_pil(pil)
