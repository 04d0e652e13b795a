"""Export any detection dataset (DESIGN.md §3 items, ``dataset.categories``) to files.

Layouts under ``out_dir`` (item ``i`` of split ``s``; images are PNG, so pixels come back exactly
as ``round(255 * x) / 255``):

- ``"coco"``: ``images/<s>/<i:06d>.png`` and ``annotations/<s>.json`` (file names relative to
  ``out_dir``; masks as compressed RLE). Returns the json; read back with
  ``from_coco(json, out_dir, with_masks=...)``.
- ``"voc"``: ``JPEGImages/<s>_<i:06d>.png``, ``Annotations/<s>_<i:06d>.xml``,
  ``ImageSets/Main/<s>.txt`` and ``classes.txt`` (label k's name on line k, so labels read back
  unchanged even for a class no image shows). Returns the Annotations directory; read back with
  ``from_voc(ann_dir, out_dir / "JPEGImages", class_names=<classes.txt lines>,
  image_set=out_dir / "ImageSets/Main/<s>.txt")``. Crowd objects become ``difficult``.
- ``"yolo"``: ``images/<s>/<i:06d>.png``, ``labels/<s>/<i:06d>.txt``, ``data.yaml``. Returns the
  yaml; read back with ``from_yolo(out_dir, s)``. Boxes come back within float32 rounding (less
  than 1e-3 px); crowd objects are left out (YOLO has no crowd flag).

VOC and YOLO have no masks: ``masks`` are dropped there (logged). Boxes must lie inside their
image (writers refuse others rather than writing a box that reads back different).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .datasets import DetectionFiles, from_coco, from_voc, from_yolo
from .formats._common import read_text_bounded
from .formats.coco import mask_to_rle, write_coco
from .formats.voc import write_voc
from .formats.yolo import write_yolo
from .images import write_image
from .records import Categories, ImageRecord, Segmentation

logger = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "yolo")
VOC_CLASSES_FILE = "classes.txt"


def _field(target: dict[str, Any], key: str, where: str, dtype: torch.dtype | None) -> Tensor:
    """``target[key]`` as a CPU tensor of ``dtype``; ``ValueError`` naming the item and key."""
    try:
        value = torch.as_tensor(target[key]).detach().cpu()
        return value if dtype is None else value.to(dtype)
    except (TypeError, ValueError, RuntimeError) as err:  # a str, a ragged list, an object
        problem = " ".join(str(err).split())
        raise ValueError(f"{where}: target[{key!r}] is not a tensor of numbers ({problem})") from None


def _item_record(item: Any, index: int, file_name: str, fmt: str) -> tuple[Tensor, ImageRecord]:
    """Validate one ``(image, target)`` item and turn it into ``(image, record)``."""
    where = f"dataset item {index}"
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise ValueError(f"{where}: expected an (image, target) pair, got {type(item).__name__}")
    image, target = item
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{where}: image must be a Tensor[3, H, W], got {shape}")
    if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
        raise ValueError(f"{where}: target must be a dict with 'boxes' and 'labels'")
    _, height, width = image.shape
    boxes = _field(target, "boxes", where, torch.float32)
    labels = _field(target, "labels", where, torch.int64)
    if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != (boxes.shape[0],):
        raise ValueError(
            f"{where}: boxes must be [N, 4] and labels [N], "
            f"got {tuple(boxes.shape)} and {tuple(labels.shape)}"
        )
    n = boxes.shape[0]
    image_id = index
    if "image_id" in target:
        ids = _field(target, "image_id", where, torch.int64)
        if ids.numel() != 1:
            raise ValueError(f"{where}: target['image_id'] must be one integer, got shape {tuple(ids.shape)}")
        image_id = int(ids.reshape(()))
    iscrowd = None
    if target.get("iscrowd") is not None:
        iscrowd = _field(target, "iscrowd", where, torch.uint8)
        if iscrowd.shape != (n,):
            raise ValueError(f"{where}: target['iscrowd'] must be [N] = [{n}], got {tuple(iscrowd.shape)}")
    segmentations: list[Segmentation] | None = None
    if fmt == "coco" and "masks" in target:
        masks = _field(target, "masks", where, None)
        if masks.shape != (n, height, width):
            raise ValueError(
                f"{where}: masks must be [N, H, W] = {(n, height, width)}, got {tuple(masks.shape)}"
            )
        segmentations = [mask_to_rle(m) for m in masks]
    try:
        record = ImageRecord(
            file_name, int(height), int(width), boxes, labels, image_id, iscrowd, segmentations
        )
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    return image, record


def export_dataset(
    dataset: Any, out_dir: str | Path, fmt: str, split: str = "train", limit: int | None = None
) -> Path:
    """Write the first ``limit`` items (all with ``None``) of ``dataset`` as ``fmt`` files.

    Args:
        dataset: a map-style dataset following DESIGN.md §3, with ``categories``.
        out_dir: output directory (created); see the module docstring for the layout.
        fmt: ``"coco"``, ``"voc"`` or ``"yolo"``.
        split: split name used in file and directory names.
        limit: maximum number of items.

    Returns the path to read back from (COCO json, VOC Annotations dir, YOLO data.yaml).
    Raises ``ValueError`` on an unknown format, a dataset without ``categories``, or an item
    that breaks the contract (naming its index).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    categories = getattr(dataset, "categories", None)
    if not isinstance(categories, Categories):
        raise ValueError(f"dataset must have a `categories: Categories` attribute, got {categories!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if not split or "/" in split or "\\" in split:
        raise ValueError(f"split must be a plain name, got {split!r}")
    out_dir = Path(out_dir)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    dropped_masks = 0
    records: list[ImageRecord] = []
    for i in range(count):
        item = dataset[i]
        if fmt == "coco":
            file_name = f"images/{split}/{i:06d}.png"
            image_path = out_dir / file_name
        elif fmt == "voc":
            file_name = f"{split}_{i:06d}.png"
            image_path = out_dir / "JPEGImages" / file_name
        else:
            file_name = f"{i:06d}.png"
            image_path = out_dir / "images" / split / file_name
        image, record = _item_record(item, i, file_name, fmt)
        if fmt != "coco" and isinstance(item[1], dict) and "masks" in item[1]:
            dropped_masks += 1
        write_image(image_path, image)
        if fmt == "voc":
            write_voc(record, categories, out_dir / "Annotations" / f"{split}_{i:06d}.xml")
        records.append(record)
    if dropped_masks:
        logger.info("%s has no masks: dropped the masks of %d item(s)", fmt, dropped_masks)
    if fmt == "coco":
        result = out_dir / "annotations" / f"{split}.json"
        write_coco(records, categories, result)
    elif fmt == "voc":
        image_set = out_dir / "ImageSets" / "Main" / f"{split}.txt"
        image_set.parent.mkdir(parents=True, exist_ok=True)
        image_set.write_text("".join(f"{split}_{i:06d}\n" for i in range(count)), encoding="utf-8")
        result = out_dir / "Annotations"
        result.mkdir(parents=True, exist_ok=True)
        (out_dir / VOC_CLASSES_FILE).write_text("".join(f"{n}\n" for n in categories.names), encoding="utf-8")
    else:
        result = write_yolo(records, categories, out_dir, split, image_source=None)
    logger.info("exported %d items of %s to %s (%s)", count, type(dataset).__name__, out_dir, fmt)
    return result


def open_export(root: str | Path, fmt: str, split: str = "train", **kwargs: Any) -> DetectionFiles:
    """Read one split of a directory laid out as :func:`export_dataset` writes it.

    ``kwargs`` go to :func:`~structpred.data.datasets.from_coco` (e.g. ``with_masks=True``),
    ``from_voc`` or ``from_yolo`` (e.g. ``on_error="skip"``). Raises ``ValueError`` naming what is
    missing when ``root`` does not hold that split in that format.
    """
    root = Path(root)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not root.is_dir():
        raise ValueError(
            f"{root}: not a directory (expected a `structpred data export --format {fmt}` output)"
        )
    if fmt == "coco":
        json_path = root / "annotations" / f"{split}.json"
        if not json_path.is_file():
            raise ValueError(f"{root}: no COCO annotations for split {split!r} ({json_path} is missing)")
        return from_coco(json_path, root, **kwargs)
    if fmt == "voc":
        image_set = root / "ImageSets" / "Main" / f"{split}.txt"
        if not image_set.is_file():
            raise ValueError(f"{root}: no VOC image set for split {split!r} ({image_set} is missing)")
        classes = root / VOC_CLASSES_FILE
        names = None
        if classes.is_file():
            text = read_text_bounded(classes, "class list")
            names = [line.strip() for line in text.splitlines() if line.strip()]
        return from_voc(
            root / "Annotations", root / "JPEGImages", class_names=names, image_set=image_set, **kwargs
        )
    yaml_path = root / "data.yaml"
    if not yaml_path.is_file():
        raise ValueError(f"{root}: no YOLO data.yaml ({yaml_path} is missing)")
    return from_yolo(yaml_path, split, **kwargs)
