"""Pascal VOC xml annotations (one file per image), parsed with defusedxml.

Convention: ``<xmin> <ymin> <xmax> <ymax>`` are read as they are, as xyxy absolute pixels. The
original VOC files use 1-based inclusive pixel indices (a box ``[1, 1, W, H]`` covers the whole
image), other tools (DeepForest, LabelImg) write 0-based numbers; we do not shift either, so a
1-based file is off by at most 1 px, and the 1 px tolerance of the box check (overshoot clipped,
see :mod:`structpred.data.formats._common`) accepts ``xmax = W``. ``difficult`` is kept.
Entity declarations are refused (no "billion laughs" expansion, no external entities).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as SafeET
import torch

from .. import limits
from ..records import Categories, ImageRecord
from ._common import (
    as_int,
    as_number,
    check_categories,
    check_on_error,
    check_record_for_writing,
    checked_box,
    clipped_boxes,
    float32_text,
    read_bytes_bounded,
    read_text_bounded,
    report,
)

# The 20 Pascal VOC classes in their usual (alphabetical) order: labels 1..20.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def _parse(path: Path) -> ET.Element:
    """The root ``<annotation>`` element of a VOC file; ``ValueError`` naming the file otherwise."""
    data = read_bytes_bounded(path, "VOC xml file")  # missing, unreadable, over max_text_file_bytes
    try:
        root = SafeET.fromstring(data)
    except ET.ParseError as err:
        line, col = err.position
        raise ValueError(f"{path}: malformed xml at line {line} column {col}: {err}") from err
    except defusedxml.DefusedXmlException as err:
        raise ValueError(f"{path}: refused unsafe xml ({type(err).__name__}): {err}") from err
    except (LookupError, ValueError) as err:  # expat: an unknown or multi-byte declared encoding
        raise ValueError(f"{path}: unsupported xml encoding: {err}") from err
    if root.tag != "annotation":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    return root


def _text(parent: ET.Element, tag: str, what: str) -> str:
    nodes = parent.findall(tag)
    if len(nodes) > 1:  # two <width>s: which one the tool meant is a guess, so refuse
        raise ValueError(f"{len(nodes)} <{tag}> elements in {what}, expected one")
    node = nodes[0] if nodes else None
    if node is None or node.text is None or not node.text.strip():
        raise ValueError(f"missing <{tag}> in {what}")
    return node.text.strip()


def _one(parent: ET.Element, tag: str, what: str) -> ET.Element:
    nodes = parent.findall(tag)
    if not nodes:
        raise ValueError(f"missing <{tag}> in {what}")
    if len(nodes) > 1:
        raise ValueError(f"{len(nodes)} <{tag}> elements in {what}, expected one")
    return nodes[0]


def _mapped_name(obj: ET.Element, class_map: dict[str, str] | None) -> str:
    name = _text(obj, "name", "<object>")
    return class_map.get(name, name) if class_map else name


def _record(
    root: ET.Element,
    path: Path,
    categories: Categories,
    class_map: dict[str, str] | None,
    image_id: int,
    on_error: str,
) -> ImageRecord:
    """Build the record of a parsed file; bad objects raise or are skipped per ``on_error``."""
    try:
        file_name = _text(root, "filename", "<annotation>")
        size = _one(root, "size", "<annotation>")
        width = as_int(_text(size, "width", "<size>"), "<size><width>")
        height = as_int(_text(size, "height", "<size>"), "<size><height>")
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got width {width}, height {height}")
        limits.check("max_pixels", width * height, "<size>", f"width x height {width} x {height}")
        objects = len(root.findall("object"))
        limits.check("max_annotations_per_image", objects, "<annotation>", "number of <object>s")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err

    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[int] = []
    for k, obj in enumerate(root.iter("object")):
        try:
            name = _mapped_name(obj, class_map)
            label = categories.label_of_name(name)
            bndbox = _one(obj, "bndbox", "<object>")
            coords = [
                as_number(_text(bndbox, t, "<bndbox>"), f"<{t}>") for t in ("xmin", "ymin", "xmax", "ymax")
            ]
            box = checked_box(coords, height, width)
            has_flag = any((node.text or "").strip() for node in obj.findall("difficult"))
            flag = as_int(_text(obj, "difficult", "<object>"), "<difficult>") if has_flag else 0
            if flag not in (0, 1):
                raise ValueError(f"<difficult> must be 0 or 1, got {flag}")
        except ValueError as err:
            report(f"{path}: object {k}: {err}", on_error, err)
            continue
        boxes.append(box)
        labels.append(label)
        difficult.append(flag)
    n = len(labels)
    return ImageRecord(
        file_name,
        height,
        width,
        torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        torch.tensor(labels, dtype=torch.int64).reshape(n),
        image_id=image_id,
        difficult=torch.tensor(difficult, dtype=torch.uint8).reshape(n),
    )


def read_voc(
    path: str | Path,
    categories: Categories | None = None,
    on_error: str = "raise",
    class_map: dict[str, str] | None = None,
    image_id: int = 0,
) -> ImageRecord:
    """Read one VOC xml file.

    Args:
        path: the xml file.
        categories: class names of labels ``1..K``; ``None`` means the 20 VOC classes
            (:data:`VOC_CLASSES`).
        on_error: ``"raise"`` or ``"skip"`` (a bad object is logged and left out; file-level
            problems always raise).
        class_map: renames classes before lookup (names not in it are kept), e.g.
            ``{"Alive": "Tree", "Dead": "Tree"}`` merges classes.
        image_id: stored in the record.

    Raises ``ValueError`` naming the file (and object index) on a missing/malformed/unsafe file,
    a missing size or filename, an unknown class or a bad box.
    """
    check_on_error(on_error)
    path = Path(path)
    cats = Categories(list(VOC_CLASSES)) if categories is None else check_categories(categories, str(path))
    return _record(_parse(path), path, cats, class_map, image_id, on_error)


def list_xml_files(annotation_dir: Path, image_set: str | Path | None) -> list[Path]:
    """The xml files :func:`read_voc_dir` reads, in its order (``image_id`` = index here)."""
    if not annotation_dir.is_dir():
        raise ValueError(f"{annotation_dir}: VOC annotation directory not found")
    if image_set is None:
        return sorted(annotation_dir.glob("*.xml"))
    image_set = Path(image_set)
    if not image_set.is_file():
        raise ValueError(f"{image_set}: image set file not found")
    lines = read_text_bounded(image_set, "image set").splitlines()
    stems = [line.split()[0] for line in lines if line.strip()]
    for stem in stems:
        if "/" in stem or "\\" in stem or stem in (".", ".."):  # ids name files in annotation_dir only
            raise ValueError(f"{image_set}: id {stem!r} is not a plain file stem")
    return [annotation_dir / f"{stem}.xml" for stem in stems]


def read_voc_dir(
    annotation_dir: str | Path,
    class_names: list[str] | None = None,
    on_error: str = "raise",
    class_map: dict[str, str] | None = None,
    image_set: str | Path | None = None,
) -> tuple[list[ImageRecord], Categories]:
    """Read every ``*.xml`` in ``annotation_dir`` (sorted by name) or the ids listed in
    ``image_set`` (VOC's ``ImageSets/Main/<split>.txt``, one file stem per line).

    ``class_names`` gives labels ``1..K``; ``None`` collects the (mapped) names seen in the
    files and sorts them. ``image_id`` is the file's index in the list. With ``on_error="skip"``
    a bad file or object is logged and left out.
    """
    check_on_error(on_error)
    annotation_dir = Path(annotation_dir)
    files = list_xml_files(annotation_dir, image_set)
    parsed: list[tuple[int, Path, ET.Element]] = []
    for i, path in enumerate(files):
        try:
            parsed.append((i, path, _parse(path)))
        except ValueError as err:
            report(str(err), on_error, err)
    if class_names is None:
        names: set[str] = set()
        for _, _, root in parsed:
            for obj in root.iter("object"):
                try:
                    names.add(_mapped_name(obj, class_map))
                except ValueError:
                    pass  # reported (or skipped) when the object itself is read below
        if not names:
            raise ValueError(f"{annotation_dir}: no object names found; pass class_names")
        class_names = sorted(names)
    categories = Categories(list(class_names))
    check_categories(categories, str(annotation_dir))
    records = []
    for i, path, root in parsed:
        try:
            records.append(_record(root, path, categories, class_map, i, on_error))
        except ValueError as err:
            report(str(err), on_error, err)
    return records, categories


def write_voc(record: ImageRecord, categories: Categories, path: str | Path) -> None:
    """Write one record as a VOC xml file (numbers as-is, see the module convention).

    An object is written ``difficult`` if its ``difficult`` flag or its ``iscrowd`` flag is set
    (VOC evaluation ignores difficult objects as COCO ignores crowds).
    """
    path = Path(path)
    check_categories(categories, str(path))
    check_record_for_writing(record, categories, str(path))
    n = len(record.labels)
    difficult = [0] * n if record.difficult is None else record.difficult.tolist()
    if record.iscrowd is not None:
        difficult = [int(bool(d) or bool(c)) for d, c in zip(difficult, record.iscrowd.tolist(), strict=True)]
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = record.file_name
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(record.width)
    ET.SubElement(size, "height").text = str(record.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for box, label, flag in zip(clipped_boxes(record), record.labels.tolist(), difficult, strict=True):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = categories.names[label - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(flag))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(bndbox, tag).text = float32_text(value)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
