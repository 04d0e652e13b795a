"""Detection datasets backed by image files plus annotation records (COCO, VOC, YOLO).

An item is ``(image, target)`` per DESIGN.md §3: ``image`` float32 ``[3, H, W]`` in ``[0, 1]``;
``target`` has ``boxes`` float32 ``[N, 4]`` xyxy pixels, ``labels`` int64 ``[N]`` in ``1..K``,
``image_id`` int64 scalar, ``iscrowd`` uint8 ``[N]`` (zeros when the format has no crowds),
``area`` float32 ``[N]`` when the file gives every object's (COCO) and,
with ``with_masks=True``, ``masks`` uint8 ``[N, H, W]`` decoded from the COCO segmentations.
Images are read lazily; each one's size is checked against its record. With masks, an item's
``N x H x W`` mask bytes are bounded by :data:`MAX_MASK_BYTES`, checked when the dataset is built
(a json with 10,000 objects on a 4000 x 4000 image would ask for 160 GB mid-epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .formats.coco import read_coco, segmentation_to_mask
from .formats.voc import read_voc_dir
from .formats.yolo import read_yolo
from .images import check_file, read_image, shown_path
from .records import Categories, ImageRecord

# uint8 mask bytes of one item (objects x H x W): 1 GB, 50 x COCO's worst (93 objects at 640 x 480)
MAX_MASK_BYTES = 1_000_000_000
Target = dict[str, Tensor]
Transform = Callable[[Tensor, Target], tuple[Tensor, Target]]


class DetectionFiles(Dataset[tuple[Tensor, Target]]):
    """Images on disk + their :class:`ImageRecord` annotations.

    Args:
        records: one record per image; ``file_name`` is relative to ``image_root`` (or absolute).
        categories: names of labels ``1..K`` (exposed as ``self.categories``).
        image_root: directory the file names are relative to.
        with_masks: add ``masks`` decoded from ``record.segmentations`` (COCO); a record without
            segmentations, or an object with an empty one, raises ``ValueError``.
        transforms: ``(image, target) -> (image, target)``, applied last.

    Every image file must exist when the dataset is built (a ``ValueError`` names the first
    missing one), so a missing image never stops training mid-epoch.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        categories: Categories,
        image_root: str | Path,
        with_masks: bool = False,
        transforms: Transform | None = None,
    ) -> None:
        if not isinstance(categories, Categories):
            raise ValueError(f"categories must be a Categories, got {type(categories).__name__}")
        for i, record in enumerate(records):
            if not isinstance(record, ImageRecord):
                raise ValueError(f"records[{i}] must be an ImageRecord, got {type(record).__name__}")
            labels = record.labels
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > len(categories)):
                raise ValueError(
                    f"records[{i}] ({record.file_name}): labels must be in 1..{len(categories)}, "
                    f"got {sorted(set(labels.tolist()))}"
                )
            if with_masks and record.segmentations is None:
                raise ValueError(
                    f"records[{i}] ({record.file_name}) has no segmentations; with_masks=True needs "
                    "COCO segmentations"
                )
            if with_masks and len(labels) * record.height * record.width > MAX_MASK_BYTES:
                raise ValueError(
                    f"records[{i}] ({record.file_name}): {len(labels)} masks of {record.height} x "
                    f"{record.width} need {len(labels) * record.height * record.width:,} bytes, over "
                    f"structpred.data.datasets.MAX_MASK_BYTES = {MAX_MASK_BYTES:,}"
                )
        self.records = list(records)
        self.categories = categories
        self.image_root = Path(image_root)
        for i, record in enumerate(self.records):  # found now, not in the middle of an epoch
            try:
                check_file(self.image_root / record.file_name)
            except ValueError as err:
                raise ValueError(f"{err} (records[{i}] of {len(self.records)})") from None
        self.with_masks = with_masks
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, index: int) -> Path:
        """Path of image ``index`` (``image_root / file_name``)."""
        return self.image_root / self.records[index].file_name

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        record = self.records[index]
        path = self.image_path(index)
        image = read_image(path)  # (3, H, W)
        _, height, width = image.shape
        if (height, width) != (record.height, record.width):
            raise ValueError(
                f"{path}: image is {height} x {width} (H x W) but its annotation says "
                f"{record.height} x {record.width}"
            )
        n = record.labels.shape[0]
        target: Target = {
            "boxes": record.boxes.to(torch.float32).clone(),
            "labels": record.labels.to(torch.int64).clone(),
            "image_id": torch.tensor(record.image_id, dtype=torch.int64),
            "iscrowd": (
                record.iscrowd.to(torch.uint8).clone()
                if record.iscrowd is not None
                else torch.zeros(n, dtype=torch.uint8)
            ),
        }
        if record.areas is not None:  # COCO's own areas: the metric's area ranges then match COCOeval's
            target["area"] = record.areas.to(torch.float32).clone()
        if self.with_masks:
            target["masks"] = self._masks(record, path)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _masks(self, record: ImageRecord, path: Path) -> Tensor:
        assert record.segmentations is not None  # checked in __init__
        masks = []
        for k, seg in enumerate(record.segmentations):
            if isinstance(seg, list) and not seg:
                raise ValueError(f"{path}: object {k} has an empty segmentation; cannot build its mask")
            try:
                masks.append(segmentation_to_mask(seg, record.height, record.width))
            except ValueError as err:
                raise ValueError(f"{path}: object {k}: {err}") from err
        if not masks:
            return torch.zeros(0, record.height, record.width, dtype=torch.uint8)
        return torch.stack(masks)  # N x (H, W) -> (N, H, W)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images, {len(self.categories)} categories, "
            f"root={str(self.image_root)!r}, with_masks={self.with_masks})"
        )


def from_coco(
    json_path: str | Path,
    image_root: str | Path,
    with_masks: bool = False,
    transforms: Transform | None = None,
    on_error: str = "raise",
) -> DetectionFiles:
    """A :class:`DetectionFiles` over a COCO json; file names relative to ``image_root``."""
    records, categories = read_coco(json_path, on_error=on_error)
    try:
        return DetectionFiles(records, categories, image_root, with_masks=with_masks, transforms=transforms)
    except ValueError as err:  # name the json the records came from
        raise type(err)(f"{shown_path(json_path)}: {err}") from None


def from_voc(
    annotation_dir: str | Path,
    image_dir: str | Path,
    class_names: list[str] | None = None,
    class_map: dict[str, str] | None = None,
    image_set: str | Path | None = None,
    transforms: Transform | None = None,
    on_error: str = "raise",
) -> DetectionFiles:
    """A :class:`DetectionFiles` over VOC xml files; ``<filename>`` relative to ``image_dir``.

    ``class_names``, ``class_map`` and ``image_set`` are those of
    :func:`~structpred.data.formats.voc.read_voc_dir`.
    """
    records, categories = read_voc_dir(
        annotation_dir, class_names, on_error=on_error, class_map=class_map, image_set=image_set
    )
    return DetectionFiles(records, categories, image_dir, transforms=transforms)


def from_yolo(
    root: str | Path, split: str = "train", transforms: Transform | None = None, on_error: str = "raise"
) -> DetectionFiles:
    """A :class:`DetectionFiles` over one split of a YOLO dataset (``root`` = its directory)."""
    root = Path(root)
    records, categories = read_yolo(root, split, on_error=on_error)
    image_root = root.parent if root.is_file() else root
    return DetectionFiles(records, categories, image_root, transforms=transforms)
