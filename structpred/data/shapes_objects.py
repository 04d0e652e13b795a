"""Object crops of the shapes world: one object per item, labelled by its class (classification).

Each item is one annotated object of a shapes-world scene (:class:`~structpred.data.shapes.ShapesWorld`,
same split, seed and scene size): the square window centred on its box, of side ``(1 + 2 *
margin)`` times the box's longer side (some context: background, neighbours, occluders), cut out
of the scene and resized to ``size x size``. The label is the object's class, 0..5 (``circle``,
``square``, ``triangle``, ``star``, ``ring``, ``cross``; no background class).

Convention:
    * Objects are taken scene by scene (scene 0, 1, ...; each scene's objects far to near), keeping
      those whose box's longer side is at least ``min_box`` pixels: item ``i`` depends on
      ``(split, seed, scene_size, margin, min_box, i)`` only, not on ``num_images``, so a smaller
      set is a prefix of a larger one (the data-size experiments rely on it).
    * Window pixels outside the scene are black (zero padding); resizing is bilinear with
      antialiasing (``align_corners=False``), values stay in [0, 1].
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .real import SPLITS, Transform, check_split
from .shapes import ShapesWorld
from .shapes_geometry import CLASS_NAMES

DEFAULT_NUM_IMAGES = {"train": 2000, "val": 500, "test": 1000}
_MAX_EMPTY_SCENES = 1000  # scenes in a row without a kept object before giving up


def crop_square(image: Tensor, box: Tensor, margin: float, size: int) -> Tensor:
    """The square window around ``box`` resized to ``[3, size, size]``.

    Args:
        image (Tensor[3, H, W]): the scene, values in [0, 1].
        box (Tensor[4]): xyxy pixel edges.
        margin: context on each side, as a fraction of the box's longer side.
        size: output side in pixels.

    The window's side is ``ceil((1 + 2 * margin) * max(w, h))`` pixels, centred on the box;
    its pixels outside the image are 0.
    """
    _, H, W = image.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(1, math.ceil((1.0 + 2.0 * margin) * max(x2 - x1, y2 - y1)))
    left = int(round((x1 + x2) / 2.0 - side / 2.0))
    top = int(round((y1 + y2) / 2.0 - side / 2.0))
    window = torch.zeros(3, side, side, dtype=image.dtype)
    # Part of the window inside the image, in image and in window coordinates.
    ix0, iy0, ix1, iy1 = max(left, 0), max(top, 0), min(left + side, W), min(top + side, H)
    if ix1 > ix0 and iy1 > iy0:
        window[:, iy0 - top : iy1 - top, ix0 - left : ix1 - left] = image[:, iy0:iy1, ix0:ix1]
    out = F.interpolate(window[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].clamp(0.0, 1.0)  # (1, 3, size, size) -> (3, size, size)


class ShapesObjects(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """One shapes-world object per item: ``(image float32[3, size, size] in [0, 1], target)``.

    ``target = {"labels": int64 scalar in 0..5, "image_id": int64 scalar (the item index),
    "scene_id": int64 scalar (the scene it was cut from)}``; ``classes[label]`` names the class.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (the shapes world's disjoint streams).
        num_images: number of objects; None gives train 2000, val 500, test 1000.
        size: side of a crop in pixels, >= 8.
        margin: context around the box on each side, fraction of its longer side, in [0, 2].
        min_box: keep objects whose box's longer side is at least this many pixels (>= 1).
        scene_size: side of the scenes the objects are cut from, >= 16.
        seed: the shapes world's seed (non-negative).
        transforms: optional ``(image, target) -> (image, target)``.

    The crops are rendered once, at construction (about 4 objects per 128 px scene, ~1 ms per
    object).
    """

    classes = tuple(CLASS_NAMES)
    num_classes = len(CLASS_NAMES)

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        size: int = 32,
        margin: float = 0.25,
        min_box: int = 8,
        scene_size: int = 128,
        seed: int = 0,
        transforms: Transform | None = None,
    ) -> None:
        self.split = check_split(split, SPLITS)
        if num_images is None:
            num_images = DEFAULT_NUM_IMAGES[split]
        if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1:
            raise ValueError(f"ShapesObjects: num_images must be an int >= 1, got {num_images!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 8:
            raise ValueError(f"ShapesObjects: size must be an int >= 8, got {size!r}")
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0.0 <= margin <= 2.0:
            raise ValueError(f"ShapesObjects: margin must be a number in [0, 2], got {margin!r}")
        if not isinstance(min_box, int) or isinstance(min_box, bool) or min_box < 1:
            raise ValueError(f"ShapesObjects: min_box must be an int >= 1, got {min_box!r}")
        if not isinstance(scene_size, int) or isinstance(scene_size, bool) or scene_size < 16:
            raise ValueError(f"ShapesObjects: scene_size must be an int >= 16, got {scene_size!r}")
        if min_box > scene_size:
            raise ValueError(f"ShapesObjects: min_box={min_box} is larger than the scenes ({scene_size} px)")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"ShapesObjects: seed must be a non-negative int, got {seed!r}")
        self.num_images, self.size, self.margin, self.min_box = num_images, size, float(margin), min_box
        self.scene_size, self.seed, self.transforms = scene_size, seed, transforms
        self.images, self.labels, self.scene_ids = self._cut()

    def _cut(self) -> tuple[Tensor, Tensor, Tensor]:
        """Crops ``[N, 3, size, size]``, labels ``int64[N]`` (0-based), scene ids ``int64[N]``."""
        # Scene count is open-ended: the world is indexed far past what we read (never wraps).
        world = ShapesWorld(self.split, size=self.scene_size, num_images=2**31 - 1, seed=self.seed)
        crops: list[Tensor] = []
        labels: list[int] = []
        scenes: list[int] = []
        scene, empty = 0, 0
        while len(crops) < self.num_images:
            image, target = world[scene]
            boxes = target["boxes"]  # (n, 4)
            longer = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])  # (n,)
            kept = torch.nonzero(longer >= self.min_box).flatten().tolist()
            empty = 0 if kept else empty + 1
            if empty >= _MAX_EMPTY_SCENES:
                raise ValueError(
                    f"ShapesObjects: {empty} scenes in a row have no object of min_box={self.min_box} px; "
                    f"lower min_box or raise scene_size ({self.scene_size})"
                )
            for k in kept[: self.num_images - len(crops)]:
                crops.append(crop_square(image, boxes[k], self.margin, self.size))
                labels.append(int(target["labels"][k]) - 1)  # shapes labels 1..6 -> classes 0..5
                scenes.append(scene)
            scene += 1
        return (
            torch.stack(crops),  # (N, 3, size, size)
            torch.tensor(labels, dtype=torch.int64),
            torch.tensor(scenes, dtype=torch.int64),
        )

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if isinstance(index, bool):
            raise TypeError(f"ShapesObjects: index must be an int, got {index!r}")
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"ShapesObjects: index must be an int, got {type(index).__name__}") from None
        if not -len(self) <= index < len(self):
            raise IndexError(f"ShapesObjects: index {index} out of range for {len(self)} objects")
        index %= len(self)
        image = self.images[index].clone()
        target = {
            "labels": self.labels[index].clone(),
            "image_id": torch.tensor(index, dtype=torch.int64),
            "scene_id": self.scene_ids[index].clone(),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
