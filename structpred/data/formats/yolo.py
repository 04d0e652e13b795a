"""YOLO (Darknet / Ultralytics) detection datasets: ``data.yaml`` + one ``.txt`` per image.

Layout (as Ultralytics reads it): ``data.yaml`` holds ``names`` (a list, or a dict
``{0: name, ...}`` with keys ``0..K-1``), optionally ``nc`` and ``path``, and per split
(``train``/``val``/``test``; ``valid`` is read as ``val`` when there is no ``val``) a directory of
images (searched recursively), a ``.txt`` list of image paths, or a list of those, relative to
``path`` (itself relative to the yaml's directory; default that directory). A relative split path
starting with ``../`` that does not exist is retried without it, as Ultralytics does for
Roboflow's ``train: ../train/images``. In a ``.txt`` list, ``./x.jpg`` is relative to the list's
folder, other relative lines to ``path`` (then the list's folder). The labels of
``.../images/<rest>/x.jpg`` are in ``.../labels/<rest>/x.txt`` (the last ``images`` component is
replaced, as Ultralytics does); a missing label file means an image without objects.

Convention: a label line is ``class cx cy w h``, class ``c`` in ``0..K-1`` (label ``c + 1``),
centre and size normalised by the image width/height, each in ``[0, 1]`` (1e-6 of float slack);
a segment line ``class x1 y1 x2 y2 ...`` (at least 3 points) gives the box around its points.
Boxes are then checked like every reader's (1 px overshoot clipped). Image sizes come from the
image headers. Writing normalises in float64 and prints ``repr`` floats, so a written box reads
back within float32 rounding (< 1e-3 px for images up to 10,000 px).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml  # type: ignore[import-untyped]  # no types-PyYAML stubs installed

from .. import limits
from ..images import image_size
from ..records import Categories, ImageRecord
from ._common import (
    as_int,
    as_number,
    check_categories,
    check_on_error,
    check_record_for_writing,
    checked_box,
    clipped_boxes,
    logger,
    read_text_bounded,
    report,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_SLACK = 1e-6  # normalised values may exceed [0, 1] by this much (float printing noise)
MAX_WALK = 2_000_000  # files and folders a split folder's walk may visit (COCO train2017: 118,287)


def _yaml_path(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return root / name
    raise ValueError(f"{root}: no data.yaml found")


_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: 100x faster


def _bound_yaml(text: str, path: Path) -> None:
    """Walk the YAML events (no objects built) and refuse a document deeper than
    ``max_yaml_depth``, with more than ``max_yaml_aliases`` aliases, or that expands (aliases
    followed) to more nodes than ``max_yaml_bytes`` -- a plain document has fewer nodes than
    bytes, so only an alias bomb does. The event parser keeps its own stack: no recursion."""
    anchors: dict[str, int] = {}  # anchor -> nodes of its value, aliases expanded
    stack: list[list[Any]] = [[None, 0]]  # open collections: [anchor, expanded nodes so far]
    aliases = 0
    for event in yaml.parse(text, Loader=_YamlLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            limits.check("max_yaml_aliases", aliases, path, "number of aliases (*name)")
            stack[-1][1] += anchors.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            stack[-1][1] += 1
            if event.anchor is not None:
                anchors[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            stack.append([event.anchor, 1])
            limits.check("max_yaml_depth", len(stack) - 1, path, "nesting depth")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            if anchor is not None:
                anchors[anchor] = size
            stack[-1][1] += size
        else:
            continue
        limits.check("max_yaml_bytes", stack[-1][1], path, "size with aliases expanded (nodes)")


def _load_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a data.yaml, bounded (size, depth, aliases) before it is built."""
    text = read_text_bounded(path, "yaml file", "max_yaml_bytes")
    try:
        _bound_yaml(text, path)
        data = yaml.load(text, Loader=_YamlLoader)  # noqa: S506  (a SafeLoader: plain types only)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: malformed yaml: {' '.join(str(err).split())}") from err
    except limits.LimitError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError) as err:  # PyYAML's constructors
        # e.g. "!!timestamp 2001-12-14!!binary AAAA" makes PyYAML raise AttributeError
        problem = f"{type(err).__name__}: {' '.join(str(err).split())}"
        raise ValueError(f"{path}: malformed yaml: a value cannot be built ({problem})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _categories(data: dict[str, Any], path: Path) -> Categories:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            by_index = {as_int(k, "class index"): v for k, v in names.items()}
        except ValueError as err:
            raise ValueError(f"{path}: names: {err}") from err
        keys = sorted(by_index)
        if keys != list(range(len(names))):
            raise ValueError(f"{path}: names keys must be the class indices 0..{len(names) - 1}, got {keys}")
        names = [by_index[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str | int) for n in names):
        raise ValueError(f"{path}: 'names' must be a non-empty list (or dict) of class names")
    if "nc" in data and data["nc"] != len(names):
        raise ValueError(f"{path}: nc = {data['nc']!r} but {len(names)} names")
    return Categories([str(n) for n in names])


def _dataset_dir(data: dict[str, Any], yaml_path: Path) -> Path:
    base = data.get("path")
    if base is None:
        return yaml_path.parent
    if not isinstance(base, str):
        raise ValueError(f"{yaml_path}: 'path' must be a string, got {base!r}")
    return yaml_path.parent / base


def _split_path(base: Path, source: str) -> Path:
    target = base / source
    if not target.exists() and source.startswith("../") and (base / source[3:]).exists():
        return base / source[3:]  # Roboflow's "../train/images" beside the yaml (Ultralytics' rule)
    return target


def _list_file(target: Path, base: Path) -> list[tuple[Path, str]]:
    """``(image path, "list.txt line N")`` of each line of an image list."""
    lines = [line.strip() for line in read_text_bounded(target, "image list").splitlines()]
    out = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        if line.startswith("./"):
            path = target.parent / line[2:]
        elif Path(line).is_absolute() or (base / line).is_file() or not (target.parent / line).is_file():
            path = base / line  # an absolute line stays absolute
        else:
            path = target.parent / line
        out.append((path, f"{target} line {number}"))
    return out


def _walk_images(folder: Path, yaml_path: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, linked folders followed as ``rglob`` did), sorted;
    at most :data:`MAX_WALK` entries visited, so a split naming a huge tree (or a symlink loop)
    fails fast instead of walking for minutes."""
    found, seen = [], 0
    for parent, dirs, files in os.walk(folder, followlinks=True):
        seen += len(dirs) + len(files)
        if seen > MAX_WALK:
            raise ValueError(
                f"{yaml_path}: split folder {folder} holds over {MAX_WALK:,} entries; name the images "
                "folder itself (e.g. images/train)"
            )
        found += [Path(parent) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(p for p in found if p.is_file())


def _image_files(source: object, base: Path, yaml_path: Path) -> list[tuple[Path, str | None]]:
    """``(image path, where it was listed or None)`` of one split entry (directory, list file, or
    a list of those)."""
    if isinstance(source, list):
        return [p for item in source for p in _image_files(item, base, yaml_path)]
    if not isinstance(source, str) or not source:
        raise ValueError(f"{yaml_path}: split entries must be paths, got {source!r}")
    target = _split_path(base, source)
    if target.is_dir():
        if yaml_path.resolve().is_relative_to(target.resolve()):  # "../../", "/": the yaml's own ancestors
            raise ValueError(
                f"{yaml_path}: split path {source!r} is {target.resolve()}, a folder that holds this "
                "dataset itself; name its images folder (e.g. images/train)"
            )
        return [(p, None) for p in _walk_images(target, yaml_path)]
    if target.is_file() and target.suffix == ".txt":
        return list(_list_file(target, base))
    raise ValueError(f"{yaml_path}: split path {target} is neither a directory nor a .txt list")


def _os_text(err: OSError) -> str:
    return f"cannot read {err.filename or 'a path'}"[:300] + f": {err.strerror or err}"


def label_path(image: Path) -> Path:
    """``.../images/<rest>/x.jpg`` -> ``.../labels/<rest>/x.txt`` (last ``images`` component)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_line(line: str, num_classes: int, height: int, width: int) -> tuple[int, list[float]]:
    fields = line.split()
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise ValueError(
            f"expected 5 fields 'class cx cy w h' or a segment 'class x1 y1 x2 y2 x3 y3 ...' (7, 9, ... "
            f"fields), got {len(fields)}"
        )
    cls = as_int(fields[0], "class")
    if not 0 <= cls < num_classes:
        raise ValueError(f"class {cls} outside 0..{num_classes - 1}")
    values = [as_number(v, "coordinate") for v in fields[1:]]
    if not all(-_SLACK <= v <= 1 + _SLACK for v in values):
        raise ValueError(f"normalised values must be in [0, 1], got {values[:8]}")
    if len(fields) == 5:
        cx, cy, w, h = values
    else:  # a segment: the box around its points
        xs, ys = values[0::2], values[1::2]
        cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got w={w}, h={h}")
    box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    return cls + 1, checked_box(box, height, width)


def _record(image: Path, index: int, root: Path, num_classes: int, on_error: str) -> ImageRecord:
    height, width = image_size(image)
    labels_file = label_path(image)
    boxes: list[list[float]] = []
    labels: list[int] = []
    if labels_file.exists():  # a folder named x.txt is an error, not an image without objects
        lines = read_text_bounded(labels_file, "label file").splitlines()  # \n, \r\n and \r alike
        count = sum(1 for line in lines if line.strip())
        limits.check("max_annotations_per_image", count, labels_file, "number of label lines")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                label, box = _read_line(line, num_classes, height, width)
            except ValueError as err:
                report(f"{labels_file} line {number}: {err}", on_error, err)
                continue
            labels.append(label)
            boxes.append(box)
    try:
        file_name = str(image.relative_to(root))
    except ValueError:
        file_name = str(image.resolve())
    n = len(labels)
    return ImageRecord(
        file_name,
        height,
        width,
        torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        torch.tensor(labels, dtype=torch.int64).reshape(n),
        image_id=index,
    )


def yolo_splits(root: str | Path) -> list[str]:
    """The splits a YOLO dataset's yaml names (``valid`` reads as ``val``)."""
    yaml_path = _yaml_path(Path(root))
    data = _load_yaml(yaml_path)
    _categories(data, yaml_path)  # a yaml with bad names fails here, before any split is read
    found = {_SPLIT_KEYS.get(k, k) for k in data if k in _SPLIT_KEYS and data[k] is not None}
    return sorted(found)


_SPLIT_KEYS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def read_yolo(
    root: str | Path, split: str = "train", on_error: str = "raise"
) -> tuple[list[ImageRecord], Categories]:
    """Read one split of a YOLO dataset (``root`` is its directory or its ``data.yaml``).

    Records are in sorted image order, ``image_id`` = index, ``file_name`` relative to the yaml's
    directory (absolute if outside it). Raises ``ValueError`` naming the file (and line) on a
    missing/malformed yaml, unknown split, unreadable image, a line with the wrong field count,
    an unknown class, values outside ``[0, 1]`` or a bad box; ``on_error="skip"`` logs and leaves
    out a bad line or image instead.
    """
    check_on_error(on_error)
    yaml_path = _yaml_path(Path(root))
    data = _load_yaml(yaml_path)
    categories = _categories(data, yaml_path)
    key = split
    if data.get(split) is None and split == "val":
        key = next((k for k in ("valid", "validation") if data.get(k) is not None), split)
    if data.get(key) is None:
        known = [s for s in _SPLIT_KEYS if data.get(s) is not None]
        raise ValueError(f"{yaml_path}: no split {split!r}; splits present: {known}")
    try:
        images = _image_files(data[key], _dataset_dir(data, yaml_path), yaml_path)
    except OSError as err:  # a 5,000-character split path: "File name too long"
        raise ValueError(f"{yaml_path}: split {key!r}: {_os_text(err)}") from err
    records = []
    for index, (image, listed) in enumerate(images):
        origin = f"{listed}: " if listed else ""  # an image of a list: name the list and line
        try:
            records.append(_record(image, index, yaml_path.parent, len(categories), on_error))
        except OSError as err:
            report(f"{origin}{image}: {_os_text(err)}", on_error, err)
        except ValueError as err:
            report(f"{origin}{err}", on_error, err)
    return records, categories


def write_yolo(
    records: list[ImageRecord],
    categories: Categories,
    root: str | Path,
    split: str = "train",
    image_source: str | Path | None = None,
) -> Path:
    """Write records as split ``split`` of a YOLO dataset under ``root``; returns the yaml path.

    Images go to ``root/images/<split>/<file_name>`` (copied from ``image_source/<file_name>``;
    with ``image_source=None`` they must already be there), labels to ``root/labels/<split>/``.
    ``data.yaml`` gets ``nc``, ``names`` and ``<split>: images/<split>``; an existing one must have
    the same names and keeps its other splits. YOLO has no crowd flag: crowd objects are left out
    (logged).
    """
    root = Path(root)
    check_categories(categories, str(root))
    yaml_path = root / "data.yaml"
    data: dict[str, Any] = _load_yaml(yaml_path) if yaml_path.is_file() else {}
    if data and _categories(data, yaml_path).names != categories.names:
        raise ValueError(f"{yaml_path}: exists with other class names; write to a new root")
    image_dir = root / "images" / split
    for r, record in enumerate(records):
        where = f"{root}: record {r} ({getattr(record, 'file_name', '?')})"
        check_record_for_writing(record, categories, where)
        relative = Path(record.file_name)
        relative = Path(relative.name) if relative.is_absolute() else relative
        dest = image_dir / relative
        if image_source is not None:
            src = Path(image_source) / record.file_name
            if not src.is_file():
                raise ValueError(f"{where}: image {src} not found")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.resolve() != dest.resolve():
                shutil.copyfile(src, dest)
        elif not dest.is_file():
            raise ValueError(f"{where}: image {dest} not found (image_source=None needs it in place)")
        crowd = [0] * len(record.labels) if record.iscrowd is None else record.iscrowd.tolist()
        if any(crowd):
            logger.warning("%s: %d crowd object(s) left out (YOLO has no crowd flag)", where, sum(crowd))
        lines = []
        for box, label, is_crowd in zip(clipped_boxes(record), record.labels.tolist(), crowd, strict=True):
            if is_crowd:
                continue
            x1, y1, x2, y2 = box
            cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
            w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
            lines.append(f"{label - 1} {cx!r} {cy!r} {w!r} {h!r}\n")
        label_file = label_path(dest)
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(lines), encoding="utf-8")
    data.update({"nc": len(categories), "names": list(categories.names), split: f"images/{split}"})
    image_dir.mkdir(parents=True, exist_ok=True)  # even for no records: the yaml points at it
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return yaml_path
