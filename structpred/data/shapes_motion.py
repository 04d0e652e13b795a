"""Shapes-world clips filmed by a moving camera: exact per-frame flow, occlusion and camera motion.

Each clip shows scene ``i`` of the :class:`~structpred.data.shapes.ShapesWorld` (same ``split``,
``size``, ``seed``); its objects follow the smooth paths of :meth:`ShapesWorld.sequence` (in the
world), and a camera moves over the whole world: a per-clip constant translation velocity, and
with ``camera="affine"`` also a slow zoom and roll about the image centre. Ground truth is
exact for the continuous scene, so trajectories, occlusion tests and camera-motion fits can be
measured against it (:func:`true_tracks`).

Shape shorthand:
    T: frames, H, W: frame size, M: objects, P: query points.

Convention:
    * Positions and flow use pixel *index* coordinates: pixel ``(i, j)`` is the point
      ``(x, y) = (j, i)`` (the flow task's convention); the renderer samples the continuous scene
      at pixel centres ``(j + 0.5, i + 0.5)`` and the ``0.5`` is folded into the matrices.
    * ``camera_to_frame[t]`` (``C_t``, float64 ``[3, 3]``) maps a background point's frame-0 world
      position to frame t: ``C_0`` is the identity; the camera motion of the pair (t, t+1) is
      ``camera[t] = C_{t+1} C_t^{-1}`` (an affine map).
    * The background moves with the camera; an object moves rigidly (no rotation or zoom of its
      shape) with its centre at ``C_t`` applied to its world path, so its flow is one vector per
      object and frame pair. Its own motion is what is left after removing the camera's.
    * ``valid[t]`` (``valid_backward[t]``): the pixel's surface is still seen, by the same
      layer, at the nearest pixel to ``p + flow[t][p]`` in frame t+1 (frame t), inside the image.

Item ``(frames float32[T, 3, H, W], target)`` with ``flow`` float32 ``[T-1, 2, H, W]`` (frame t
-> t+1), ``flow_backward`` float32 ``[T-1, 2, H, W]`` (frame t+1 -> t), ``valid`` /
``valid_backward`` bool ``[T-1, H, W]``, ``camera`` float64 ``[T-1, 3, 3]``, ``camera_to_frame``
float64 ``[T, 3, 3]``, ``centres`` float64 ``[M, T, 2]`` object centres (index coordinates),
``owner`` int64 ``[T, H, W]`` (0 background, ``k + 1`` object k, far to near), ``image_id``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .shapes import ShapesWorld, Target, Transforms
from .shapes_render import Background, Scene, render_scene, texture_rgb, texture_t
from .shapes_scene import sample_paths
from .shapes_views import _ShapesViews

CAMERAS = ("none", "translation", "affine")
# The world's random streams per (split, seed, index): 0 scene, 1 motion pair, 2 paths; the
# camera draws from its own stream so the scene and paths equal ShapesVideo's.
_CAMERA_STREAM = 10
_PATHS_STREAM = 2


def _to_index(A: np.ndarray) -> np.ndarray:
    """A continuous-coordinate map ``[3, 3]`` -> the same map on index coordinates (``x - 0.5``)."""
    shift = np.eye(3)
    shift[:2, 2] = 0.5
    back = np.eye(3)
    back[:2, 2] = -0.5
    return back @ A @ shift


def camera_path(
    rng: np.random.Generator, size: tuple[int, int], length: int, kind: str, speed: float
) -> np.ndarray:
    """``C_t`` for t < ``length``: float64 ``[T, 3, 3]`` world (frame 0) -> frame t, index coordinates.

    Translation: a constant velocity of ``speed * U(0.5, 1)`` px per frame in a random direction.
    Affine adds a zoom of ``exp(U(-0.006, 0.006))`` and a roll of ``U(-0.006, 0.006)`` rad per
    frame about the image centre (a 30-frame clip zooms by at most ~20 % and rolls ~10 degrees).
    """
    height, width = size
    heading = rng.uniform(0.0, 2.0 * math.pi)
    v = speed * rng.uniform(0.5, 1.0) * np.array([math.cos(heading), math.sin(heading)])
    zoom = rng.uniform(-0.006, 0.006) if kind == "affine" else 0.0
    roll = rng.uniform(-0.006, 0.006) if kind == "affine" else 0.0
    centre = np.eye(3)
    centre[:2, 2] = (width / 2, height / 2)
    mats = np.zeros((length, 3, 3))
    for t in range(length):
        if kind == "none":
            mats[t] = np.eye(3)
            continue
        s, a = math.exp(zoom * t), roll * t
        rs = np.array(
            [[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0], [0, 0, 1]]
        )
        move = np.eye(3)
        move[:2, 2] = v * t
        mats[t] = _to_index(move @ centre @ rs @ np.linalg.inv(centre))
    return mats


def _apply(M: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Affine ``M`` [3, 3] applied to points ``[..., 2]``."""
    return xy @ M[:2, :2].T + M[:2, 2]


