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

import numpy as np
import torch
from torch import Tensor

from ..records import Categories, ImageRecord, Segmentation
from ._common import (
    as_int,
    as_number,
    check_categories,
    check_on_error,
    check_record_for_writing,
    checked_box,
    clipped_boxes,
    report,
)


def _mask_utils() -> Any:
    try:
        from pycocotools import mask as mask_utils
    except ImportError as err:  # pragma: no cover - pycocotools is a declared dependency
        raise ImportError("COCO masks need pycocotools: pip install pycocotools") from err
    return mask_utils


# ------------------------------------------------------------------------ segmentations


def _counts_from_string(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools' ``rleFrString``) into run lengths.

    Each count is a little-endian run of 5-bit groups stored as ``chr(48 + group)``, bit 0x20
    meaning "more groups follow", bit 0x10 of the last group the sign; counts after the third are
    stored as differences to the count two places before.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("compressed RLE counts end inside a number")
            group = ord(text[pos]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"invalid character {text[pos]!r} in compressed RLE counts")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def check_segmentation(seg: object, height: int, width: int) -> Segmentation:
    """Validate one COCO segmentation for an image of ``height x width``; return it normalised.

    Polygons: a list of ``[x0, y0, x1, y1, ...]`` with an even number (at least 6) of finite
    coordinates each. RLE: ``{"size": [H, W], "counts": str | list[int]}`` whose size is the
    image's and whose run lengths are non-negative and add up to ``H * W`` (checked before
    pycocotools ever sees them: it does not bound-check). Compressed counts come back as ``str``.
    """
    if isinstance(seg, list):
        polygons: list[list[float]] = []
        for i, poly in enumerate(seg):
            if not isinstance(poly, list):
                raise ValueError(f"polygon {i} must be a list of coordinates, got {type(poly).__name__}")
            if len(poly) < 6 or len(poly) % 2:
                raise ValueError(
                    f"polygon {i} must have an even number (>= 6) of coordinates, got {len(poly)}"
                )
            polygons.append([as_number(v, f"polygon {i} coordinate") for v in poly])
        return polygons
    if isinstance(seg, dict):
        size = seg.get("size")
        if not isinstance(size, list) or [as_int(v, "RLE size") for v in size] != [height, width]:
            raise ValueError(f"RLE size {size!r} does not match the image size [{height}, {width}]")
        counts = seg.get("counts")
        if isinstance(counts, bytes):
            counts = counts.decode("ascii", errors="replace")
        if isinstance(counts, str):
            runs = _counts_from_string(counts)
        elif isinstance(counts, list):
            runs = counts = [as_int(v, "RLE count") for v in counts]
        else:
            raise ValueError(f"RLE counts must be a string or a list of ints, got {type(counts).__name__}")
        if any(r < 0 for r in runs) or sum(runs) != height * width:
            raise ValueError(
                f"RLE counts must be non-negative and sum to H * W = {height * width}, "
                f"got sum {sum(runs)}"
            )
        return {"size": [height, width], "counts": counts}
    raise ValueError(f"segmentation must be polygons (list) or RLE (dict), got {type(seg).__name__}")


def _to_rle(seg: Segmentation, height: int, width: int) -> dict[str, Any] | None:
    """pycocotools RLE of a validated segmentation (``None`` for no polygon)."""
    mask_utils = _mask_utils()
    if isinstance(seg, list):
        if not seg:
            return None
        return dict(mask_utils.merge(mask_utils.frPyObjects(seg, height, width)))
    if isinstance(seg["counts"], list):
        return dict(mask_utils.frPyObjects(seg, height, width))
    return {"size": [height, width], "counts": seg["counts"].encode("ascii")}


def segmentation_to_mask(seg: Segmentation, height: int, width: int) -> Tensor:
    """Rasterise one COCO segmentation to ``uint8 Tensor[H, W]`` (1 inside, 0 outside).

    ``[]`` (no polygon) gives an all-zero mask. Raises ``ValueError`` on a malformed segmentation.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    rle = _to_rle(check_segmentation(seg, height, width), height, width)
    if rle is None:
        return torch.zeros(height, width, dtype=torch.uint8)
    mask = _mask_utils().decode(rle)  # (H, W) uint8, Fortran order
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))


def mask_to_rle(mask: Tensor) -> dict[str, Any]:
    """Encode a binary mask ``Tensor[H, W]`` (nonzero = inside) as compressed COCO RLE:
    ``{"size": [H, W], "counts": str}`` (json-ready)."""
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a Tensor[H, W], got {shape}")
    binary = np.asfortranarray(mask.detach().cpu().numpy() != 0, dtype=np.uint8)
    rle = _mask_utils().encode(binary)
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def segmentation_area(seg: Segmentation, height: int, width: int) -> float:
    """Pixel area of a segmentation (what COCO stores as ``area``); 0 for no polygon."""
    rle = _to_rle(check_segmentation(seg, height, width), height, width)
    return 0.0 if rle is None else float(_mask_utils().area(rle))


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


def _read_categories(data: dict[str, Any], path: Path) -> Categories:
    entries = data.get("categories")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'categories' must be a non-empty list")
    pairs: list[tuple[int, str]] = []
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str):
            raise ValueError(f"{path}: categories[{i}] must be an object with a string 'name'")
        try:
            pairs.append((as_int(cat.get("id"), "category id"), cat["name"]))
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
    height, width = as_int(img.get("height"), "height"), as_int(img.get("width"), "width")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height {height}, width {width}")
    return as_int(img.get("id"), "image id"), file_name, height, width


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
    image_id = as_int(ann.get("image_id"), "image_id")
    if image_id not in images:
        raise ValueError(f"refers to unknown image id {image_id}")
    objects = images[image_id]
    label = categories.label_of_id(as_int(ann.get("category_id"), "category_id"))
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"bbox must be a list [x, y, w, h], got {bbox!r}")
    x, y, w, h = (as_number(v, "bbox value") for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox {bbox} has non-positive width or height")
    box = checked_box([x, y, x + w, y + h], objects.height, objects.width)
    crowd = as_int(ann.get("iscrowd", 0), "iscrowd")
    if crowd not in (0, 1):
        raise ValueError(f"iscrowd must be 0 or 1, got {crowd}")
    raw_seg = ann.get("segmentation")
    seg = [] if raw_seg is None else check_segmentation(raw_seg, objects.height, objects.width)
    area = None if ann.get("area") is None else as_number(ann["area"], "area")
    if area is not None and area < 0:
        raise ValueError(f"area must be >= 0, got {area}")
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
            report(f"{path}: images[{i}]: {err}", on_error, err)
            continue
        images[image_id] = _Objects(file_name, height, width)

    seen_ann_ids: set[int] = set()
    for j, ann in enumerate(annotations):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        ann_image = ann.get("image_id") if isinstance(ann, dict) else None
        if isinstance(ann_image, int) and ann_image in skipped_images:
            continue  # its image was already reported and skipped
        try:
            key = None if ann_id is None else as_int(ann_id, "annotation id")
            if key is not None and key in seen_ann_ids:
                raise ValueError(f"duplicate annotation id {key}")
            _read_annotation(ann, images, categories)
        except ValueError as err:
            report(f"{path}: annotation id {ann_id} (annotations[{j}]): {err}", on_error, err)
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
