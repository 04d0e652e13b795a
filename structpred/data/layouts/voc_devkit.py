"""Pascal VOC on disk: the devkit layout (private; see docs/data.md).

``voc:DIR`` is the ``VOC20xx`` folder itself, or a folder holding one (``DIR/VOCdevkit/VOC2012``,
``DIR/VOC2007``). Inside: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``
(boxes) and ``SegmentationClass/*.png`` with ``ImageSets/Segmentation/<split>.txt`` (label maps:
palette PNGs, 0 = background, 255 = ignore). Without the ``ImageSets`` folder every file is read
as unsplit data. Classes: the lines of ``classes.txt``, ``labels.txt`` or CVAT's
``labelmap.txt`` (``name:r,g,b::``) in the VOC folder, a first ``background`` line being class
0; otherwise the 20 standard classes. RGB masks (CVAT's "Segmentation mask" export) are mapped
through ``labelmap.txt``'s colours, else the VOC palette's. ``structpred data export --format
voc`` writes this layout.
"""

from __future__ import annotations

from pathlib import Path

from ..datasets import DetectionFiles
from ..formats.voc import VOC_CLASSES, list_xml_files, read_voc_dir
from .checks import check_image_files, find_image, read_lines
from .labelmaps import MAX_CLASSES, Colors, LabelMapFiles, check_range, palette_colors, scan_masks
from .splits import UNSPLIT, canonical

CLASS_FILES = ("classes.txt", "labels.txt", "labelmap.txt")
BACKGROUND = ("background", "_background_", "__background__")


def _is_voc(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() or (folder / "SegmentationClass").is_dir()


def voc_root(arg: Path) -> Path:
    """The ``VOC20xx`` folder of ``voc:ARG``; ``ValueError`` if there is none or several."""
    if not arg.is_dir():
        raise ValueError(f"voc:{arg}: not a directory")
    if _is_voc(arg):
        return arg
    folders = sorted(arg.glob("VOCdevkit/*")) + sorted(arg.glob("*"))
    candidates = [p for p in folders if p.is_dir() and _is_voc(p)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(str(p.relative_to(arg)) for p in candidates)
        raise ValueError(f"voc:{arg}: several VOC folders ({names}); name one, e.g. voc:{candidates[-1]}")
    raise ValueError(
        f"voc:{arg}: no VOC layout (expected Annotations/ or SegmentationClass/ with JPEGImages/, "
        "here or in VOCdevkit/VOC20xx/)"
    )


def class_names(root: Path) -> tuple[list[str], str]:
    """Names of classes 1..K and where they came from (a class file, or the 20 VOC classes)."""
    for name in CLASS_FILES:
        path = root / name
        if not path.is_file():
            continue
        lines = [line for line in read_lines(path) if not line.startswith("#")]
        names = [line.split(":")[0].strip() if name == "labelmap.txt" else line for line in lines]
        if names and names[0].lower() in BACKGROUND:
            names = names[1:]
        if not names or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"{path}: class names must be non-empty and unique, got {names}")
        if len(names) >= MAX_CLASSES:
            raise ValueError(f"{path}: {len(names)} classes; label maps hold at most {MAX_CLASSES - 1}")
        return names, str(path)
    return list(VOC_CLASSES), "the 20 Pascal VOC classes"


def _split_files(root: Path, kind: str) -> dict[str, Path | None]:
    """Split -> its ``ImageSets/<kind>/*.txt`` (None: every file). One list named otherwise
    (CVAT's ``default.txt``) is the unsplit data."""
    folder = root / "ImageSets" / kind
    if not folder.is_dir():
        return {UNSPLIT: None}
    files: dict[str, Path | None] = {
        canonical(p.stem): p for p in sorted(folder.glob("*.txt")) if "_" not in p.stem
    }
    if len(files) == 1 and not set(files) & {"train", "val", "test", "trainval"}:
        return {UNSPLIT: next(iter(files.values()))}
    return files or {UNSPLIT: None}


def label_colors(root: Path, num_classes: int) -> tuple[Colors, str]:
    """The colour table of RGB masks: CVAT's ``labelmap.txt`` (``name:r,g,b::``, line order =
    class index, a first ``background`` line being 0), else the VOC palette; and its source."""
    path = root / "labelmap.txt"
    if not path.is_file():
        return palette_colors(num_classes), "the VOC palette"
    lines = [line for line in read_lines(path) if not line.startswith("#")]
    first = 0 if lines and lines[0].split(":")[0].strip().lower() in BACKGROUND else 1
    table: Colors = {}
    for k, line in enumerate(lines):
        fields = line.split(":")
        try:
            rgb = [int(v) for v in fields[1].split(",")] if len(fields) > 1 else []
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"{path}: line {line!r}: expected 'name:r,g,b::' with r, g, b in 0..255")
        table[rgb[0] << 16 | rgb[1] << 8 | rgb[2]] = k + first
    for colour, index in palette_colors(0).items():  # just the ignore colour, (224, 224, 192)
        table.setdefault(colour, index)
    return table, str(path)


