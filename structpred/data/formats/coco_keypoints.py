"""COCO keypoint json (``person_keypoints_*.json`` layout) read into the keypoint task's targets.

The file is a COCO instances json (read by :func:`~structpred.data.formats.coco.read_coco`:
images, boxes, labels, crowd flags, areas) whose categories also name their ``keypoints``
(K names) and ``skeleton`` (1-based pairs), and whose annotations carry ``keypoints`` (flat
``[x1, y1, v1, ..., xK, yK, vK]``) and ``num_keypoints`` (the count of ``v > 0``).

Shape shorthand: N annotations of an image, K keypoints per object.

Convention: keypoints are float32 ``[N, K, 3]`` (x, y, visibility) in COCO's pixel coordinates
(kept as written); visibility 0 = not labelled, 1 = labelled but not visible, 2 = visible. Every
category with keypoints must have the same K (one K for the dataset); an annotation of a
category without keypoints gets K unlabelled points. Checked per annotation: ``keypoints`` is
a list of 3K finite numbers, each visibility is 0, 1 or 2, a labelled point lies within the
image grown by its size on every side (``[-W, 2W] x [-H, 2H]``), ``num_keypoints`` (when
given) equals the labelled count (pycocotools ignores a gt by it); unlabelled points are read
as (0, 0, 0). Errors are one-line ``ValueError`` naming the file, the annotation id and the field; K over
``limits.max_keypoints_per_object`` is a :class:`~structpred.data.limits.LimitError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import limits
from ..records import Categories, ImageRecord
from ._common import check_on_error
from .coco import _load_json, _Objects, _read_annotation, _report, read_coco
from .coco_segmentation import integer, number

__all__ = ["KeypointInfo", "keypoints_for", "read_coco_keypoints"]


@dataclass
class KeypointInfo:
    """What a COCO keypoint file says about its points (the dataset's ``keypoint_*`` attributes)."""

    names: list[str]  # K keypoint names (the first keypoint category's)
    skeleton: list[tuple[int, int]]  # 0-based pairs (COCO writes them 1-based)
    flip: list[int]  # K: the point each becomes under a horizontal flip (left_* <-> right_*)


def _flip_of(names: list[str]) -> list[int]:
    """COCO's flip_pairs as a permutation: ``left_x`` <-> ``right_x`` by name; others stay."""
    index = {n: i for i, n in enumerate(names)}
    perm = list(range(len(names)))
    for i, n in enumerate(names):
        for a, b in (("left", "right"), ("right", "left")):
            if a in n and n.replace(a, b) in index:
                perm[i] = index[n.replace(a, b)]
    return perm


def _keypoint_categories(data: dict[str, Any], path: Path) -> tuple[dict[int, int], KeypointInfo]:
    """Category id -> K (0 without keypoints), and the dataset's names and skeleton."""
    ks: dict[int, int] = {}
    info: KeypointInfo | None = None
    for i, cat in enumerate(data["categories"]):
        names = cat.get("keypoints")
        if names is None:
            ks[cat["id"]] = 0
            continue
        where = f"{path}: categories[{i}] (id {cat['id']})"
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: 'keypoints' must be a non-empty list of names")
        limits.check("max_keypoints_per_object", len(names), where, "number of keypoints")
        K = len(names)
        skeleton = cat.get("skeleton", [])
        if not isinstance(skeleton, list):
            raise ValueError(f"{where}: 'skeleton' must be a list of [a, b] pairs")
        pairs = []
        for j, pair in enumerate(skeleton):
            ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, int) for p in pair)
            if not ok or not all(1 <= p <= K for p in pair):
                raise ValueError(
                    f"{where}: skeleton[{j}] must be [a, b] with 1 <= a, b <= {K}, got {repr(pair)[:40]}"
                )
            pairs.append((pair[0] - 1, pair[1] - 1))
        if info is None:
            info = KeypointInfo(list(names), pairs, _flip_of(list(names)))
        elif K != len(info.names):
            raise ValueError(
                f"{where}: {K} keypoints, but another category has {len(info.names)} (one K per dataset)"
            )
        ks[cat["id"]] = K
    if info is None:
        raise ValueError(
            f"{path}: no category has 'keypoints' (names of the points): not a COCO keypoint file"
        )
    return ks, info


