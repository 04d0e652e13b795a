"""Geometry of the shapes world's classes: inside tests and part splits in the object's frame.

Convention: every function takes an object's *normalised* local coordinates ``(u, v)`` —
pixel-centre offsets from the object's centre, rotated into the object's frame and divided
by its circumradius — so each shape fits in the unit disc. It returns ``inside`` (bool) and
``part`` (int64, 0 or 1: the class's first or second part) of the same shape; ``part`` is
meaningless outside. Every part split is rotation invariant (radial bands, tips against body)
so a part can be told from the image alone, whatever the object's orientation.

Classes (label: parts, the part ids are global and unique across classes):

    1 circle   : 1 circle/core (disc, r < 0.6),       2 circle/rim
    2 square   : 3 square/centre (diamond |u|+|v| <= a), 4 square/corners
    3 triangle : 5 triangle/body,                      6 triangle/tips (near the 3 vertices)
    4 star     : 7 star/centre (inner pentagon),       8 star/arms (the 5 points)
    5 ring     : 9 ring/inner (0.5 < r < 0.75),        10 ring/outer (0.75 <= r <= 1)
    6 cross    : 11 cross/hub (max(|u|,|v|) <= 0.45),  12 cross/arms
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray
ShapeFn = Callable[[Array, Array], tuple[Array, Array]]

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
PARTS_PER_CLASS: tuple[tuple[str, str], ...] = (
    ("core", "rim"),
    ("centre", "corners"),
    ("body", "tips"),
    ("centre", "arms"),
    ("inner", "outer"),
    ("hub", "arms"),
)
# PART_NAMES[p - 1] names global part id p; part id = 2 * (label - 1) + local part + 1.
PART_NAMES: tuple[str, ...] = tuple(
    f"{cls}/{part}" for cls, parts in zip(CLASS_NAMES, PARTS_PER_CLASS, strict=True) for part in parts
)
# PART_CLASSES[p - 1] is the class label (1..K) that owns part id p.
PART_CLASSES: tuple[int, ...] = tuple(k + 1 for k in range(len(CLASS_NAMES)) for _ in range(2))

# Hue (degrees) each class's palette is centred on: colour is a cue, not a giveaway (jitter and
# off-palette draws in the scene sampler).
CLASS_HUES: tuple[float, ...] = (0.0, 220.0, 120.0, 55.0, 285.0, 180.0)

_SQUARE_HALF = 1.0 / np.sqrt(2.0)  # half side of a square with circumradius 1
_STAR_INNER = 0.45  # inner-vertex radius of the star
_STAR_SECTOR = 2.0 * np.pi / 5.0


def global_part_id(label: int, local_part: int) -> int:
    """Global part id (1..2K) of local part 0/1 of class ``label`` (1..K)."""
    return 2 * (label - 1) + local_part + 1


def _circle(u: Array, v: Array) -> tuple[Array, Array]:
    r2 = u * u + v * v
    return r2 <= 1.0, (r2 >= 0.36).astype(np.int64)  # rim: r >= 0.6


def _square(u: Array, v: Array) -> tuple[Array, Array]:
    au, av = np.abs(u), np.abs(v)
    inside = (au <= _SQUARE_HALF) & (av <= _SQUARE_HALF)
    return inside, (au + av > _SQUARE_HALF).astype(np.int64)  # the diamond holds half the area


def _triangle(u: Array, v: Array) -> tuple[Array, Array]:
    # Equilateral, circumradius 1, one vertex at angle -90 deg (up in image coordinates).
    # Inside: the projection on every edge normal is <= the inradius 0.5. A point is a "tip"
    # when its projection on some vertex direction exceeds 0.4 (3 tips ~ 48% of the area).
    inside = np.ones(u.shape, dtype=bool)
    tip = np.zeros(u.shape, dtype=bool)
    for j in range(3):
        a = -np.pi / 2 + j * 2.0 * np.pi / 3.0  # vertex direction
        proj_vertex = u * np.cos(a) + v * np.sin(a)
        # The edge opposite vertex j has outward normal -(vertex j direction).
        inside &= -proj_vertex <= 0.5
        tip |= proj_vertex > 0.4
    return inside, tip.astype(np.int64)


def _star(u: Array, v: Array) -> tuple[Array, Array]:
    # Five points at radius 1, inner vertices at radius 0.45. Fold the angle into one half
    # sector b in [0, 36 deg] (b = 0 at an outer vertex) and test against the edge there.
    rho = np.sqrt(u * u + v * v)
    phi = np.mod(np.arctan2(v, u) + np.pi / 2, _STAR_SECTOR)  # an outer vertex points up
    b = np.minimum(phi, _STAR_SECTOR - phi)
    px, py = rho * np.cos(b), rho * np.sin(b)
    half = _STAR_SECTOR / 2
    p1x, p1y = _STAR_INNER * np.cos(half), _STAR_INNER * np.sin(half)
    # Edge from (1, 0) to (p1x, p1y); its normal (dy, -dx) points away from the origin.
    nx, ny = p1y, -(p1x - 1.0)
    inside = nx * (px - 1.0) + ny * py <= 0.0
    centre = px <= _STAR_INNER * np.cos(half)  # the inner pentagon's apothem
    return inside, (~centre).astype(np.int64)


def _ring(u: Array, v: Array) -> tuple[Array, Array]:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.25), (r2 >= 0.5625).astype(np.int64)  # outer: r >= 0.75


def _cross(u: Array, v: Array) -> tuple[Array, Array]:
    au, av = np.abs(u), np.abs(v)
    half_width, length = 0.3, 0.95  # arm corner at radius ~0.996
    inside = ((au <= length) & (av <= half_width)) | ((au <= half_width) & (av <= length))
    return inside, (np.maximum(au, av) > 0.45).astype(np.int64)


SHAPE_FNS: tuple[ShapeFn, ...] = (_circle, _square, _triangle, _star, _ring, _cross)


def shape_inside(label: int, u: Array, v: Array) -> tuple[Array, Array]:
    """``(inside bool[...], local part int64[...])`` of class ``label`` (1..K) at normalised ``(u, v)``."""
    if not 1 <= label <= len(SHAPE_FNS):
        raise ValueError(f"shapes_geometry: label must be in 1..{len(SHAPE_FNS)}, got {label}")
    return SHAPE_FNS[label - 1](u, v)
