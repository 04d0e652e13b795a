"""The in-memory form every annotation reader produces and every writer consumes.

A dataset on disk (COCO json, VOC xml, YOLO txt...) becomes a list of :class:`ImageRecord`
plus a :class:`Categories` table. Records hold annotations only; images are read lazily by
:class:`structpred.data.datasets.DetectionFiles`.

Convention: boxes are xyxy in absolute pixels of the image (DESIGN.md §3); labels are
contiguous ``1..K`` (0 is background); ``Categories`` maps them to names and to the file
format's own ids (COCO category ids need not be contiguous).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# One object's segmentation as COCO stores it: polygons [[x0, y0, x1, y1, ...], ...] or an
# RLE dict {"size": [h, w], "counts": str | list[int]}.
Segmentation = list[list[float]] | dict[str, Any]


@dataclass
class Categories:
    """Names of labels ``1..K`` and the file format's id for each."""

    names: list[str]  # names[k - 1] is label k
    ids: list[int] = field(default_factory=list)  # format ids (COCO category_id); default 1..K

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = list(range(1, len(self.names) + 1))
        if len(self.ids) != len(self.names):
            raise ValueError(f"{len(self.names)} category names but {len(self.ids)} ids")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"category ids must be unique, got {self.ids}")

    def __len__(self) -> int:
        return len(self.names)

    def label_of_id(self, category_id: int) -> int:
        """Contiguous label (1..K) of a format category id; ``ValueError`` if unknown."""
        try:
            return self.ids.index(category_id) + 1
        except ValueError:
            raise ValueError(f"unknown category id {category_id}; known ids: {self.ids}") from None

    def label_of_name(self, name: str) -> int:
        """Contiguous label (1..K) of a category name; ``ValueError`` if unknown."""
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise ValueError(f"unknown category {name!r}; known: {self.names}") from None


@dataclass
class ImageRecord:
    """Annotations of one image.

    Attributes:
        file_name: image path, relative to the dataset's image root (or absolute).
        height, width: image size in pixels.
        boxes (Tensor[N, 4]): float32 xyxy, absolute pixels, inside the image.
        labels (int64[N]): contiguous labels ``1..K``.
        image_id: the format's image id (COCO), else the record's index.
        iscrowd (uint8[N] | None): COCO crowd flags.
        segmentations: per object, polygons or RLE (COCO form), or None.
        difficult (uint8[N] | None): VOC "difficult" flags.
        areas (float32[N] | None): COCO's ``area`` of each object (what COCOeval sorts into
            small / medium / large), when the file gives one for every object.
    """

    file_name: str
    height: int
    width: int
    boxes: Tensor
    labels: Tensor
    image_id: int = 0
    iscrowd: Tensor | None = None
    segmentations: list[Segmentation] | None = None
    difficult: Tensor | None = None
    areas: Tensor | None = None

    def __post_init__(self) -> None:
        if self.boxes.dim() != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"{self.file_name}: boxes must be [N, 4], got {tuple(self.boxes.shape)}")
        n = self.boxes.shape[0]
        if self.labels.shape != (n,):
            raise ValueError(f"{self.file_name}: {n} boxes but labels of shape {tuple(self.labels.shape)}")
        for name in ("iscrowd", "difficult", "areas"):
            flags = getattr(self, name)
            if flags is not None and flags.shape != (n,):
                raise ValueError(f"{self.file_name}: {n} boxes but {name} of shape {tuple(flags.shape)}")
        if self.segmentations is not None and len(self.segmentations) != n:
            raise ValueError(f"{self.file_name}: {n} boxes but {len(self.segmentations)} segmentations")

    @staticmethod
    def empty(file_name: str, height: int, width: int, image_id: int = 0) -> ImageRecord:
        """A record with no objects."""
        return ImageRecord(
            file_name, height, width, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), image_id
        )
