"""The shapes world: structpred's built-in, procedural dataset (no files, torch + numpy only).

Each image shows 2-6 textured objects of 6 classes (circle, square, triangle, star, ring,
cross; two parts each, see :mod:`structpred.data.shapes_geometry`) on a textured background,
drawn far to near so nearer objects occlude farther ones. The same scene also yields a flow
pair (:meth:`ShapesWorld.motion_pair`), a rectified stereo pair (:meth:`ShapesWorld.stereo_pair`)
and a short video with tracks (:meth:`ShapesWorld.sequence`).

Shape shorthand:
    H, W: image size; N: annotated objects; M: all objects of the scene; T: frames.

Convention:
    * Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``; boxes are xyxy pixel edges, tight around
      the *visible* mask (``x2`` = last column + 1).
    * Annotations are of visible pixels. An object is annotated when it keeps at least
      ``min_visible_pixels`` pixels and ``min_visible_fraction`` of its unoccluded in-image area
      (being cut by the image border does not count as occlusion). The visible pixels of an
      object that is not annotated are 255 (ignore) in ``semantic`` and ``parts``.
    * Depth is constant per object, in metres: ``depth = focal * baseline / disparity`` with
      ``focal = W`` pixels, whole-pixel disparities (objects 2..~min(H, W)/10, background 1),
      so the stereo pair and the flow pair are exact pixel shifts of the image.
    * Determinism: a sample depends only on ``(split, seed, index)`` (one numpy generator per
      index, seeded from that triple and the kind of sample); splits never share a stream.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .records import Categories
from .shapes_geometry import CLASS_NAMES, PART_CLASSES, PART_NAMES
from .shapes_render import Render, Scene, render_scene
from .shapes_scene import sample_paths, sample_scene, sample_translations

Target = dict[str, Tensor]
Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_NUM_IMAGES = {"train": 2000, "val": 200, "test": 500}
IGNORE = 255
# Kinds of sample drawn from one (split, seed, index): separate streams, same scene.
_SCENE, _MOTION, _PATHS = 0, 1, 2


@dataclasses.dataclass
class ShapesSample:
    """An item with its scene internals (see :meth:`ShapesWorld.sample`).

    Attributes:
        image, target: exactly what ``dataset[index]`` returns (before ``transforms``).
        scene: the background and objects, far to near.
        object_ids (int64[N]): index in ``scene.objects`` of each annotated object.
        owner (int64[H, W]): 0 background, ``k + 1`` where ``scene.objects[k]`` is visible.
        amodal (bool[M, H, W]): every object's unoccluded mask, clipped to the image.
    """

    image: Tensor
    target: Target
    scene: Scene
    object_ids: Tensor
    owner: Tensor
    amodal: Tensor


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in pair):
        raise ValueError(f"ShapesWorld: size must be an int or a pair of ints (H, W), got {size!r}")
    if min(pair) < 16:
        raise ValueError(f"ShapesWorld: size must be at least 16 x 16 pixels, got {size!r}")
    return int(pair[0]), int(pair[1])


def _boxes(owner: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes ``[N, 4]`` of the pixels where ``owner == ids[n]`` (each non-empty)."""
    height, width = owner.shape
    masks = owner[None] == ids[:, None, None]  # (N, H, W)
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # (N, H), (N, W)
    y1, x1 = rows.argmax(axis=1), cols.argmax(axis=1)
    y2 = height - rows[:, ::-1].argmax(axis=1)  # one past the last row
    x2 = width - cols[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


class ShapesWorld(Dataset[tuple[Tensor, Target]]):
    """Procedural images of textured shapes with boxes, masks, semantic, part and depth maps.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint random streams).
        size: ``(H, W)`` or an int, at least 16.
        num_images: dataset length; None gives :data:`DEFAULT_NUM_IMAGES` of the split
            (train 2000, val 200, test 500).
        seed: non-negative base seed; the same ``(split, seed, index)`` gives the same sample.
        num_objects: ``(min, max)`` objects drawn per scene (before occlusion filtering).
        min_visible_fraction: annotate an object only if this much of it stays visible.
        min_visible_pixels: ... and at least this many pixels.
        baseline: stereo baseline in metres (depth scale).
        max_motion: largest per-object translation of :meth:`motion_pair` in whole pixels;
            None means ``max(2, min(H, W) // 32)``.
        transforms: optional joint ``(image, target) -> (image, target)`` applied by ``[]``.
        cache: keep every rendered item in memory (about 0.6 MB each at 128 x 128) and hand out
            copies: later epochs skip rendering. Items are identical either way.

    Item ``(image, target)``: ``image`` float32 ``[3, H, W]`` in [0, 1]; ``target`` has
    ``boxes`` float32 ``[N, 4]``, ``labels`` int64 ``[N]`` (1..6), ``masks`` uint8 ``[N, H, W]``
    (disjoint, visible pixels), ``semantic`` int64 ``[H, W]`` (0 background, class, 255 ignore),
    ``parts`` int64 ``[H, W]`` (0 background, global part id 1..12, 255 ignore), ``depth``
    float32 ``[1, H, W]`` metres, ``area`` float32 ``[N]`` (visible pixels), ``iscrowd`` uint8
    ``[N]`` (zeros), ``image_id`` int64 scalar (the index). Objects are listed far to near.
    """

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] = (128, 128),
        num_images: int | None = None,
        seed: int = 0,
        num_objects: tuple[int, int] = (2, 6),
        min_visible_fraction: float = 0.2,
        min_visible_pixels: int = 3,
        baseline: float = 0.1,
        max_motion: int | None = None,
        transforms: Transforms | None = None,
        cache: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"ShapesWorld: split must be one of {SPLITS}, got {split!r}")
        self.size = _size_pair(size)
        if num_images is None:
            num_images = DEFAULT_NUM_IMAGES.get(split, 1000)
        if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images <= 0:
            raise ValueError(f"ShapesWorld: num_images must be a positive int, got {num_images!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"ShapesWorld: seed must be a non-negative int, got {seed!r}")
        if len(num_objects) != 2 or not 0 <= num_objects[0] <= num_objects[1]:
            raise ValueError(
                f"ShapesWorld: num_objects must be (min, max) with 0 <= min <= max, got {num_objects}"
            )
        if not 0.0 <= min_visible_fraction <= 1.0:
            raise ValueError(
                f"ShapesWorld: min_visible_fraction must be in [0, 1], got {min_visible_fraction}"
            )
        if min_visible_pixels < 1:
            raise ValueError(f"ShapesWorld: min_visible_pixels must be >= 1, got {min_visible_pixels}")
        if not baseline > 0:
            raise ValueError(f"ShapesWorld: baseline must be positive, got {baseline}")
        if max_motion is None:
            max_motion = max(2, min(self.size) // 32)
        if max_motion < 0:
            raise ValueError(f"ShapesWorld: max_motion must be >= 0, got {max_motion}")
        self.split = split
        self.num_images = num_images
        self.seed = seed
        self.num_objects = (int(num_objects[0]), int(num_objects[1]))
        self.min_visible_fraction = float(min_visible_fraction)
        self.min_visible_pixels = int(min_visible_pixels)
        self.focal = float(self.size[1])  # pixels: a ~53 degree horizontal field of view
        self.baseline = float(baseline)
        self.max_motion = int(max_motion)
        self.transforms = transforms
        self._cache: dict[int, tuple[Tensor, Target]] | None = {} if cache else None
        self.categories = Categories(list(CLASS_NAMES))
        self.part_names: list[str] = list(PART_NAMES)  # part_names[p - 1] names part id p
        # Classes of each label map, background (0) included: what a semantic segmenter predicts.
        self.label_map_classes: dict[str, int] = {
            "semantic": len(CLASS_NAMES) + 1,
            "parts": len(PART_NAMES) + 1,
        }
        self.part_classes: list[int] = list(PART_CLASSES)  # class label owning part id p

    # ------------------------------------------------------------------------- plumbing

    def __len__(self) -> int:
        return self.num_images

    def _index(self, index: Any) -> int:
        if isinstance(index, bool):
            raise TypeError(f"ShapesWorld: index must be an int, got {index!r}")
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"ShapesWorld: index must be an int, got {type(index).__name__}") from None
        if not -self.num_images <= i < self.num_images:
            raise IndexError(f"ShapesWorld: index {i} out of range for {self.num_images} images")
        return i % self.num_images

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        entropy = [self.seed, SPLITS.index(self.split), index, stream]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def scene(self, index: int) -> Scene:
        """The scene (background and objects, far to near) of sample ``index``."""
        i = self._index(index)
        return sample_scene(self._rng(i, _SCENE), self.size, self.num_objects, len(CLASS_NAMES))

    def _depth_of(self, disparity: np.ndarray) -> np.ndarray:
        return self.focal * self.baseline / disparity

    def _layer_disparities(self, scene: Scene) -> np.ndarray:
        """int64 ``[M + 1]``: the background's disparity, then each object's."""
        return np.array([scene.background.disparity] + [o.disparity for o in scene.objects], dtype=np.int64)

    def _annotated(self, render: Render) -> np.ndarray:
        """bool ``[M]``: which objects are visible enough to be annotated."""
        visible = np.bincount(render.owner.ravel(), minlength=len(render.amodal_area) + 1)[1:]
        return (visible >= self.min_visible_pixels) & (
            visible >= self.min_visible_fraction * render.amodal_area
        )

    # ------------------------------------------------------------------------- items

    def _target(self, scene: Scene, render: Render, index: int) -> tuple[Target, np.ndarray]:
        owner, num = render.owner, len(scene.objects)
        keep = self._annotated(render)
        ids = np.flatnonzero(keep)  # (N,) indices into scene.objects
        labels = np.array([o.label for o in scene.objects], dtype=np.int64)  # (M,)
        # Look-up tables indexed by owner (0 background, k + 1 object k).
        sem_lut = np.zeros(num + 1, dtype=np.int64)
        sem_lut[1:] = np.where(keep, labels, IGNORE)
        part_lut = np.zeros(num + 1, dtype=np.int64)
        part_lut[1:] = np.where(keep, 2 * (labels - 1) + 1, IGNORE)  # id of local part 0
        semantic = sem_lut[owner]
        parts = part_lut[owner] + ((owner > 0) & (semantic != IGNORE)) * np.maximum(render.part, 0)
        depth = self._depth_of(self._layer_disparities(scene).astype(np.float64))[owner]
        masks = owner[None] == (ids + 1)[:, None, None]  # (N, H, W)
        target = {
            "boxes": torch.from_numpy(_boxes(owner, ids + 1)).reshape(-1, 4),
            "labels": torch.from_numpy(labels[ids]),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "semantic": torch.from_numpy(semantic),
            "parts": torch.from_numpy(parts),
            "depth": torch.from_numpy(depth.astype(np.float32))[None],  # (H, W) -> (1, H, W)
            "area": torch.from_numpy(masks.sum(axis=(1, 2)).astype(np.float32)),
            "iscrowd": torch.zeros(len(ids), dtype=torch.uint8),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        return target, ids

    @staticmethod
    def _chw(image: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (H, W, 3) -> (3, H, W)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        i = self._index(index)
        hit = self._cache.get(i) if self._cache is not None else None
        if hit is None:
            scene = self.scene(i)
            render = render_scene(scene, self.size)
            target, _ = self._target(scene, render, i)
            image = self._chw(render.image)
            if self._cache is not None:
                self._cache[i] = (image, target)
        else:
            image, target = hit
        if self._cache is not None:  # copies: a caller's in-place change must not reach the cache
            image, target = image.clone(), {k: v.clone() for k, v in target.items()}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def sample(self, index: int) -> ShapesSample:
        """Item ``index`` with its scene, owner map and unoccluded masks (for analysis and tests)."""
        i = self._index(index)
        scene = self.scene(i)
        render = render_scene(scene, self.size, with_amodal=True)
        target, ids = self._target(scene, render, i)
        assert render.amodal is not None
        return ShapesSample(
            self._chw(render.image),
            target,
            scene,
            torch.from_numpy(ids),
            torch.from_numpy(render.owner),
            torch.from_numpy(render.amodal),
        )

    # ------------------------------------------------------------------------- flow and stereo

    @staticmethod
    def _still_visible(owner1: np.ndarray, owner2: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """bool ``[H, W]``: pixel p's surface is visible at ``p + shift[p]`` in the second render.

        Args:
            shift: int ``[H, W, 2]`` whole-pixel (dx, dy) per pixel of the first render.
        """
        height, width = owner1.shape
        ys, xs = np.mgrid[0:height, 0:width]  # (H, W) each
        tx, ty = xs + shift[..., 0], ys + shift[..., 1]
        inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
        landed = owner2[np.clip(ty, 0, height - 1), np.clip(tx, 0, width - 1)]
        return inside & (landed == owner1)

    def motion_pair(self, index: int) -> dict[str, Tensor]:
        """Item ``index``'s image and the same scene after every layer moved by whole pixels.

        Returns a dict: ``image1``, ``image2`` float32 ``[3, H, W]`` (``image1`` is the item's
        image); ``flow`` float32 ``[2, H, W]`` forward flow (x, y) in pixels, defined at every
        pixel of ``image1``; ``valid`` bool ``[H, W]``: the pixel's surface is still visible (and
        inside the image) in ``image2``, where ``image2[p + flow[p]] == image1[p]`` exactly;
        ``translations`` int64 ``[M + 1, 2]`` (dx, dy) of the background then each object;
        ``image_id``.
        """
        i = self._index(index)
        scene = self.scene(i)
        moves = sample_translations(self._rng(i, _MOTION), len(scene.objects), self.max_motion)
        first = render_scene(scene, self.size)
        second = render_scene(scene, self.size, offsets=moves)
        shift = moves[first.owner]  # (H, W, 2)
        return {
            "image1": self._chw(first.image),
            "image2": self._chw(second.image),
            "flow": torch.from_numpy(shift.transpose(2, 0, 1).astype(np.float32)),  # (2, H, W)
            "valid": torch.from_numpy(self._still_visible(first.owner, second.owner, shift)),
            "translations": torch.from_numpy(moves),
            "image_id": torch.tensor(i, dtype=torch.int64),
        }

    def stereo_pair(self, index: int) -> dict[str, Any]:
        """A rectified stereo pair of scene ``index``; ``left`` is the item's image.

        A point at depth Z seen at left column x is at right column ``x - d``, ``d = focal *
        baseline / Z``. Returns a dict: ``left``, ``right`` float32 ``[3, H, W]``; ``disparity``
        float32 ``[1, H, W]`` (of the left image, pixels), ``disparity_right`` (of the right
        image); ``depth`` float32 ``[1, H, W]`` metres (the item's depth); ``valid`` bool
        ``[H, W]``: the left pixel is visible in the right image, where ``right[y, x - d] ==
        left[y, x]`` exactly; ``valid_right`` bool ``[H, W]``: the right pixel is visible in the
        left image, where ``left[y, x + d_right] == right[y, x]``; ``focal`` (pixels) and
        ``baseline`` (metres) floats; ``image_id``.
        """
        i = self._index(index)
        scene = self.scene(i)
        disp = self._layer_disparities(scene)  # (M + 1,)
        offsets = np.stack([-disp, np.zeros_like(disp)], axis=1)  # (M + 1, 2): shift left by d
        left = render_scene(scene, self.size)
        right = render_scene(scene, self.size, offsets=offsets)
        disp_left = disp[left.owner]  # (H, W)
        shift = np.stack([-disp_left, np.zeros_like(disp_left)], axis=-1)  # (H, W, 2)
        disp_right = disp[right.owner]  # (H, W)
        shift_right = np.stack([disp_right, np.zeros_like(disp_right)], axis=-1)  # (H, W, 2): back by +d
        return {
            "left": self._chw(left.image),
            "right": self._chw(right.image),
            "disparity": torch.from_numpy(disp_left.astype(np.float32))[None],  # (1, H, W)
            "disparity_right": torch.from_numpy(disp_right.astype(np.float32))[None],
            "depth": torch.from_numpy(self._depth_of(disp_left.astype(np.float64)).astype(np.float32))[None],
            "valid": torch.from_numpy(self._still_visible(left.owner, right.owner, shift)),
            "valid_right": torch.from_numpy(self._still_visible(right.owner, left.owner, shift_right)),
            "focal": self.focal,
            "baseline": self.baseline,
            "image_id": torch.tensor(i, dtype=torch.int64),
        }

    # ------------------------------------------------------------------------- tracking

    def sequence(self, index: int, length: int = 8) -> dict[str, Tensor]:
        """A video of scene ``index`` whose objects move along smooth paths (frame 0 = the item).

        Objects keep their depth, so paths may cross and occlude consistently; the background
        is static. A track is visible in a frame when the object passes the annotation rule.

        Returns a dict: ``frames`` float32 ``[T, 3, H, W]``; ``track_ids`` int64 ``[M]`` (1..M,
        far to near); ``labels`` int64 ``[M]``; ``tracks`` float32 ``[M, T, 4]`` xyxy boxes of
        the visible pixels, NaN where not visible; ``visible`` bool ``[M, T]``; ``instances``
        int64 ``[T, H, W]`` (0 background, else the track id owning the pixel); ``image_id``.
        """
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"ShapesWorld.sequence: length must be a positive int, got {length!r}")
        i = self._index(index)
        scene = self.scene(i)
        num = len(scene.objects)
        paths = sample_paths(self._rng(i, _PATHS), scene, self.size, length)  # (M, T, 2)
        height, width = self.size
        frames = np.zeros((length, 3, height, width), dtype=np.float32)
        instances = np.zeros((length, height, width), dtype=np.int64)
        tracks = np.full((num, length, 4), np.nan, dtype=np.float32)
        visible = np.zeros((num, length), dtype=bool)
        for t in range(length):
            objects = [
                dataclasses.replace(o, cx=float(paths[k, t, 0]), cy=float(paths[k, t, 1]))
                for k, o in enumerate(scene.objects)
            ]
            render = render_scene(Scene(scene.background, objects), self.size)
            frames[t] = render.image.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            instances[t] = render.owner
            seen = np.flatnonzero(self._annotated(render))
            visible[seen, t] = True
            tracks[seen, t] = _boxes(render.owner, seen + 1)
        return {
            "frames": torch.from_numpy(frames),
            "track_ids": torch.arange(1, num + 1, dtype=torch.int64),
            "labels": torch.tensor([o.label for o in scene.objects], dtype=torch.int64),
            "tracks": torch.from_numpy(tracks),
            "visible": torch.from_numpy(visible),
            "instances": torch.from_numpy(instances),
            "image_id": torch.tensor(i, dtype=torch.int64),
        }
