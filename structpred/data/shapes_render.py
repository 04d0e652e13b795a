"""Rasterising the shapes world: textures, scene specs and a painter's-algorithm renderer.

Shape shorthand:
    H, W: image size; M: objects in a scene (ordered far to near = draw order).

Convention: pixel ``(i, j)`` (row, column) covers ``[j, j+1) x [i, i+1)`` and is sampled at
its centre ``(j + 0.5, i + 0.5)``; no anti-aliasing, so masks, parts and the image agree
exactly. Every layer (the background and each object) can be rendered with an *integer*
offset ``(dx, dy)``: pixel ``(i, j)`` then shows what pixel ``(i - dy, j - dx)`` showed without
it. Local coordinates are computed as ``(j - dx) + 0.5 - cx`` (integer arithmetic first), so a
shifted render equals the unshifted one moved by whole pixels bit for bit — the flow and
stereo pairs rely on it. Textures are attached to their layer (they move with it) and are
analytic functions of the layer's coordinates, defined everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .shapes_geometry import shape_inside

Array = np.ndarray
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker", "noise", "gradient")


@dataclass(frozen=True, eq=False)
class Texture:
    """A two-colour pattern ``colour1 + t * (colour2 - colour1)``, ``t`` in [0, 1].

    Attributes:
        kind: one of ``TEXTURES``.
        colour1, colour2: RGB in [0, 1], shape ``(3,)``.
        period: stripe / checker / noise-cell period, or gradient extent, in pixels.
        angle: direction of the pattern in radians.
        lattice: ``[G, G]`` values in [0, 1] of the value noise (``kind == "noise"``).
    """

    kind: str
    colour1: Array
    colour2: Array
    period: float = 8.0
    angle: float = 0.0
    lattice: Array | None = None

    def __post_init__(self) -> None:
        if self.kind not in TEXTURES:
            raise ValueError(f"shapes_render: texture kind must be one of {TEXTURES}, got {self.kind!r}")
        if self.kind == "noise" and self.lattice is None:
            raise ValueError("shapes_render: a 'noise' texture needs a lattice")
        if self.period <= 0:
            raise ValueError(f"shapes_render: texture period must be positive, got {self.period}")


@dataclass(frozen=True, eq=False)
class ShapeObject:
    """One object of a scene.

    Attributes:
        label: class label 1..K (see ``shapes_geometry``).
        cx, cy: centre in pixels (continuous).
        radius: circumradius in pixels.
        angle: rotation in radians.
        disparity: whole-pixel stereo disparity; depth = focal * baseline / disparity.
        texture: its pattern, in the object's frame (rotates and moves with it).
        shade: brightness factor applied to local part ``shaded_part`` (0 or 1).
        shaded_part: which of the two parts is shaded.
    """

    label: int
    cx: float
    cy: float
    radius: float
    angle: float
    disparity: int
    texture: Texture
    shade: float = 1.0
    shaded_part: int = 1


@dataclass(frozen=True, eq=False)
class Background:
    """A gradient from ``gradient.colour1`` to ``gradient.colour2`` plus ``amplitude`` x pattern.

    ``pattern`` is a texture whose ``t`` (not its colours) is used; ``disparity`` is the
    background plane's whole-pixel disparity.
    """

    gradient: Texture
    pattern: Texture
    amplitude: float
    disparity: int = 1


@dataclass
class Scene:
    """A background and objects ordered far to near (the draw order)."""

    background: Background
    objects: list[ShapeObject] = field(default_factory=list)


@dataclass
class Render:
    """The output of :func:`render_scene`.

    Attributes:
        image: float32 ``[H, W, 3]`` in [0, 1].
        owner: int64 ``[H, W]``: 0 background, ``k + 1`` for ``objects[k]``.
        part: int64 ``[H, W]``: local part (0/1) of the owner, -1 on background.
        amodal_area: int64 ``[M]``: pixels of the image each object covers, ignoring occlusion.
        amodal: bool ``[M, H, W]`` unoccluded masks, only when asked for.
    """

    image: Array
    owner: Array
    part: Array
    amodal_area: Array
    amodal: Array | None = None


def _value_noise(lattice: Array, x: Array, y: Array) -> Array:
    """Smooth periodic noise in [0, 1] at lattice coordinates ``(x, y)`` (bilinear, smoothstep)."""
    g = lattice.shape[0]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    i0 = np.mod(y0.astype(np.int64), g)
    j0 = np.mod(x0.astype(np.int64), g)
    i1, j1 = np.mod(i0 + 1, g), np.mod(j0 + 1, g)
    top = lattice[i0, j0] * (1 - fx) + lattice[i0, j1] * fx
    bottom = lattice[i1, j0] * (1 - fx) + lattice[i1, j1] * fx
    return top * (1 - fy) + bottom * fy


def texture_t(tex: Texture, x: Array, y: Array) -> Array:
    """The pattern value ``t`` in [0, 1] of ``tex`` at layer coordinates ``(x, y)`` in pixels."""
    c, s = np.cos(tex.angle), np.sin(tex.angle)
    a = x * c + y * s  # along the pattern direction
    b = -x * s + y * c
    if tex.kind == "solid":
        return np.zeros_like(x)
    if tex.kind == "stripes":
        return np.mod(np.floor(a / tex.period), 2.0)
    if tex.kind == "checker":
        return np.mod(np.floor(a / tex.period) + np.floor(b / tex.period), 2.0)
    if tex.kind == "noise":
        assert tex.lattice is not None  # checked in Texture.__post_init__
        return _value_noise(tex.lattice, a / tex.period, b / tex.period)
    return np.clip(0.5 + a / tex.period, 0.0, 1.0)  # gradient over +-period/2


def texture_rgb(tex: Texture, x: Array, y: Array) -> Array:
    """RGB ``[..., 3]`` of ``tex`` at layer coordinates ``(x, y)``."""
    t = texture_t(tex, x, y)[..., None]  # (..., 1)
    return tex.colour1 + t * (tex.colour2 - tex.colour1)


def render_background(bg: Background, size: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> Array:
    """RGB ``[H, W, 3]`` (float64) of the background, shifted by the integer ``offset`` (dx, dy)."""
    height, width = size
    dx, dy = offset
    ys = (np.arange(height) - dy + 0.5)[:, None]  # (H, 1), integer arithmetic first
    xs = (np.arange(width) - dx + 0.5)[None, :]  # (1, W)
    xs, ys = np.broadcast_arrays(xs, ys)  # (H, W) each
    rgb = texture_rgb(bg.gradient, xs - width / 2, ys - height / 2)
    pattern = texture_t(bg.pattern, xs, ys) - 0.5  # zero mean
    return rgb + bg.amplitude * pattern[..., None]


def _object_pixels(
    obj: ShapeObject, size: tuple[int, int], offset: tuple[int, int]
) -> tuple[slice, slice, Array, Array, Array, Array]:
    """Window rows/cols, local pixel coordinates ``(u, v)`` and inside / part of one object."""
    height, width = size
    dx, dy = offset
    ox, oy, r = obj.cx + dx, obj.cy + dy, obj.radius
    i0, i1 = max(0, int(np.floor(oy - r - 1))), min(height, int(np.ceil(oy + r + 1)))
    j0, j1 = max(0, int(np.floor(ox - r - 1))), min(width, int(np.ceil(ox + r + 1)))
    if i0 >= i1 or j0 >= j1:  # entirely outside the image
        empty = np.zeros((0, 0))
        return slice(0, 0), slice(0, 0), empty, empty, empty.astype(bool), empty.astype(np.int64)
    ys = (np.arange(i0, i1) - dy + 0.5 - obj.cy)[:, None]  # (h, 1)
    xs = (np.arange(j0, j1) - dx + 0.5 - obj.cx)[None, :]  # (1, w)
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    u = xs * c + ys * s  # (h, w): rotate into the object's frame
    v = -xs * s + ys * c
    inside, part = shape_inside(obj.label, u / r, v / r)
    return slice(i0, i1), slice(j0, j1), u, v, inside, part


def render_scene(
    scene: Scene,
    size: tuple[int, int],
    offsets: Array | None = None,
    with_amodal: bool = False,
) -> Render:
    """Paint ``scene`` far to near.

    Args:
        scene: background and objects ordered far to near.
        size: ``(H, W)``.
        offsets: int ``[M + 1, 2]`` whole-pixel ``(dx, dy)`` per layer, row 0 the background;
            None for no shift.
        with_amodal: also return every object's unoccluded mask ``[M, H, W]``.
    """
    height, width = size
    num = len(scene.objects)
    if offsets is None:
        offsets = np.zeros((num + 1, 2), dtype=np.int64)
    if offsets.shape != (num + 1, 2):
        raise ValueError(f"shapes_render: offsets must be [{num + 1}, 2], got {offsets.shape}")
    image = render_background(scene.background, size, (int(offsets[0, 0]), int(offsets[0, 1])))
    owner = np.zeros((height, width), dtype=np.int64)
    part = np.full((height, width), -1, dtype=np.int64)
    amodal_area = np.zeros(num, dtype=np.int64)
    amodal = np.zeros((num, height, width), dtype=bool) if with_amodal else None
    for k, obj in enumerate(scene.objects):
        off = (int(offsets[k + 1, 0]), int(offsets[k + 1, 1]))
        rows, cols, u, v, inside, local = _object_pixels(obj, size, off)
        if not inside.any():
            continue
        amodal_area[k] = int(inside.sum())
        if amodal is not None:
            amodal[k, rows, cols] = inside
        rgb = texture_rgb(obj.texture, u[inside], v[inside])  # (P, 3)
        shaded = local[inside] == obj.shaded_part
        rgb[shaded] *= obj.shade
        image[rows, cols][inside] = rgb
        owner[rows, cols][inside] = k + 1
        part[rows, cols][inside] = local[inside]
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return Render(image=image, owner=owner, part=part, amodal_area=amodal_area, amodal=amodal)
