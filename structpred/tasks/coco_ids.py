"""The data's own ids in ``structpred predict``'s results, so pycocotools scores them unchanged.

* Image ids: from a dataset's records (``--data coco:DIR``), or by file name from a COCO json
  (``--coco-json FILE`` with image files): an input matches the image whose ``file_name`` ends
  its path (``val/0001.jpg`` matches ``/data/coco/val/0001.jpg``); the longest match wins, and a
  file that matches none, or two equally well, or two files matching one image, is an error.
* Category ids: label ``k`` of the model is the checkpoint's ``category_ids[k - 1]``; when the
  data has a category table too, the two must agree, id for id and name for name, or the error
  names the first label where they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.formats.coco import read_coco
from ..data.records import Categories


def image_ids_by_file_name(paths: Sequence[Path], json_path: Path) -> tuple[list[int], Categories]:
    """Per input file, the id of its image in the COCO json ``json_path``; and its categories.

    Raises ``ValueError`` naming the file that matches no image, or two images equally well.
    """
    records, categories = read_coco(json_path)
    by_parts: dict[tuple[str, ...], list[int]] = {}
    for record in records:
        parts = Path(record.file_name).parts
        by_parts.setdefault(tuple(p for p in parts if p not in (".", "")), []).append(record.image_id)
    longest = max((len(k) for k in by_parts), default=0)
    ids = []
    for path in paths:
        parts = path.resolve().parts
        for n in range(min(longest, len(parts)), 0, -1):  # the longest tail that names an image
            found = by_parts.get(parts[-n:])
            if found:
                break
        else:
            raise ValueError(f"{path}: no image of {json_path} has this file name (its 'file_name' fields)")
        if len(found) > 1:
            raise ValueError(
                f"{path}: {len(found)} images of {json_path} have the file name {Path(*parts[-n:])} "
                f"(ids {found}); give the files by a longer path or use --data"
            )
        ids.append(found[0])
    first: dict[int, Path] = {}
    for path, image_id in zip(paths, ids, strict=True):
        if image_id in first:
            raise ValueError(
                f"{first[image_id]} and {path} both match image id {image_id} of {json_path}; give one"
            )
        first[image_id] = path
    return ids, categories


def checked_category_ids(
    class_names: Sequence[str], category_ids: Sequence[int], categories: Categories | None, where: str
) -> list[int]:
    """The category id of each label ``1..K``: the checkpoint's (``class_names``/``category_ids``)
    after checking they agree with the data's ``categories`` (from ``where``), else the data's.

    Raises ``ValueError`` naming the first label whose id or name differs, or the counts.
    """
    ids = list(category_ids)
    if categories is None:
        return ids
    if not class_names:  # the checkpoint records no table: labels follow the data's, in order
        return list(categories.ids)
    if len(class_names) != len(categories):
        raise ValueError(
            f"the checkpoint was trained on {len(class_names)} categories {list(class_names)} but "
            f"{where} has {len(categories)}: {categories.names}"
        )
    ids = ids or list(categories.ids)  # an older checkpoint with names only: check names
    for k, (name, cid, data_name, data_id) in enumerate(
        zip(class_names, ids, categories.names, categories.ids, strict=True), start=1
    ):
        if (name, cid) != (data_name, data_id):
            raise ValueError(
                f"category mismatch at label {k}: the checkpoint has id {cid} {name!r}, {where} has id "
                f"{data_id} {data_name!r} (the ids of the results would be wrong)"
            )
    return ids
