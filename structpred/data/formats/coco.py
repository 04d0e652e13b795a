"""COCO object detection / instance segmentation json.

Convention: COCO's ``bbox`` is ``[x, y, w, h]`` (left, top, width, height) in absolute pixels;
records hold xyxy. Boxes are checked as described in :mod:`structpred.data.formats._common`
(overshoot of at most 1 px clipped, more is an error). Categories are sorted by id and get the
contiguous labels ``1..K`` (``Categories.ids`` keeps the COCO ids, which may have gaps).
Segmentations stay in COCO form in ``ImageRecord.segmentations`` (polygons or RLE, validated on
reading) and are decoded to masks on demand by :func:`segmentation_to_mask`. If no annotation
of the file has a segmentation, every record's ``segmentations`` is ``None``; otherwise an
annotation without one gets ``[]`` (no polygon). pycocotools is needed only to decode/encode
masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import limits
from ..records import Categories, ImageRecord, Segmentation
from ._common import (
    check_categories,
    check_on_error,
    check_record_for_writing,
    checked_box,
    clipped_boxes,
    report,
)
from .coco_segmentation import (
    check_image_size,
    check_segmentation,
    integer,
    mask_to_rle,
    number,
    segmentation_area,
    segmentation_to_mask,
)

__all__ = [
    "check_segmentation", "mask_to_rle", "read_coco", "segmentation_area", "segmentation_to_mask",
    "write_coco",
]  # fmt: skip

_ID_RANGE = (-(2**63), 2**63 - 1)  # ids go into int64 tensors (image_id) and json


def _report(problem: str, on_error: str, err: ValueError) -> None:
    """``report``, but a limit is never skipped: it raises ``LimitError`` (raise the limit to read)."""
    if isinstance(err, limits.LimitError):
        raise limits.LimitError(problem) from err
    report(problem, on_error, err)


def _as_id(value: object, what: str) -> int:
    """An id as int, within int64 (a larger one cannot reach an ``image_id`` tensor)."""
    number = integer(value, what)
    if not _ID_RANGE[0] <= number <= _ID_RANGE[1]:
        raise ValueError(f"{what} {repr(value)[:40]} is outside the 64-bit integer range")
    return number


# ------------------------------------------------------------------------ reading


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"{path}: COCO json file not found")
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise ValueError(f"{path}: malformed json at {where}: {err.msg}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read json: {err}") from err
    except RecursionError:
        raise ValueError(f"{path}: json nested too deeply to read") from None
    except ValueError as err:  # an integer of more than 4,300 digits
        raise ValueError(f"{path}: unreadable json number: {str(err).splitlines()[0][:120]}") from None


def _read_categories(data: dict[str, Any], path: Path) -> Categories:
    entries = data.get("categories")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'categories' must be a non-empty list")
    pairs: list[tuple[int, str]] = []
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str):
            raise ValueError(f"{path}: categories[{i}] must be an object with a string 'name'")
        try:
            pairs.append((_as_id(cat.get("id"), "category id"), cat["name"]))
        except ValueError as err:
            raise ValueError(f"{path}: categories[{i}]: {err}") from err
    pairs.sort()
    try:
        return Categories([name for _, name in pairs], [cid for cid, _ in pairs])
    except ValueError as err:  # duplicate ids
        raise ValueError(f"{path}: {err}") from err


def _read_image_entry(img: object) -> tuple[int, str, int, int]:
    if not isinstance(img, dict):
        raise ValueError(f"must be an object, got {type(img).__name__}")
    file_name = img.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise ValueError("needs a non-empty string 'file_name'")
    height, width = integer(img.get("height"), "height"), integer(img.get("width"), "width")
    check_image_size(height, width, f"image {file_name[:200]!r}")
    return _as_id(img.get("id"), "image id"), file_name, height, width


class _Objects:
    """Annotations of one image collected while reading."""

    def __init__(self, file_name: str, height: int, width: int) -> None:
        self.file_name, self.height, self.width = file_name, height, width
        self.boxes: list[list[float]] = []
        self.labels: list[int] = []
        self.crowd: list[int] = []
        self.segs: list[Segmentation] = []
        self.areas: list[float | None] = []


def _read_annotation(ann: object, images: dict[int, _Objects], categories: Categories) -> None:
    """Parse one annotation and add it to its image's ``_Objects``; ``ValueError`` if bad."""
    if not isinstance(ann, dict):
        raise ValueError(f"must be an object, got {type(ann).__name__}")
    image_id = _as_id(ann.get("image_id"), "image_id")
    if image_id not in images:
        raise ValueError(f"refers to unknown image id {image_id}")
    objects = images[image_id]
    limits.check(
        "max_annotations_per_image", len(objects.labels) + 1, f"image id {image_id}", "number of annotations"
    )
    label = categories.label_of_id(_as_id(ann.get("category_id"), "category_id"))
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"bbox must be a list [x, y, w, h], got {repr(bbox)[:80]}")
    x, y, w, h = (number(v, "bbox value") for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox {bbox} has non-positive width or height")
    box = checked_box([x, y, x + w, y + h], objects.height, objects.width)
    crowd = integer(ann.get("iscrowd", 0), "iscrowd")
    if crowd not in (0, 1):
        raise ValueError(f"iscrowd must be 0 or 1, got {crowd}")
    raw_seg = ann.get("segmentation")
    seg = [] if raw_seg is None else check_segmentation(raw_seg, objects.height, objects.width)
    area = None if ann.get("area") is None else number(ann["area"], "area")
    # at most the image grown by a polygon's allowed overshoot (coco_segmentation): 3W x 3H
    if area is not None and not 0 <= area <= 9.0 * objects.height * objects.width:
        raise ValueError(f"area must be >= 0 and <= 9 * H * W (the polygon bounds), got {area:g}")
    objects.areas.append(area)
    objects.boxes.append(box)
    objects.labels.append(label)
    objects.crowd.append(crowd)
    objects.segs.append(seg)


def read_coco(path: str | Path, on_error: str = "raise") -> tuple[list[ImageRecord], Categories]:
    """Read a COCO instances json into one :class:`ImageRecord` per image (in file order).

    Image ids are kept (``ImageRecord.image_id``); image and annotation ids must be unique.
    Raises ``ValueError`` naming the file, the entry (``images[i]`` / annotation id) and the
    problem; with ``on_error="skip"`` a bad image entry (with its annotations; for a duplicate
    image id, every image of that id) or a bad annotation is logged and left out. A missing or
    malformed file, or bad categories, always raise.
    """
    check_on_error(on_error)
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a json object, got {type(data).__name__}")
    categories = _read_categories(data, path)
    image_entries = data.get("images")
    annotations = data.get("annotations", [])
    if not isinstance(image_entries, list) or not isinstance(annotations, list):
        raise ValueError(f"{path}: 'images' and 'annotations' must be lists")

    images: dict[int, _Objects] = {}
    skipped_images: set[int] = set()
    for i, img in enumerate(image_entries):
        try:
            image_id, file_name, height, width = _read_image_entry(img)
            if image_id in images or image_id in skipped_images:
                # its annotations cannot be told apart: the earlier image goes too (when skipping)
                images.pop(image_id, None)
                raise ValueError(f"duplicate image id {image_id} (both images left out when skipping)")
        except ValueError as err:
            if isinstance(img, dict) and isinstance(img.get("id"), int):
                skipped_images.add(img["id"])
            _report(f"{path}: images[{i}]: {err}", on_error, err)
            continue
        images[image_id] = _Objects(file_name, height, width)

    seen_ann_ids: set[int] = set()
    for j, ann in enumerate(annotations):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        ann_image = ann.get("image_id") if isinstance(ann, dict) else None
        if isinstance(ann_image, int) and ann_image in skipped_images:
            continue  # its image was already reported and skipped
        try:
            key = None if ann_id is None else _as_id(ann_id, "annotation id")
            if key is not None and key in seen_ann_ids:
                raise ValueError(f"duplicate annotation id {key}")
            _read_annotation(ann, images, categories)
        except ValueError as err:
            _report(f"{path}: annotation id {repr(ann_id)[:40]} (annotations[{j}]): {err}", on_error, err)
            continue
        if key is not None:
            seen_ann_ids.add(key)

    with_segs = any(seg for objects in images.values() for seg in objects.segs)
    with_areas = all(a is not None for objects in images.values() for a in objects.areas)
    records = []
    for image_id, obj in images.items():
        n = len(obj.labels)
        records.append(
            ImageRecord(
                obj.file_name,
                obj.height,
                obj.width,
                torch.tensor(obj.boxes, dtype=torch.float32).reshape(n, 4),
                torch.tensor(obj.labels, dtype=torch.int64).reshape(n),
                image_id=image_id,
                iscrowd=torch.tensor(obj.crowd, dtype=torch.uint8).reshape(n),
                segmentations=obj.segs if with_segs else None,
                areas=torch.tensor(obj.areas, dtype=torch.float32).reshape(n) if with_areas else None,
            )
        )
    return records, categories


# ------------------------------------------------------------------------ writing


def write_coco(records: list[ImageRecord], categories: Categories, path: str | Path) -> None:
    """Write records as a COCO instances json (boxes as ``[x, y, w, h]``).

    Annotation ids are ``1..`` in record order; ``area`` is the segmentation's pixel area when
    there is one, else the box area. Segmentations without one are omitted, so the file reads
    back with ``segmentations=None``. Raises ``ValueError`` on a record that cannot be written
    (label outside ``1..K``, box outside its image, duplicate image id, bad segmentation).
    """
    path = Path(path)
    check_categories(categories, str(path))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen: set[int] = set()
    for r, record in enumerate(records):
        where = f"{path}: record {r} ({getattr(record, 'file_name', '?')})"
        check_record_for_writing(record, categories, where)
        if record.image_id in seen:
            raise ValueError(f"{where}: duplicate image id {record.image_id}")
        seen.add(record.image_id)
        h, w = record.height, record.width
        images.append({"id": int(record.image_id), "file_name": record.file_name, "height": h, "width": w})
        crowd = record.iscrowd.tolist() if record.iscrowd is not None else [0] * len(record.labels)
        for k, (box, label) in enumerate(zip(clipped_boxes(record), record.labels.tolist(), strict=True)):
            x1, y1, x2, y2 = box
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": int(record.image_id),
                "category_id": int(categories.ids[label - 1]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(crowd[k]),
            }
            if record.segmentations is not None:
                try:
                    seg = check_segmentation(record.segmentations[k], h, w)
                except ValueError as err:
                    raise ValueError(f"{where}: object {k}: {err}") from err
                ann["segmentation"] = seg
                if seg:
                    ann["area"] = segmentation_area(seg, h, w)
            if record.areas is not None:  # the record's own (read from a COCO file): kept as it was
                ann["area"] = float(record.areas[k])
            annotations.append(ann)
    data = {
        "info": {"description": "written by structpred"},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": int(i), "name": n} for i, n in zip(categories.ids, categories.names, strict=True)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, allow_nan=False)