def available(root: Path, kind: str) -> list[str]:
    """Splits a VOC folder holds for ``kind`` (``'Main'`` or ``'Segmentation'``)."""
    return sorted(_split_files(root, kind))


def _image_set(root: Path, kind: str, split: str) -> Path | None:
    return _split_files(root, kind)[split]


def open_boxes(root: Path, split: str, on_error: str = "raise") -> DetectionFiles:
    """One split of the VOC folder's boxes, every image checked."""
    names, _ = class_names(root)
    image_set = _image_set(root, "Main", split)
    records, categories = read_voc_dir(root / "Annotations", names, on_error=on_error, image_set=image_set)
    xml_files = list_xml_files(root / "Annotations", image_set)  # record.image_id indexes it
    images = root / "JPEGImages"
    for record in records:
        path = images / record.file_name
        if not path.is_file():  # some tools write <filename> without or with another suffix
            found = find_image(images, Path(record.file_name).stem)
            if found is None:
                raise ValueError(
                    f"{xml_files[record.image_id]}: <filename> {record.file_name!r} not found in {images} "
                    f"(tried it and {Path(record.file_name).stem}.jpg/.png/...)"
                )
            record.file_name = found.name
    return check_image_files(DetectionFiles(records, categories, images), f"{root / 'Annotations'}")


def open_label_maps(root: Path, split: str) -> LabelMapFiles:
    """One split of the VOC folder's ``SegmentationClass`` label maps, every pair checked."""
    names, source = class_names(root)
    masks = root / "SegmentationClass"
    if not masks.is_dir():
        raise ValueError(f"{root}: no SegmentationClass/ folder (label maps for semantic segmentation)")
    image_set = _image_set(root, "Segmentation", split)
    if image_set is None:
        stems = sorted(p.stem for p in masks.glob("*.png"))
    else:
        stems = [line.split()[0] for line in read_lines(image_set)]
        for stem in stems:
            if "/" in stem or "\\" in stem or stem in (".", ".."):  # ids name files in this folder only
                raise ValueError(f"{image_set}: id {stem!r} is not a plain file stem")
    pairs = []
    for stem in stems:
        image = find_image(root / "JPEGImages", stem)
        where = f"{image_set}: {stem!r}" if image_set is not None else f"{masks / stem}.png"
        if image is None:
            raise ValueError(f"{where}: no image {stem}.jpg/.png/... in {root / 'JPEGImages'}")
        mask = masks / f"{stem}.png"
        if not mask.is_file():
            raise ValueError(f"{where}: label map {mask} not found")
        pairs.append((image, mask))
    colors, colour_source = label_colors(root, len(names) + 1)
    maxima, _, sizes = scan_masks(pairs, colors, colour_source)
    check_range(pairs, maxima, len(names) + 1, source)
    return LabelMapFiles(pairs, names, len(names) + 1, sizes, colors, colour_source)
