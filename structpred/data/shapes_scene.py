"""Random scenes of the shapes world: colours, textures, objects, backgrounds and motion paths.

Every function draws from the ``numpy.random.Generator`` it is given and from nothing else,
so a scene is a pure function of its generator's seed.

Convention: sizes are ``(H, W)`` pixels; disparities are whole pixels, the background's is 1
and objects' are in ``[2, max_disparity]``. An object's radius is its disparity times a
world-size factor in ``[1, 3]`` pixels per pixel of disparity (apparent size ~ 1 / depth, as
through a pinhole), so far objects are small — a few pixels at disparity 2.
"""

from __future__ import annotations

import numpy as np

from .shapes_geometry import CLASS_HUES
from .shapes_render import Background, Scene, ShapeObject, Texture

Array = np.ndarray

# Probabilities of an object's texture kinds (solid, stripes, checker, noise, gradient).
_OBJECT_TEXTURE_P = (0.3, 0.2, 0.15, 0.2, 0.15)
_OFF_PALETTE_P = 0.15  # chance an object's hue ignores its class palette
_HUE_JITTER = 15.0  # degrees, std of the hue around the class hue
_SIZE_FACTOR = (1.0, 3.0)  # radius / disparity


def max_disparity(size: tuple[int, int]) -> int:
    """Largest object disparity for an image of ``size``: ~ min(H, W) / 10, at least 3."""
    return max(3, min(size) // 10)


def hsv_to_rgb(h: float, s: float, v: float) -> Array:
    """RGB ``(3,)`` in [0, 1] of hue ``h`` (degrees), saturation and value in [0, 1]."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return np.array(rgb, dtype=np.float64) + (v - c)


def _object_texture(rng: np.random.Generator, label: int, radius: float) -> Texture:
    if rng.random() < _OFF_PALETTE_P:
        hue = rng.uniform(0.0, 360.0)
    else:
        hue = CLASS_HUES[label - 1] + float(np.clip(rng.normal(0.0, _HUE_JITTER), -30.0, 30.0))
    sat, val = rng.uniform(0.45, 1.0), rng.uniform(0.55, 1.0)
    colour1 = hsv_to_rgb(hue, sat, val)
    colour2 = hsv_to_rgb(
        hue + rng.uniform(-40.0, 40.0), sat * rng.uniform(0.3, 1.0), val * rng.uniform(0.3, 0.8)
    )
    kind = ("solid", "stripes", "checker", "noise", "gradient")[rng.choice(5, p=_OBJECT_TEXTURE_P)]
    if kind in ("stripes", "checker"):
        period = max(1.5, radius * rng.uniform(0.15, 0.5))
    elif kind == "noise":
        period = rng.uniform(2.0, max(3.0, radius / 2))
    else:
        period = 2.0 * radius * rng.uniform(0.8, 1.5)
    lattice = rng.random((8, 8)) if kind == "noise" else None
    return Texture(kind, colour1, colour2, float(period), rng.uniform(0.0, np.pi), lattice)


def sample_object(rng: np.random.Generator, size: tuple[int, int], num_classes: int) -> ShapeObject:
    """One object anywhere in the image (it may be cut by the border)."""
    height, width = size
    label = int(rng.integers(1, num_classes + 1))
    # Far (small) objects are more frequent than near ones: d = 2 + floor((dmax - 1) * U^1.5).
    top = max_disparity(size)
    disparity = min(top, 2 + int((top - 1) * rng.random() ** 1.5))
    radius = disparity * rng.uniform(*_SIZE_FACTOR)
    return ShapeObject(
        label=label,
        cx=rng.uniform(0.05, 0.95) * width,
        cy=rng.uniform(0.05, 0.95) * height,
        radius=float(radius),
        angle=rng.uniform(0.0, 2.0 * np.pi),
        disparity=disparity,
        texture=_object_texture(rng, label, radius),
        shade=rng.uniform(0.55, 0.85),
        shaded_part=int(rng.integers(0, 2)),
    )


def sample_background(rng: np.random.Generator, size: tuple[int, int]) -> Background:
    """A desaturated gradient with a low-contrast stripe, checker or noise pattern on top."""
    height, width = size

    def dull() -> Array:
        return hsv_to_rgb(rng.uniform(0.0, 360.0), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9))

    gradient = Texture(
        "gradient", dull(), dull(), (height + width) * rng.uniform(0.5, 1.5), rng.uniform(0.0, 2.0 * np.pi)
    )
    kind = ("stripes", "checker", "noise")[int(rng.integers(0, 3))]
    period = {
        "stripes": rng.uniform(4.0, 20.0),
        "checker": rng.uniform(8.0, 32.0),
        "noise": rng.uniform(6.0, 24.0),
    }[kind]
    lattice = rng.random((16, 16)) if kind == "noise" else None
    pattern = Texture(kind, np.zeros(3), np.ones(3), float(period), rng.uniform(0.0, np.pi), lattice)
    return Background(gradient, pattern, amplitude=rng.uniform(0.05, 0.3), disparity=1)


def sample_scene(
    rng: np.random.Generator, size: tuple[int, int], num_objects: tuple[int, int], num_classes: int
) -> Scene:
    """A background and ``num_objects[0]..num_objects[1]`` objects, ordered far to near.

    Objects at the same disparity keep their sampling order (the later one is drawn on top).
    """
    background = sample_background(rng, size)
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    objects = [sample_object(rng, size, num_classes) for _ in range(count)]
    objects.sort(key=lambda o: o.disparity)  # stable: far (small disparity) first
    return Scene(background, objects)


def sample_translations(rng: np.random.Generator, num_objects: int, max_motion: int) -> Array:
    """Whole-pixel ``(dx, dy)`` per layer, int64 ``[M + 1, 2]``; row 0 (background) is 0 half the time."""
    moves = rng.integers(-max_motion, max_motion + 1, size=(num_objects + 1, 2))
    bg_limit = max(1, max_motion // 2)
    moves[0] = rng.integers(-bg_limit, bg_limit + 1, size=2) if rng.random() < 0.5 else 0
    return moves.astype(np.int64)


def _fold(x: Array, length: float) -> Array:
    """Reflect positions into ``[0, length]`` (an object bounces off the border)."""
    m = np.mod(x, 2.0 * length)
    return np.where(m <= length, m, 2.0 * length - m)


def sample_paths(rng: np.random.Generator, scene: Scene, size: tuple[int, int], length: int) -> Array:
    """Centres ``[M, T, 2]`` (x, y) of each object over ``length`` frames; frame 0 is the scene.

    A path is constant velocity (0.5 .. min(H, W) / 40 px per frame) plus a slow sinusoidal
    wobble, reflected at the image border: smooth except for the bounces.
    """
    height, width = size
    num = len(scene.objects)
    t = np.arange(length, dtype=np.float64)  # (T,)
    paths = np.zeros((num, length, 2))
    top_speed = max(1.0, min(size) / 40.0)
    for k, obj in enumerate(scene.objects):
        speed, heading = rng.uniform(0.5, top_speed), rng.uniform(0.0, 2.0 * np.pi)
        amp, omega, phase = (
            rng.uniform(0.0, 2.0 * top_speed),
            rng.uniform(0.1, 0.4),
            rng.uniform(0, 2 * np.pi),
        )
        wobble = amp * (np.sin(omega * t + phase) - np.sin(phase))  # 0 at t = 0
        x = obj.cx + speed * np.cos(heading) * t + wobble * -np.sin(heading)  # wobble across the heading
        y = obj.cy + speed * np.sin(heading) * t + wobble * np.cos(heading)
        paths[k, :, 0] = _fold(x, float(width))
        paths[k, :, 1] = _fold(y, float(height))
    return paths