def _background(bg: Background, size: tuple[int, int], to_world: np.ndarray) -> np.ndarray:
    """RGB ``[H, W, 3]`` of the background seen through ``to_world`` (frame index -> world index).

    The shapes world's background (:func:`~structpred.data.shapes_render.render_background`)
    evaluated at arbitrary world points: gradient about the image centre plus the zero-mean pattern.
    """
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each
    world = _apply(to_world, np.stack([xs, ys], axis=-1)) + 0.5  # (H, W, 2) continuous coordinates
    wx, wy = world[..., 0], world[..., 1]
    rgb = texture_rgb(bg.gradient, wx - width / 2, wy - height / 2)
    return rgb + bg.amplitude * (texture_t(bg.pattern, wx, wy) - 0.5)[..., None]


def _landed(owner_next: np.ndarray, owner: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: ``owner[p]`` is what ``owner_next`` shows at the nearest pixel to ``p + flow[p]``."""
    height, width = owner.shape
    ys, xs = np.mgrid[0:height, 0:width]
    tx, ty = np.rint(xs + flow[0]).astype(np.int64), np.rint(ys + flow[1]).astype(np.int64)
    inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
    return inside & (owner_next[np.clip(ty, 0, height - 1), np.clip(tx, 0, width - 1)] == owner)


def _flow(owner: np.ndarray, camera: np.ndarray, object_moves: np.ndarray) -> np.ndarray:
    """float64 ``[2, H, W]``: ``camera(p) - p`` on the background, ``object_moves[k]`` on object k."""
    height, width = owner.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    grid = np.stack([xs, ys], axis=-1)  # (H, W, 2)
    moves = np.concatenate([np.zeros((1, 2)), object_moves])  # (M + 1, 2), row 0 unused
    flow = np.where((owner == 0)[..., None], _apply(camera, grid) - grid, moves[owner])  # (H, W, 2)
    return flow.transpose(2, 0, 1)  # (H, W, 2) -> (2, H, W)


class ShapesMotion(_ShapesViews):
    """Clips of the shapes world seen by a moving camera, with exact flow both ways (module docstring).

    Args:
        split, size, num_images, seed, num_objects: as :class:`~structpred.data.shapes.ShapesWorld`.
        length: frames per clip ``T`` (at least 2).
        camera: ``"none"`` (static, like ``shapes-video``), ``"translation"`` or ``"affine"``.
        camera_speed: largest camera translation in px per frame (None: ``min(H, W) / 64``).
        transforms: a joint ``(frames, target) -> (frames, target)`` transform.
        cache: keep rendered clips in memory and hand out copies.
    """

    kind = "clip"

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] = (96, 128),
        num_images: int | None = None,
        seed: int = 0,
        num_objects: tuple[int, int] = (2, 6),
        length: int = 16,
        camera: str = "affine",
        camera_speed: float | None = None,
        transforms: Transforms | None = None,
        cache: bool = False,
    ) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 2:
            raise ValueError(
                f"ShapesMotion: length must be an int >= 2 (a clip has frame pairs), got {length!r}"
            )
        if camera not in CAMERAS:
            raise ValueError(f"ShapesMotion: camera must be one of {CAMERAS}, got {camera!r}")
        self.world = ShapesWorld(split, size, num_images, seed, num_objects=num_objects)
        if camera_speed is None:
            camera_speed = min(self.world.size) / 64
        if not (isinstance(camera_speed, int | float) and math.isfinite(camera_speed) and camera_speed >= 0):
            raise ValueError(f"ShapesMotion: camera_speed must be a finite number >= 0, got {camera_speed!r}")
        super().__init__(self.world, transforms, cache)
        self.length = self.num_views = length
        self.camera, self.camera_speed = camera, float(camera_speed)

    def __repr__(self) -> str:
        clips = f"{len(self)} clips of {self.length} x {self.size}"
        return f"ShapesMotion({self.split!r}, {clips}, camera={self.camera!r})"

    def _render(self, index: int) -> tuple[Tensor, Target]:
        world, size, T = self.world, self.size, self.length
        scene = world.scene(index)
        num = len(scene.objects)
        paths = sample_paths(world._rng(index, _PATHS_STREAM), scene, size, T)  # (M, T, 2) continuous
        to_frame = camera_path(world._rng(index, _CAMERA_STREAM), size, T, self.camera, self.camera_speed)
        centres = np.stack([_apply(to_frame[t], paths[:, t] - 0.5) for t in range(T)], axis=1)  # (M, T, 2)
        centres = centres.reshape(num, T, 2)
        frames = np.zeros((T, 3, *size), dtype=np.float32)
        owners = np.zeros((T, *size), dtype=np.int64)
        for t in range(T):
            objects = [
                dataclasses.replace(o, cx=float(centres[k, t, 0] + 0.5), cy=float(centres[k, t, 1] + 0.5))
                for k, o in enumerate(scene.objects)
            ]
            render = render_scene(Scene(scene.background, objects), size)
            bg = np.clip(_background(scene.background, size, np.linalg.inv(to_frame[t])), 0.0, 1.0)
            image = np.where((render.owner == 0)[..., None], bg.astype(np.float32), render.image)
            frames[t] = image.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            owners[t] = render.owner
        cams = np.stack([to_frame[t + 1] @ np.linalg.inv(to_frame[t]) for t in range(T - 1)])  # (T-1, 3, 3)
        moves = np.diff(centres, axis=1)  # (M, T-1, 2)
        fw = np.stack([_flow(owners[t], cams[t], moves[:, t]) for t in range(T - 1)])  # (T-1, 2, H, W)
        bw = np.stack(
            [_flow(owners[t + 1], np.linalg.inv(cams[t]), -moves[:, t]) for t in range(T - 1)]
        )  # (T-1, 2, H, W)
        valid = np.stack([_landed(owners[t + 1], owners[t], fw[t]) for t in range(T - 1)])
        valid_bw = np.stack([_landed(owners[t], owners[t + 1], bw[t]) for t in range(T - 1)])
        target = {
            "flow": torch.from_numpy(fw.astype(np.float32)),
            "flow_backward": torch.from_numpy(bw.astype(np.float32)),
            "valid": torch.from_numpy(valid),
            "valid_backward": torch.from_numpy(valid_bw),
            "camera": torch.from_numpy(cams),
            "camera_to_frame": torch.from_numpy(to_frame),
            "centres": torch.from_numpy(centres),
            "owner": torch.from_numpy(owners),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        return torch.from_numpy(frames), target


def true_tracks(target: Target, points: Tensor, starts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where the surface under each query point really is in every frame of a clip.

    Args:
        target: a :class:`ShapesMotion` item's target (``owner``, ``camera_to_frame``, ``centres``).
        points (Tensor[P, 2]): (x, y) index coordinates in frame ``starts[p]``.
        starts (Tensor[P] int): each point's frame.

    Returns:
        positions float32 ``[P, T, 2]`` (NaN before the start), visible bool ``[P, T]`` (from the
        start until the surface is first hidden or leaves the image; False after that), layer
        int64 ``[P]`` (0 background, ``k + 1`` object k).
    """
    owner, to_frame, centres = target["owner"], target["camera_to_frame"], target["centres"]
    T, H, W = owner.shape
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(
            f"true_tracks: points must be a Tensor[P, 2], got {tuple(getattr(points, 'shape', ()))}"
        )
    if not isinstance(starts, Tensor) or starts.shape != points.shape[:1]:
        raise ValueError(f"true_tracks: starts must be a Tensor[{points.shape[0]}] of frame indices")
    if ((starts < 0) | (starts >= T)).any():
        raise ValueError(
            f"true_tracks: starts must be frames in [0, {T}), got {starts.min()}..{starts.max()}"
        )
    P = points.shape[0]
    p = points.to(torch.float64)
    s = starts.long()
    xi = p[:, 0].round().long().clamp(0, W - 1)
    yi = p[:, 1].round().long().clamp(0, H - 1)
    layer = owner[s, yi, xi]  # (P,)
    # background: C_t C_s^-1 p; object k: p + centre_k(t) - centre_k(s)
    to_world = torch.linalg.inv(to_frame)[s]  # (P, 3, 3)
    world = (to_world[:, :2, :2] @ p[:, :, None])[..., 0] + to_world[:, :2, 2]  # (P, 2)
    bg = torch.einsum("tij,pj->pti", to_frame[:, :2, :2], world) + to_frame[None, :, :2, 2]  # (P, T, 2)
    if centres.shape[0]:
        obj = layer.clamp(min=1) - 1
        own = p[:, None] + centres[obj] - centres[obj, s][:, None]  # (P, T, 2)
        pos = torch.where((layer == 0)[:, None, None], bg, own)
    else:  # a scene without objects
        pos = bg
    t = torch.arange(T)
    before = t[None] < s[:, None]  # (P, T)
    xr, yr = pos[..., 0].round().long(), pos[..., 1].round().long()
    inside = (xr >= 0) & (xr < W) & (yr >= 0) & (yr < H)
    seen = owner[t[None].expand(P, T), yr.clamp(0, H - 1), xr.clamp(0, W - 1)] == layer[:, None]
    ok = (inside & seen) | before
    visible = torch.cummin(ok.long(), dim=1).values.bool() & ~before
    pos = pos.float()
    pos[before] = float("nan")
    return pos, visible, layer
