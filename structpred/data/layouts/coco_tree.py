"""COCO on disk as users have it: ``coco:DIR`` or ``coco:FILE.json`` (private; see docs/data.md).

Annotation files found under ``DIR`` (``DIR/annotations/*.json``, ``DIR/*.json``,
``DIR/<folder>/*.json``) get their split from the file name without an ``instances_`` prefix
(``instances_train2017.json`` -> train, ``val.json`` -> val, ``instances_Validation.json`` ->
val) or else from their folder (Roboflow's ``valid/_annotations.coco.json`` -> val). COCO's other
annotation kinds (``captions_*``, ``person_keypoints_*``, ``panoptic_*``, ``image_info_*``,
``stuff_*``) are not read. One json with no split in its name (CVAT's ``instances_default.json``,
Label Studio's ``result.json``) is the unsplit data (``all``).

An image ``file_name`` is looked up, in order, in the split's image folder (``DIR/train2017/``,
``DIR/images/train2017/``...), the json's folder, ``images/`` under it, and for a json in
``annotations/``, ``DIR`` and ``DIR/images``; an absolute name is used as is, then by its base
name. A file found nowhere is an error listing every place tried. A category with id 0 that no
annotation uses (Roboflow writes the project's name there) is left out.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..datasets import DetectionFiles
from ..formats.coco import read_coco
from ..images import shown_path
from ..records import Categories, ImageRecord
from .checks import check_image_files
from .splits import UNSPLIT, canonical

logger = logging.getLogger("structpred.data.layouts")

OTHER_KINDS = ("captions_", "person_keypoints_", "panoptic_", "image_info_", "stuff_")
KNOWN_SPLITS = ("train", "val", "test", "trainval")
MAX_JSONS = 64  # more candidate files than this is not a COCO dataset folder


def _split_of(json_path: Path, root: Path) -> str | None:
    stem = json_path.name.removesuffix(".json").removesuffix(".coco")
    name = stem.removeprefix("instances_")
    split = canonical(name)
    if split in KNOWN_SPLITS:
        return split
    if json_path.parent != root and json_path.parent.name != "annotations":
        folder = canonical(json_path.parent.name)
        if folder in KNOWN_SPLITS:
            return folder
    return None


def coco_files(arg: Path) -> dict[str, Path]:
    """Split name -> annotation json of ``coco:ARG`` (``{'all': json}`` for unsplit data)."""
    if arg.is_file():
        return {UNSPLIT: arg}
    if not arg.is_dir():
        raise ValueError(f"coco:{arg}: no such directory or json file")
    found = [p for p in sorted(arg.glob("*.json")) + sorted(arg.glob("*/*.json")) if p.is_file()]
    found = [p for p in found if not p.name.startswith(OTHER_KINDS) and not p.name.startswith(".")]
    if len(found) > MAX_JSONS:
        raise ValueError(f"coco:{arg}: {len(found)} json files; point at the dataset's own folder or json")
    by_split: dict[str, list[Path]] = {}
    unsplit: list[Path] = []
    for path in found:
        split = _split_of(path, arg)
        if split is None:
            unsplit.append(path)
        else:
            by_split.setdefault(split, []).append(path)
    for split, paths in by_split.items():
        if len(paths) > 1:
            names = ", ".join(str(p.relative_to(arg)) for p in paths)
            raise ValueError(f"coco:{arg}: several annotation files for split {split!r} ({names}); name one")
    if by_split:
        if unsplit:
            logger.info("coco:%s: not read (no split in the name): %s", arg, [p.name for p in unsplit])
        return {split: paths[0] for split, paths in by_split.items()}
    if len(unsplit) == 1:
        return {UNSPLIT: unsplit[0]}
    if not unsplit:
        raise ValueError(
            f"coco:{arg}: no COCO annotation json (looked for annotations/instances_<split>*.json, "
            "<split>/_annotations.coco.json, *.json)"
        )
    names = ", ".join(str(p.relative_to(arg)) for p in unsplit)
    raise ValueError(f"coco:{arg}: several json files and none names its split ({names}); name one")


def image_roots(json_path: Path, root: Path, split: str) -> list[Path]:
    """Folders a ``file_name`` of ``json_path`` is looked up in, in order (see the module doc)."""
    roots: list[Path] = []
    stem = json_path.name.removesuffix(".json").removeprefix("instances_")
    if json_path.parent.name == "annotations" and split != UNSPLIT:
        base = json_path.parent.parent
        names = [stem] + sorted(
            p.name for p in base.iterdir() if p.is_dir() and canonical(p.name) == split and p.name != stem
        )
        for name in names:
            roots += [base / name, base / "images" / name]
    roots += [json_path.parent, json_path.parent / "images"]
    if json_path.parent.name == "annotations":
        roots += [json_path.parent.parent, json_path.parent.parent / "images"]
    unique: list[Path] = []
    for r in roots:
        if r not in unique and r.is_dir():
            unique.append(r)
    return unique or [json_path.parent]


def _resolve(records: list[ImageRecord], roots: list[Path], json_path: Path) -> None:
    """Make every record's ``file_name`` absolute; ``ValueError`` listing the places tried."""
    hits: dict[Path, int] = {}
    for i, record in enumerate(records):
        name = record.file_name.replace("\\", "/")
        relative = Path(name)
        tries = [relative] if relative.is_absolute() else []
        if relative.is_absolute():
            relative = Path(relative.name)
        order = sorted(roots, key=lambda r: -hits.get(r, 0))  # the folder that worked so far first
        tries += [r / relative for r in order]
        if len(relative.parts) > 1:
            tries += [r / relative.name for r in order]
        found = next((t for t in tries if t.is_file()), None)
        if found is None:
            tried = ", ".join(shown_path(t) for t in tries[:6])
            raise ValueError(
                f"{json_path}: images[{i}] (id {record.image_id}) file_name {record.file_name!r} not "
                f"found; tried {tried}"
            )
        for r in roots:
            if found.parent == r or r in found.parents:
                hits[r] = hits.get(r, 0) + 1
                break
        record.file_name = str(found)


def open_coco(
    json_path: Path, root: Path, split: str, with_masks: bool, on_error: str = "raise"
) -> DetectionFiles:
    """The checked :class:`DetectionFiles` of one COCO json (file names resolved, images checked)."""
    records, categories = read_coco(json_path, on_error=on_error)
    unused_zero = not any(bool((r.labels == 1).any()) for r in records)
    if len(categories) > 1 and categories.ids[0] == 0 and unused_zero:
        # Roboflow writes the project's name as category 0, a supercategory no annotation uses.
        logger.info("%s: category 0 (%r) is used by no annotation: left out", json_path, categories.names[0])
        categories = Categories(categories.names[1:], categories.ids[1:])
        for record in records:
            record.labels = record.labels - 1
    _resolve(records, image_roots(json_path, root, split), json_path)
    if with_masks:
        for record in records:
            segs = record.segmentations
            if segs is None:
                raise ValueError(
                    f"{json_path}: no annotation has a 'segmentation'; instance masks need polygons or RLE"
                )
            for k, seg in enumerate(segs):
                if isinstance(seg, list) and not seg:
                    raise ValueError(
                        f"{json_path}: image id {record.image_id} ({Path(record.file_name).name}) object "
                        f"{k} has an empty 'segmentation'; instance masks need one per object"
                    )
    dataset = DetectionFiles(records, categories, json_path.parent, with_masks=with_masks)
    return check_image_files(dataset, str(json_path))
