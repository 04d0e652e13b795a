"""The shapes world's pairs and clips as datasets: flow pairs, rectified stereo pairs, videos.

Shape shorthand:
    H, W: image size; T: frames of a clip; M: objects (tracks) of a scene.

Items (DESIGN.md §3; every target value is a Tensor so the engine can move it to a device):
    * :class:`ShapesFlow` — ``(views float32[2, 3, H, W], target)``, view 0 = frame0, view 1 =
      frame1; ``flow`` float32 ``[2, H, W]`` forward flow (dx, dy) in pixels from view 0 to view 1,
      ``valid`` bool ``[H, W]`` (``views[1][p + flow[p]] == views[0][p]`` exactly there),
      ``image_id`` int64 scalar.
    * :class:`ShapesStereo` — ``(views float32[2, 3, H, W], target)``, view 0 = left, view 1 =
      right; ``disparity`` float32 ``[1, H, W]`` of the left view (pixels, positive: left x <->
      right x - d), ``disparity_right`` float32 ``[1, H, W]`` (right x <-> left x + d),
      ``depth`` float32 ``[1, H, W]`` metres (left), ``valid`` bool ``[H, W]`` (left pixel visible in
      the right view), ``valid_right`` bool ``[H, W]`` (right pixel visible in the left view),
      ``focal`` float32 scalar (pixels), ``baseline`` float32 scalar (metres), ``image_id``.
    * :class:`ShapesVideo` — ``(frames float32[T, 3, H, W], target)``; ``tracks`` float32
      ``[M, T, 4]`` xyxy boxes, NaN where not visible, ``visible`` bool ``[M, T]``, ``track_ids``
      int64 ``[M]`` (1..M), ``labels`` int64 ``[M]``, ``instances`` int64 ``[T, H, W]`` (0
      background, else the track id), ``image_id``.

Item ``i`` shows scene ``i`` of the :class:`~structpred.data.shapes.ShapesWorld` with the same
``split``, ``size``, ``seed`` (view 0 / frame 0 is that world's image ``i``). ``transforms`` is a
joint transform (:mod:`structpred.data.transforms`) applied to every item.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .records import Categories
from .shapes import ShapesWorld, Target, Transforms


class _ShapesViews(Dataset[tuple[Tensor, Target]], abc.ABC):
    """Shared plumbing: the wrapped world, index checks, the cache of rendered items, transforms."""

    kind: str = "pair"
    num_views: int = 2

    def __init__(self, world: ShapesWorld, transforms: Transforms | None, cache: bool) -> None:
        name = type(self).__name__
        if transforms is not None and not callable(transforms):
            raise ValueError(f"{name}: transforms must be a callable (images, target) -> (images, target)")
        if not isinstance(cache, bool):
            raise ValueError(f"{name}: cache must be a bool, got {cache!r}")
        self.world = world
        self.split, self.size, self.seed = world.split, world.size, world.seed
        self.transforms = transforms
        self.categories: Categories | None = None
        self._cache: dict[int, tuple[Tensor, Target]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.world)

    @abc.abstractmethod
    def _render(self, index: int) -> tuple[Tensor, Target]:
        """Item ``index`` before caching and transforms."""

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        i = self.world._index(index)  # the world's IndexError / TypeError
        hit = self._cache.get(i) if self._cache is not None else None
        if hit is None:
            hit = self._render(i)
            if self._cache is not None:
                self._cache[i] = hit
        images, target = hit
        if self._cache is not None:  # copies: a caller's in-place change must not reach the cache
            images, target = images.clone(), {k: v.clone() for k, v in target.items()}
        if self.transforms is not None:
            images, target = self.transforms(images, target)
        return images, target

    def __repr__(self) -> str:
        size = " x ".join(str(s) for s in (self.num_views, *self.size))
        return f"{type(self).__name__}({self.split!r}, {len(self)} items of {size})"


class ShapesFlow(_ShapesViews):
    """Flow pairs of the shapes world: every layer moves by whole pixels (see the module docstring).

    Args:
        split, size, num_images, seed, num_objects, max_motion: as :class:`ShapesWorld`.
        transforms: a joint ``(views, target) -> (views, target)`` transform.
        cache: keep rendered items in memory (~0.5 MB each at 128 x 128) and hand out copies.
    """

    kind = "pair"
    num_views = 2

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] = (128, 128),
        num_images: int | None = None,
        seed: int = 0,
        num_objects: tuple[int, int] = (2, 6),
        max_motion: int | None = None,
        transforms: Transforms | None = None,
        cache: bool = False,
    ) -> None:
        world = ShapesWorld(split, size, num_images, seed, num_objects=num_objects, max_motion=max_motion)
        super().__init__(world, transforms, cache)
        self.max_motion = world.max_motion

    def _render(self, index: int) -> tuple[Tensor, Target]:
        pair = self.world.motion_pair(index)
        views = torch.stack([pair["image1"], pair["image2"]])  # 2 x (3, H, W) -> (2, 3, H, W)
        return views, {"flow": pair["flow"], "valid": pair["valid"], "image_id": pair["image_id"]}


class ShapesStereo(_ShapesViews):
    """Rectified stereo pairs of the shapes world (whole-pixel disparities; see the module docstring).

    Args:
        split, size, num_images, seed, num_objects, baseline: as :class:`ShapesWorld`.
        transforms: a joint ``(views, target) -> (views, target)`` transform.
        cache: keep rendered items in memory (~0.6 MB each at 128 x 128) and hand out copies.
    """

    kind = "pair"
    num_views = 2

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] = (128, 128),
        num_images: int | None = None,
        seed: int = 0,
        num_objects: tuple[int, int] = (2, 6),
        baseline: float = 0.1,
        transforms: Transforms | None = None,
        cache: bool = False,
    ) -> None:
        world = ShapesWorld(split, size, num_images, seed, num_objects=num_objects, baseline=baseline)
        super().__init__(world, transforms, cache)
        self.focal, self.baseline = world.focal, world.baseline

    def _render(self, index: int) -> tuple[Tensor, Target]:
        pair = self.world.stereo_pair(index)
        views = torch.stack([pair["left"], pair["right"]])  # 2 x (3, H, W) -> (2, 3, H, W)
        keys = ("disparity", "disparity_right", "depth", "valid", "valid_right", "image_id")
        target = {key: pair[key] for key in keys}
        target["focal"] = torch.tensor(pair["focal"], dtype=torch.float32)
        target["baseline"] = torch.tensor(pair["baseline"], dtype=torch.float32)
        return views, target


class ShapesVideo(_ShapesViews):
    """Clips of ``length`` frames of the shapes world with tracks (see the module docstring).

    Args:
        split, size, num_images, seed, num_objects: as :class:`ShapesWorld`.
        length: frames per clip ``T`` (default 8).
        transforms: a joint ``(frames, target) -> (frames, target)`` transform.
        cache: keep rendered items in memory (~2.5 MB each at 128 x 128, T = 8) and hand out copies.
    """

    kind = "clip"

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] = (128, 128),
        num_images: int | None = None,
        seed: int = 0,
        num_objects: tuple[int, int] = (2, 6),
        length: int = 8,
        transforms: Transforms | None = None,
        cache: bool = False,
    ) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"ShapesVideo: length must be a positive int, got {length!r}")
        world = ShapesWorld(split, size, num_images, seed, num_objects=num_objects)
        super().__init__(world, transforms, cache)
        self.length = self.num_views = length
        self.categories = world.categories

    def _render(self, index: int) -> tuple[Tensor, Target]:
        clip = self.world.sequence(index, self.length)
        frames = clip.pop("frames")  # (T, 3, H, W)
        return frames, clip