def _annotation_keypoints(ann: dict[str, Any], K: int, height: int, width: int) -> Tensor:
    """``[K, 3]`` keypoints of one annotation (validated; ``ValueError`` naming the field)."""
    flat = ann.get("keypoints")
    if not isinstance(flat, list) or len(flat) != 3 * K:
        got = f"{len(flat)} values" if isinstance(flat, list) else repr(flat)[:40]
        raise ValueError(f"field 'keypoints' must be a list of 3 * K = {3 * K} numbers, got {got}")
    values = [number(v, "field 'keypoints' value") for v in flat]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("field 'keypoints' must hold finite numbers")
    kp = torch.tensor(values, dtype=torch.float64).reshape(K, 3)  # (3K,) -> (K, 3); float32 at the end
    vis = kp[:, 2]
    if not bool(((vis == 0) | (vis == 1) | (vis == 2)).all()):
        bad = [v for v in vis.tolist() if v not in (0, 1, 2)][0]
        raise ValueError(f"field 'keypoints': visibility must be 0, 1 or 2, got {bad:g}")
    labelled = vis > 0
    x, y = kp[:, 0], kp[:, 1]
    far = labelled & ((x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height))
    if bool(far.any()):
        k = int(far.nonzero()[0])
        raise ValueError(
            f"field 'keypoints': point {k} ({x[k]:g}, {y[k]:g}) is far outside the {width} x {height} image"
        )
    if "num_keypoints" in ann:
        count = integer(ann["num_keypoints"], "field 'num_keypoints'")
        if count != int(labelled.sum()):
            raise ValueError(
                f"field 'num_keypoints' is {count} but {int(labelled.sum())} points are labelled (v > 0)"
            )
    # Unlabelled points -> (0, 0, 0) whatever was written (1e308 would be inf in float32).
    return (kp * labelled[:, None]).to(torch.float32)


def keypoints_for(
    path: Path, records: list[ImageRecord], categories: Categories, on_error: str = "raise"
) -> tuple[list[Tensor], KeypointInfo]:
    """Keypoints ``[N, K, 3]`` per record of ``path`` (records as :func:`read_coco` read them, in
    file order), and the file's :class:`KeypointInfo`. With ``on_error="skip"`` an annotation
    with bad keypoints is logged and its object dropped from its record (in place)."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise ValueError(f"{path}: not a COCO json (no 'categories' list)")
    ks, info = _keypoint_categories(data, path)
    K = len(info.names)
    # Replay read_coco's choice of annotations (the same checks, in file order) to align objects.
    kept_images = {r.image_id: r for r in records}
    scratch = {i: _Objects(r.file_name, r.height, r.width) for i, r in kept_images.items()}
    per_image: dict[int, list[Tensor | None]] = {i: [] for i in kept_images}
    seen: set[int] = set()
    for j, ann in enumerate(data.get("annotations", [])):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if isinstance(ann_id, int) and ann_id in seen:
            continue  # read_coco skipped the duplicate
        try:
            _read_annotation(ann, scratch, categories)  # raises where read_coco skipped it
        except ValueError:
            continue
        if isinstance(ann_id, int):
            seen.add(ann_id)
        record = kept_images[ann["image_id"]]
        try:
            with_points = ks.get(ann["category_id"], 0) > 0
            kp = (
                _annotation_keypoints(ann, K, record.height, record.width)
                if with_points
                else torch.zeros(K, 3)
            )
        except ValueError as err:
            _report(f"{path}: annotation id {repr(ann_id)[:40]} (annotations[{j}]): {err}", on_error, err)
            per_image[record.image_id].append(None)
            continue
        per_image[record.image_id].append(kp)
    keypoints = []
    for record in records:
        rows = per_image[record.image_id]
        if len(rows) != len(record.labels):
            raise ValueError(f"{path}: image id {record.image_id}: objects and keypoint rows disagree")
        keep = torch.tensor([r is not None for r in rows], dtype=torch.bool)
        if not bool(keep.all()):  # skipped: drop those objects from the record too
            _drop_objects(record, keep)
        kept_rows = [r for r in rows if r is not None]
        keypoints.append(torch.stack(kept_rows) if kept_rows else torch.zeros(0, K, 3))
    return keypoints, info


def read_coco_keypoints(
    path: str | Path, on_error: str = "raise"
) -> tuple[list[ImageRecord], Categories, list[Tensor], KeypointInfo]:
    """Read a COCO keypoint json: :func:`read_coco`'s records and categories, plus per record its
    keypoints ``[N, K, 3]`` (one row per object of the record) and the file's :class:`KeypointInfo`.

    With ``on_error="skip"``, an annotation with bad keypoints is logged and left out (its
    object too), as :func:`read_coco` leaves out bad annotations.
    """
    check_on_error(on_error)
    path = Path(path)
    records, categories = read_coco(path, on_error=on_error)  # validates the file's instances part
    keypoints, info = keypoints_for(path, records, categories, on_error)
    return records, categories, keypoints, info


def _drop_objects(record: ImageRecord, keep: Tensor) -> None:
    """Keep only the objects ``keep`` (bool ``[N]``) of ``record``, in place."""
    record.boxes, record.labels = record.boxes[keep], record.labels[keep]
    if record.iscrowd is not None:
        record.iscrowd = record.iscrowd[keep]
    if record.areas is not None:
        record.areas = record.areas[keep]
    if record.segmentations is not None:
        record.segmentations = [s for s, k in zip(record.segmentations, keep.tolist(), strict=True) if k]
