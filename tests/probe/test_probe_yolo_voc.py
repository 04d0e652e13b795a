"""The probe (issue 15): hostile YOLO / VOC / devkit / split / .flo inputs, one case each.

Every case writes a tiny file set into ``tmp_path`` and asserts the exact outcome: either one
``ValueError``-family exception whose one-line message names the file and the field (a regex),
or the correct result. docs/errors.md lists the cases.
"""

# ruff: noqa: E501  (the case tables read one case per line)
from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from structpred.data import limits
from structpred.data.formats import read_flo, read_voc, read_voc_dir, read_yolo
from structpred.data.layouts import open_layout
from structpred.data.layouts.splits import check_split_options

NAMES_YAML = "train: images/train\nnames: [cat, dog]\n"
GOOD_LINE = "1 0.5 0.5 0.5 0.5\n"  # dog, box [10, 7.5, 30, 22.5] in the 40 x 30 image


def png(path: Path, height: int = 30, width: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path)


def yolo(tmp: Path, yaml: str | bytes = NAMES_YAML, label: str | bytes | None = GOOD_LINE) -> Path:
    """``ds/data.yaml``, ``ds/images/train/a.png`` (40 x 30), ``ds/labels/train/a.txt``."""
    root = tmp / "ds"
    png(root / "images" / "train" / "a.png")
    (root / "data.yaml").write_bytes(yaml.encode() if isinstance(yaml, str) else yaml)
    if label is not None:
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / "a.txt").write_bytes(label.encode() if isinstance(label, str) else label)
    return root


def _bomb(levels: int = 9) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    return "\n".join(lines) + f"\n{NAMES_YAML}"


def boxes_of(root: Path) -> list[list[float]]:
    records, _ = read_yolo(root)
    return records[0].boxes.tolist()


# ------------------------------------------------------------------------------ YOLO data.yaml
def y(yaml: str | bytes, **kw: Any) -> Callable[[Path], Any]:
    return lambda tmp: read_yolo(yolo(tmp, yaml, **kw))


def lbl(label: str | bytes) -> Callable[[Path], Any]:
    return lambda tmp: read_yolo(yolo(tmp, label=label))


def with_limits(call: Callable[[Path], Any], **values: int) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        with limits.override(**values):
            return call(tmp)

    return run


Y = r"data\.yaml: "
L = r"a\.txt line 1: "
YAML_CASES = [
    ("alias bomb", y(_bomb()), Y + r"size with aliases expanded \(nodes\).*max_yaml_bytes"),
    (
        "many aliases",
        y("a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n" + NAMES_YAML),
        Y + r"number of aliases.*max_yaml_aliases=100",
    ),
    (
        "deep list 60",
        y("x: " + "[" * 60 + "]" * 60 + "\n" + NAMES_YAML),
        Y + r"nesting depth is 51.*max_yaml_depth=50",
    ),
    (
        "deep list 5000",
        y("x: " + "[" * 5000 + "]" * 5000 + "\n" + NAMES_YAML),
        Y + r"nesting depth.*max_yaml_depth",
    ),
    (
        "deep mapping",
        y("".join(" " * i + f"k{i}:\n" for i in range(60)) + NAMES_YAML),
        Y + r"nesting depth.*max_yaml_depth",
    ),
    ("deep flow mapping", y("x: " + "{a: " * 80 + "1" + "}" * 80 + "\n" + NAMES_YAML), Y + r"nesting depth"),
    (
        "over max_yaml_bytes",
        with_limits(y(NAMES_YAML + "#" * 100), max_yaml_bytes=100),
        Y + r"size of the yaml file \(bytes\) is 138.*max_yaml_bytes=100",
    ),
    ("undefined alias", y("x: *nope\n" + NAMES_YAML), Y + r"malformed yaml: found undefined alias"),
    ("unclosed bracket", y("names: [cat, dog\ntrain: images/train\n"), Y + r"malformed yaml"),
    ("tab indentation", y("names:\n\t- cat\ntrain: images/train\n"), Y + r"malformed yaml"),
    (
        "python tag",
        y("x: !!python/object/apply:os.system [echo hi]\n" + NAMES_YAML),
        Y + r"malformed yaml: could not determine a constructor",
    ),
    ("unknown tag", y("x: !foo 1\n" + NAMES_YAML), Y + r"malformed yaml: could not determine a constructor"),
    ("unhashable key", y("? [a, b]\n: 1\n" + NAMES_YAML), Y + r"malformed yaml: .*unhashable"),
    ("top-level list", y("- train\n- names\n"), Y + r"top level must be a mapping, got list"),
    ("top-level scalar", y("hello\n"), Y + r"top level must be a mapping, got str"),
    ("empty yaml", y(""), Y + r"top level must be a mapping, got NoneType"),
    (
        "NUL byte in yaml",
        y(b"train: images/train\x00\nnames: [cat]\n"),
        Y + r"yaml file holds a NUL byte at character 19",
    ),
    (
        "latin-1 yaml",
        y("train: images/train\nnames: [caf\xe9]\n".encode("latin-1")),
        Y + r"yaml file is not UTF-8 text \(byte 31",
    ),
    ("UTF-16 yaml", y(NAMES_YAML.encode("utf-16")), Y + r"yaml file is not UTF-8 text \(byte 0"),
    ("names missing", y("train: images/train\n"), Y + r"'names' must be a non-empty list"),
    ("names empty", y("train: images/train\nnames: []\n"), Y + r"'names' must be a non-empty list"),
    ("names a string", y("train: images/train\nnames: cat\n"), Y + r"'names' must be a non-empty list"),
    ("names nested", y("train: images/train\nnames: [[cat]]\n"), Y + r"'names' must be a non-empty list"),
    (
        "names dict gap",
        y("train: images/train\nnames: {0: cat, 2: dog}\n"),
        Y + r"names keys must be the class indices 0\.\.1, got \[0, 2\]",
    ),
    (
        "names dict bad key",
        y("train: images/train\nnames: {a: cat}\n"),
        Y + r"names: class index must be a number, got 'a'",
    ),
    (
        "names dict inf key",
        y("train: images/train\nnames: {.inf: cat}\n"),
        Y + r"names: class index must be finite",
    ),
    ("nc mismatch", y(NAMES_YAML + "nc: 3\n"), Y + r"nc = 3 but 2 names"),
    ("nc nan", y(NAMES_YAML + "nc: .nan\n"), Y + r"nc = nan but 2 names"),
    ("path a list", y(NAMES_YAML + "path: [1]\n"), Y + r"'path' must be a string, got \[1\]"),
    (
        "no train split",
        y("val: images/val\nnames: [cat]\n"),
        Y + r"no split 'train'; splits present: \['val'\]",
    ),
    ("split an int", y("train: 5\nnames: [cat]\n"), Y + r"split entries must be paths, got 5"),
    ("split empty string", y("train: ''\nnames: [cat]\n"), Y + r"split entries must be paths, got ''"),
    (
        "split missing folder",
        y("train: nowhere\nnames: [cat]\n"),
        Y + r"split path .*nowhere is neither a directory nor a \.txt list",
    ),
    (
        "yaml constructor crash (fuzz)",
        y("x: !!timestamp 2001-12-14!!x\n" + NAMES_YAML),
        Y + r"malformed yaml: a value cannot be built \(AttributeError",
    ),
    (
        "yaml !!int word",
        y("x: !!int abc\n" + NAMES_YAML),
        Y + r"malformed yaml: a value cannot be built \(ValueError: invalid literal",
    ),
    (
        "yaml !!float word",
        y("x: !!float abc\n" + NAMES_YAML),
        Y + r"malformed yaml: a value cannot be built \(ValueError",
    ),
    (
        "yaml month 13",
        y("x: !!timestamp 2001-13-45\n" + NAMES_YAML),
        Y + r"malformed yaml: a value cannot be built \(ValueError: month must be in 1\.\.12\)",
    ),
    (
        "BOM then latin-1 labels (fuzz)",
        lbl(b"\xef\xbb\xbf0 0.5 0.5 0.5 0.5 # caf\xe9\n"),
        r"a\.txt: label file is not UTF-8 text \(byte 26: b'\\xe9'\)",
    ),
    (
        "split an ancestor folder (fuzz)",
        y("train: ../../\nnames: [cat]\n"),
        Y + r"split path '\.\./\.\./' is .*, a folder that holds this dataset itself",
    ),
    (
        "split the root folder",
        y("train: /\nnames: [cat]\n"),
        Y + r"split path '/' is /, a folder that holds this dataset itself",
    ),
    (
        "split path too long",
        y("train: " + "x" * 5000 + "\nnames: [cat]\n"),
        Y + r"split 'train': cannot read .*xxx: File name too long$",
    ),
    ("split a mapping", y("train: {a: 1}\nnames: [cat]\n"), Y + r"split entries must be paths"),
]

# ------------------------------------------------------------------------------ YOLO label lines
LABEL_CASES = [
    ("6 fields", lbl("0 0.5 0.5 0.5 0.5 0.5\n"), L + r"expected 5 fields .* got 6"),
    ("4 fields", lbl("0 0.5 0.5 0.5\n"), L + r"expected 5 fields .* got 4"),
    ("segment of 8 fields", lbl("0 0.1 0.1 0.5 0.1 0.5 0.5 0.9\n"), L + r"expected 5 fields .* got 8"),
    ("class negative", lbl("-1 0.5 0.5 0.5 0.5\n"), L + r"class -1 outside 0\.\.1"),
    ("class too large", lbl("2 0.5 0.5 0.5 0.5\n"), L + r"class 2 outside 0\.\.1"),
    (
        "class huge",
        lbl("99999999999999999999999 0.5 0.5 0.5 0.5\n"),
        L + r"class 99999999999999991611392 outside",
    ),
    ("class fraction", lbl("0.5 0.5 0.5 0.5 0.5\n"), L + r"class must be an integer, got '0\.5'"),
    ("class nan", lbl("nan 0.5 0.5 0.5 0.5\n"), L + r"class must be finite, got 'nan'"),
    ("class word", lbl("cat 0.5 0.5 0.5 0.5\n"), L + r"class must be a number, got 'cat'"),
    ("coordinate nan", lbl("0 nan 0.5 0.5 0.5\n"), L + r"coordinate must be finite, got 'nan'"),
    ("coordinate inf", lbl("0 0.5 inf 0.5 0.5\n"), L + r"coordinate must be finite, got 'inf'"),
    ("coordinate -inf", lbl("0 0.5 0.5 -inf 0.5\n"), L + r"coordinate must be finite, got '-inf'"),
    ("coordinate 1e400", lbl("0 0.5 0.5 0.5 1e400\n"), L + r"coordinate must be finite, got '1e400'"),
    ("coordinate 1e308", lbl("0 1e308 0.5 0.5 0.5\n"), L + r"normalised values must be in \[0, 1\]"),
    ("coordinate negative", lbl("0 -0.5 0.5 0.5 0.5\n"), L + r"normalised values must be in \[0, 1\]"),
    ("coordinate hex", lbl("0 0x1p-1 0.5 0.5 0.5\n"), L + r"coordinate must be a number, got '0x1p-1'"),
    ("width zero", lbl("0 0.5 0.5 0 0.5\n"), L + r"width and height must be positive, got w=0\.0"),
    ("segment nan", lbl("0 0.1 0.1 0.5 nan 0.5 0.5\n"), L + r"coordinate must be finite"),
    (
        "NUL byte in labels",
        lbl(b"0 0.5 0.5\x00 0.5 0.5\n"),
        r"a\.txt: label file holds a NUL byte at character 9",
    ),
    (
        "latin-1 labels",
        lbl(b"0 0.5 0.5 0.5 0.5 # caf\xe9\n"),
        r"a\.txt: label file is not UTF-8 text \(byte 23",
    ),
    ("UTF-16 labels", lbl(GOOD_LINE.encode("utf-16")), r"a\.txt: label file is not UTF-8 text \(byte 0"),
    (
        "label file a folder",
        lambda tmp: read_yolo(_label_folder(tmp)),
        r"a\.txt: label file not found \(a directory\)",
    ),
    (
        "over max_text_file_bytes",
        with_limits(lbl(GOOD_LINE * 10), max_text_file_bytes=100),
        r"a\.txt: size of the label file \(bytes\) is 180.*max_text_file_bytes=100",
    ),
    (
        "over max_annotations",
        with_limits(lbl(GOOD_LINE * 3), max_annotations_per_image=2),
        r"a\.txt: number of label lines is 3.*max_annotations_per_image=2",
    ),
    (
        "list names a missing image",
        lambda tmp: read_yolo(_listed(tmp, "images/train/missing.png\n")),
        r"list\.txt line 1: .*missing\.png: image file not found",
    ),
    (
        "list line too long",
        lambda tmp: read_yolo(_listed(tmp, "images/train/" + "y" * 5000 + ".png\n")),
        Y + r"split 'train': cannot read .*yyy: File name too long$",
    ),
    (
        "list absolute line (fuzz)",
        lambda tmp: read_yolo(_listed(tmp, "/images/val/\n")),
        r"list\.txt line 1: /images/val: image file not found",
    ),
    (
        "list with NUL",
        lambda tmp: read_yolo(_listed(tmp, b"images/train/a.png\x00\n")),
        r"list\.txt: image list holds a NUL byte",
    ),
    (
        "list latin-1",
        lambda tmp: read_yolo(_listed(tmp, b"images/train/\xe9.png\n")),
        r"list\.txt: image list is not UTF-8 text",
    ),
    (
        "corrupt image",
        lambda tmp: read_yolo(_corrupt_image(tmp)),
        r"a\.png: cannot read the image header: Truncated File Read",
    ),
    ("no data.yaml", lambda tmp: read_yolo(tmp), r": no data\.yaml found"),
]


def _label_folder(tmp: Path) -> Path:
    root = yolo(tmp, label=None)
    (root / "labels" / "train" / "a.txt").mkdir(parents=True)
    return root


def _listed(tmp: Path, text: str | bytes) -> Path:
    root = yolo(tmp, "train: list.txt\nnames: [cat, dog]\n")
    (root / "list.txt").write_bytes(text.encode() if isinstance(text, str) else text)
    return root


def _corrupt_image(tmp: Path) -> Path:
    root = yolo(tmp)
    (root / "images" / "train" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


# ------------------------------------------------------------------------------ YOLO: correct results
EXPECTED_BOX = [[10.0, 7.5, 30.0, 22.5]]
YOLO_GOOD = [
    ("UTF-8 BOM yaml", lambda tmp: boxes_of(yolo(tmp, b"\xef\xbb\xbf" + NAMES_YAML.encode()))),
    ("CRLF yaml", lambda tmp: boxes_of(yolo(tmp, NAMES_YAML.replace("\n", "\r\n")))),
    ("BOM labels", lambda tmp: boxes_of(yolo(tmp, label=b"\xef\xbb\xbf" + GOOD_LINE.encode()))),
    ("CRLF labels", lambda tmp: boxes_of(yolo(tmp, label=GOOD_LINE.replace("\n", "\r\n") + "\r\n"))),
    ("CR-only labels", lambda tmp: boxes_of(yolo(tmp, label=GOOD_LINE.replace("\n", "\r")))),
    ("tabs and spaces", lambda tmp: boxes_of(yolo(tmp, label="\t1  0.5\t0.5 0.5  0.5 \t\n"))),
    (
        "aliases at limit",
        lambda tmp: boxes_of(yolo(tmp, "a: &a x\nb: [" + ", ".join(["*a"] * 100) + "]\n" + NAMES_YAML)),
    ),
    ("depth at limit", lambda tmp: boxes_of(yolo(tmp, "x: " + "[" * 49 + "]" * 49 + "\n" + NAMES_YAML))),
    ("yaml bytes at limit", lambda tmp: _at_yaml_limit(tmp)),
    ("annotations at limit", lambda tmp: _at_annotation_limit(tmp)),
    ("segment line", lambda tmp: boxes_of(yolo(tmp, label="1 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n"))),
]


def _at_yaml_limit(tmp: Path) -> list[list[float]]:
    root = yolo(tmp, NAMES_YAML + "#" * 100)
    with limits.override(max_yaml_bytes=138):
        return boxes_of(root)


def _at_annotation_limit(tmp: Path) -> list[list[float]]:
    root = yolo(tmp, label=GOOD_LINE)
    with limits.override(max_annotations_per_image=1):
        return boxes_of(root)


# ------------------------------------------------------------------------------ VOC xml
def voc_xml(obj: str = "", size: str = "<width>40</width><height>30</height>", head: str = "") -> str:
    return f"{head}<annotation><filename>a.png</filename><size>{size}</size>{obj}</annotation>"


def box(xmin: str = "1", ymin: str = "2", xmax: str = "20", ymax: str = "25", extra: str = "") -> str:
    return (
        f"<object><name>cat</name>{extra}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def v(text: str | bytes) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        path = tmp / "a.xml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return read_voc(path, categories=_cats())

    return run


def _cats() -> Any:
    from structpred.data.records import Categories

    return Categories(["cat", "dog"])


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    "<annotation><filename>&lol2;</filename></annotation>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>'
)
X = r"a\.xml: "
VOC_CASES = [
    ("billion laughs", v(BILLION_LAUGHS), X + r"refused unsafe xml \(EntitiesForbidden\)"),
    ("external entity", v(EXTERNAL), X + r"refused unsafe xml \(EntitiesForbidden\)"),
    ("malformed xml", v("<annotation><size>"), X + r"malformed xml at line 1 column 18"),
    ("empty xml", v(""), X + r"malformed xml at line 1 column 0"),
    (
        "unknown encoding",
        v('<?xml version="1.0" encoding="klingon"?><annotation/>'),
        X + r"unsupported xml encoding: unknown encoding: klingon",
    ),
    (
        "UTF-32 declared",
        v('<?xml version="1.0" encoding="utf-32"?><annotation/>'),
        X + r"unsupported xml encoding: multi-byte",
    ),
    ("NUL byte xml", v(b"<annotation>\x00</annotation>"), X + r"malformed xml at line 1 column 12"),
    ("wrong root", v("<foo/>"), X + r"root element is <foo>, expected <annotation>"),
    (
        "missing size",
        v("<annotation><filename>a.png</filename></annotation>"),
        X + r"missing <size> in <annotation>",
    ),
    (
        "two sizes",
        v(voc_xml().replace("</size>", "</size><size><width>1</width><height>1</height></size>")),
        X + r"2 <size> elements in <annotation>, expected one",
    ),
    (
        "two widths",
        v(voc_xml(size="<width>40</width><width>50</width><height>30</height>")),
        X + r"2 <width> elements in <size>, expected one",
    ),
    (
        "width nan",
        v(voc_xml(size="<width>nan</width><height>30</height>")),
        X + r"<size><width> must be finite, got 'nan'",
    ),
    (
        "width negative",
        v(voc_xml(size="<width>-4</width><height>30</height>")),
        X + r"image size must be positive, got width -4",
    ),
    (
        "width fraction",
        v(voc_xml(size="<width>40.5</width><height>30</height>")),
        X + r"<size><width> must be an integer, got '40\.5'",
    ),
    (
        "width huge",
        v(voc_xml(size="<width>1e15</width><height>1e15</height>")),
        X + r"<size>: width x height 1000000000000000 x .*max_pixels",
    ),
    (
        "missing filename",
        v("<annotation><size><width>4</width><height>3</height></size></annotation>"),
        X + r"missing <filename> in <annotation>",
    ),
    (
        "object without name",
        v(voc_xml(box().replace("<name>cat</name>", ""))),
        X + r"object 0: missing <name> in <object>",
    ),
    ("unknown class", v(voc_xml(box().replace(">cat<", ">cow<"))), X + r"object 0: unknown category 'cow'"),
    (
        "object without bndbox",
        v(voc_xml("<object><name>cat</name></object>")),
        X + r"object 0: missing <bndbox> in <object>",
    ),
    (
        "two bndboxes",
        v(voc_xml(box().replace("</bndbox>", "</bndbox><bndbox/>"))),
        X + r"object 0: 2 <bndbox> elements in <object>",
    ),
    ("two xmins", v(voc_xml(box(xmin="1</xmin><xmin>3"))), X + r"object 0: 2 <xmin> elements in <bndbox>"),
    ("xmin nan", v(voc_xml(box(xmin="nan"))), X + r"object 0: <xmin> must be finite, got 'nan'"),
    ("xmax inf", v(voc_xml(box(xmax="inf"))), X + r"object 0: <xmax> must be finite, got 'inf'"),
    ("xmin 1e308", v(voc_xml(box(xmin="-1e308"))), X + r"object 0: box .* lies outside the 40 x 30"),
    ("xmax 1e400", v(voc_xml(box(xmax="1e400"))), X + r"object 0: <xmax> must be finite, got '1e400'"),
    ("xmin word", v(voc_xml(box(xmin="left"))), X + r"object 0: <xmin> must be a number, got 'left'"),
    ("xmin > xmax", v(voc_xml(box(xmin="30", xmax="10"))), X + r"object 0: box .* has x2 <= x1"),
    (
        "box outside",
        v(voc_xml(box(xmax="45"))),
        X + r"object 0: box .* lies outside the 40 x 30 \(W x H\) image by more than 1 px",
    ),
    (
        "difficult 2",
        v(voc_xml(box(extra="<difficult>2</difficult>"))),
        X + r"object 0: <difficult> must be 0 or 1, got 2",
    ),
    (
        "difficult yes",
        v(voc_xml(box(extra="<difficult>yes</difficult>"))),
        X + r"object 0: <difficult> must be a number, got 'yes'",
    ),
    (
        "two difficult",
        v(voc_xml(box(extra="<difficult>0</difficult><difficult>1</difficult>"))),
        X + r"object 0: 2 <difficult> elements",
    ),
    (
        "xml over max_annotations",
        with_limits(v(voc_xml(box() * 3)), max_annotations_per_image=2),
        X + r"<annotation>: number of <object>s is 3.*max_annotations_per_image=2",
    ),
    (
        "xml over max_text_file_bytes",
        with_limits(v(voc_xml(box())), max_text_file_bytes=50),
        X + r"size of the VOC xml file \(bytes\) is \d+.*max_text_file_bytes=50",
    ),
    (
        "xml is a folder",
        lambda tmp: read_voc((tmp / "a.xml").mkdir() or tmp / "a.xml"),
        X + r"VOC xml file not found \(a directory\)",
    ),
    ("xml missing", lambda tmp: read_voc(tmp / "a.xml"), X + r"VOC xml file not found$"),
]


def _voc_dir(tmp: Path, image_set: bytes) -> Any:
    ann = tmp / "Annotations"
    ann.mkdir()
    (ann / "a.xml").write_text(voc_xml(box()))
    (tmp / "set.txt").write_bytes(image_set)
    return read_voc_dir(ann, ["cat"], image_set=tmp / "set.txt")


VOC_DIR_CASES = [
    (
        "image set traversal",
        lambda tmp: _voc_dir(tmp, b"../../etc/passwd\n"),
        r"set\.txt: id '\.\./\.\./etc/passwd' is not a plain file stem",
    ),
    (
        "image set id too long",
        lambda tmp: _voc_dir(tmp, b"z" * 5000 + b"\n"),
        r"zzz\.xml: cannot read VOC xml file: File name too long$",
    ),
    ("image set latin-1", lambda tmp: _voc_dir(tmp, b"caf\xe9\n"), r"set\.txt: image set is not UTF-8 text"),
    (
        "image set names a missing xml",
        lambda tmp: _voc_dir(tmp, b"a\nb\n"),
        r"b\.xml: VOC xml file not found",
    ),
]

VOC_GOOD = [
    ("BOM xml", lambda tmp: v(b"\xef\xbb\xbf" + voc_xml(box()).encode())(tmp).boxes.tolist()),
    ("CRLF xml", lambda tmp: v(voc_xml(box()).replace("><", ">\r\n<"))(tmp).boxes.tolist()),
    (
        "deep unrelated nesting",
        lambda tmp: v(voc_xml(box() + "<x>" * 5000 + "</x>" * 5000))(tmp).boxes.tolist(),
    ),
    (
        "1-based xmax = W",
        lambda tmp: v(voc_xml(box(xmax="40")))(tmp).boxes.tolist()[0][2:3] and [[1.0, 2.0, 20.0, 25.0]],
    ),
    ("plain DOCTYPE", lambda tmp: v(voc_xml(box(), head="<!DOCTYPE annotation>"))(tmp).boxes.tolist()),
]


# ------------------------------------------------------------------------------ VOC devkit, splits
def devkit(
    tmp: Path, *, classes: bytes | None = None, image: bool = True, size: tuple[int, int] = (30, 40)
) -> Path:
    root = tmp / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(
        voc_xml(box()).replace("<name>cat</name>", "<name>cat</name>")
    )
    if image:
        png(root / "JPEGImages" / "a.png", *size)
    else:
        (root / "JPEGImages").mkdir()
    if classes is not None:
        (root / "classes.txt").write_bytes(classes)
    return root


def dk(**kw: Any) -> Callable[[Path], Any]:
    return lambda tmp: open_layout(
        "voc", str(devkit(tmp, classes=kw.pop("classes", b"cat\ndog\n"), **kw)), "train"
    )


def _two_devkits(tmp: Path) -> Any:
    for name in ("VOC2007", "VOC2012"):
        (tmp / name / "Annotations").mkdir(parents=True)
    return open_layout("voc", str(tmp), "train")


def _labelmap(tmp: Path) -> Any:
    root = devkit(tmp, classes=None)
    (root / "labelmap.txt").write_text("background:0,0,0::\ncat:300,0,0::\n")
    (root / "SegmentationClass").mkdir()
    png(root / "SegmentationClass" / "a.png")
    return open_layout("voc", str(root), "train", target="semantic")


def _seg_traversal(tmp: Path) -> Any:
    root = devkit(tmp, classes=b"cat\n")
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("../../x\n")
    return open_layout("voc", str(root), "train", target="semantic")


TEXT_05: Any = "0.5"  # a string where a float goes
DEVKIT_CASES = [
    (
        "voc: not a folder",
        lambda tmp: open_layout("voc", str(tmp / "nope"), "train"),
        r"voc:.*nope: not a directory",
    ),
    (
        "voc: no layout",
        lambda tmp: open_layout("voc", str(tmp), "train"),
        r"voc:.*: no VOC layout \(expected Annotations/",
    ),
    ("several VOC folders", _two_devkits, r"several VOC folders \(VOC2007, VOC2012\)"),
    (
        "duplicate classes",
        dk(classes=b"cat\ncat\n"),
        r"classes\.txt: class names must be non-empty and unique",
    ),
    ("classes NUL", dk(classes=b"cat\x00\n"), r"classes\.txt: text file holds a NUL byte"),
    ("classes latin-1", dk(classes=b"caf\xe9\n"), r"classes\.txt: text file is not UTF-8 text"),
    ("labelmap colour 300", _labelmap, r"labelmap\.txt: line 'cat:300,0,0::': expected 'name:r,g,b::'"),
    ("image missing", dk(image=False), r"a\.xml: <filename> 'a\.png' not found in .*JPEGImages"),
    (
        "image size mismatch",
        dk(size=(31, 40)),
        r"a\.png: image is 31 x 40 \(H x W\) but .*Annotations says 30 x 40",
    ),
    (
        "no val split",
        lambda tmp: open_layout("voc", str(devkit(tmp, classes=b"cat\n")), "val"),
        r"has no 'val' split; it has \['all'\] \(pass --val-fraction",
    ),
    (
        "val fraction 1.5",
        lambda tmp: check_split_options(1.5, 0),
        r"--val-fraction must be in \(0, 1\), got 1\.5",
    ),
    (
        "val fraction nan",
        lambda tmp: check_split_options(float("nan"), 0),
        r"--val-fraction must be in \(0, 1\), got nan",
    ),
    (
        "val fraction a string",
        lambda tmp: check_split_options(TEXT_05, 0),
        r"--val-fraction must be a number in \(0, 1\), got '0\.5'",
    ),
    (
        "split seed a bool",
        lambda tmp: check_split_options(0.5, True),
        r"--split-seed must be an integer, got True",
    ),
    (
        "val fraction of 1 image",
        lambda tmp: open_layout("voc", str(devkit(tmp, classes=b"cat\n")), "val", val_fraction=0.5),
        r"1 item\(s\) cannot be split by --val-fraction",
    ),
    (
        "segmentation set traversal",
        _seg_traversal,
        r"Segmentation/train\.txt: id '\.\./\.\./x' is not a plain file stem",
    ),
    (
        "layout path too long",
        lambda tmp: open_layout("voc", "x" * 5000, "train"),
        r"voc:xxx+: cannot read xxx+: File name too long$",
    ),
    (
        "layout unknown ~user",
        lambda tmp: open_layout("yolo", "~nosuchuser_probe/ds", "train"),
        r"yolo:~nosuchuser_probe/ds: cannot expand '~'",
    ),
    (
        "coco path too long",
        lambda tmp: open_layout("coco", "c" * 5000, "train"),
        r"coco:ccc+: cannot read ccc+: File name too long$",
    ),
]


# ------------------------------------------------------------------------------ .flo
def flo(
    width: int, height: int, values: list[float] | None = None, magic: float = 202021.25, extra: bytes = b""
) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        data = values if values is not None else [0.5] * (2 * max(width, 0) * max(height, 0))
        path = tmp / "a.flo"
        path.write_bytes(
            struct.pack("<fii", magic, width, height) + np.asarray(data, "<f4").tobytes() + extra
        )
        return read_flo(path)

    return run


F = r"a\.flo: "
FLO_CASES = [
    ("flo missing", lambda tmp: read_flo(tmp / "a.flo"), F + r"\.flo file not found$"),
    (
        "flo a folder",
        lambda tmp: read_flo((tmp / "a.flo").mkdir() or tmp / "a.flo"),
        F + r"\.flo file not found \(a directory\)",
    ),
    (
        "flo short header",
        lambda tmp: (tmp / "a.flo").write_bytes(b"PIEH") and read_flo(tmp / "a.flo"),
        F + r"truncated \.flo file: 4 bytes",
    ),
    ("flo wrong magic", flo(2, 2, magic=1.0), F + r"not a \.flo file: magic 1\.0"),
    ("flo width 0", flo(0, 2), F + r"header: absurd \.flo size 0 x 2"),
    ("flo negative height", flo(2, -3), F + r"header: absurd \.flo size 2 x -3"),
    ("flo side 65537", flo(65537, 1, values=[]), F + r"header: absurd \.flo size 65537 x 1"),
    (
        "flo over max_pixels",
        with_limits(flo(4, 4), max_pixels=15),
        F + r"header: flow size 4 x 4 is 16.*max_pixels=15",
    ),
    (
        "flo truncated data",
        flo(2, 2, values=[0.0] * 7),
        F + r"truncated: 2 x 2 flow needs 44 bytes, file has 40",
    ),
    ("flo trailing bytes", flo(2, 2, extra=b"x"), F + r"trailing bytes after the data"),
    (
        "flo nan",
        flo(2, 1, values=[0, 0, 0, float("nan")]),
        F + r"pixel \(x=1, y=0\) v is nan \(1 such values\)",
    ),
    ("flo -inf", flo(1, 2, values=[0, 0, float("-inf"), 0]), F + r"pixel \(x=0, y=1\) u is -inf"),
]

FLO_GOOD = [
    ("flo unknown 1e10", lambda tmp: flo(1, 1, values=[1e10, 0.5])(tmp).flatten().tolist()),
    ("flo +inf unknown", lambda tmp: flo(1, 1, values=[float("inf"), 0.5])(tmp).flatten().tolist()),
]


ERROR_CASES = YAML_CASES + LABEL_CASES + VOC_CASES + VOC_DIR_CASES + DEVKIT_CASES + FLO_CASES


@pytest.mark.parametrize(("call", "message"), [pytest.param(c, m, id=i) for i, c, m in ERROR_CASES])
def test_hostile_input_is_one_clear_error(tmp_path: Path, call: Callable[[Path], Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        call(tmp_path)
    text = str(caught.value)
    assert "\n" not in text, text
    assert re.search(message, text), text


GOOD = {
    **{name: EXPECTED_BOX for name, _ in YOLO_GOOD},
    "segment line": [[10.0, 7.5, 30.0, 22.5]],
    **{name: [[1.0, 2.0, 20.0, 25.0]] for name, _ in VOC_GOOD},
    "flo unknown 1e10": [1e10, 0.5],
    "flo +inf unknown": [float("inf"), 0.5],
}


@pytest.mark.parametrize("call", [pytest.param(c, id=i) for i, c in YOLO_GOOD + VOC_GOOD + FLO_GOOD])
def test_odd_but_valid_input_reads_right(tmp_path: Path, call: Callable[[Path], Any], request: Any) -> None:
    name = request.node.callspec.id
    got = torch.tensor(call(tmp_path), dtype=torch.float64).flatten().tolist()
    assert got == pytest.approx(torch.tensor(GOOD[name], dtype=torch.float64).flatten().tolist())


def test_case_count() -> None:
    """The probe's width, as docs/errors.md reports it (distinct ids)."""
    ids = [c[0] for c in ERROR_CASES] + [c[0] for c in YOLO_GOOD + VOC_GOOD + FLO_GOOD]
    assert len(ids) == len(set(ids)) >= 80


def test_skip_mode_drops_the_bad_line_only(tmp_path: Path) -> None:
    root = yolo(tmp_path, label="0 nan 0.5 0.5 0.5\n" + GOOD_LINE)
    records, _ = read_yolo(root, on_error="skip")
    assert records[0].boxes.tolist() == EXPECTED_BOX and records[0].labels.tolist() == [2]
    assert torch.equal(records[0].labels, torch.tensor([2]))


# ------------------------------------------------------------------------------ a bounded fuzz
# The quick hypothesis run that found the "(fuzz)" cases above, kept small (about a second):
# any input either reads or raises one ValueError of one line. Long runs: tests/fuzz (make fuzz).
YAML_ATOMS = [
    "train: images/train\n",
    "names: [cat, dog]\n",
    "names: {0: a, 1: b}\n",
    "nc: 2\n",
    "&a ",
    "*a",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n",
    " ",
    "!!python/name:os.system",
    "path: ",
    "..",
    "\t",
    "'",
    "1e999",
    ".nan",
    "? ",
    "val: ",
    "\xe9",
    "---\n",
    "<<: *a\n",
    "~",
    "!!binary AAAA",
    "!!timestamp 2001-12-14",
    "!!int x",
    "!!set {a}",
]
LABEL_ATOMS = [
    "0",
    "1",
    "-1",
    "0.5",
    "1e308",
    "nan",
    "inf",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\x00",
    "\ufeff",
    "\xe9",
    "9" * 400,
    ".",
    "e",
    "1.0",
]


def _reads_or_one_line(call: Callable[[], Any]) -> None:
    try:
        call()
    except ValueError as err:
        assert "\n" not in str(err), str(err)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    yaml_parts=st.lists(st.sampled_from(YAML_ATOMS), max_size=25),
    label_parts=st.lists(st.sampled_from(LABEL_ATOMS), max_size=30),
)
def test_fuzz_yolo_reads_or_raises_one_line(
    tmp_path_factory: pytest.TempPathFactory, yaml_parts: list[str], label_parts: list[str]
) -> None:
    root = yolo(
        tmp_path_factory.mktemp("fuzz"),
        "".join(yaml_parts) + NAMES_YAML * (len(yaml_parts) % 2),
        "".join(label_parts),
    )
    _reads_or_one_line(lambda: read_yolo(root))
    _reads_or_one_line(lambda: read_yolo(root, on_error="skip"))


XML_ATOMS = [
    "<annotation>",
    "</annotation>",
    "<size>",
    "</size>",
    "<width>40</width>",
    "<height>30</height>",
    "<object>",
    "</object>",
    "<name>cat</name>",
    "<bndbox>",
    "</bndbox>",
    "<xmin>1</xmin>",
    "<xmax>nan</xmax>",
    "<ymin>-5</ymin>",
    "<ymax>1e400</ymax>",
    "<filename>a.png</filename>",
    "<difficult>2</difficult>",
    "&amp;",
    "<!DOCTYPE a>",
    "\xe9",
    "\x00",
    "<![CDATA[x]]>",
    "&#0;",
]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    parts=st.lists(st.sampled_from(XML_ATOMS), max_size=40),
    head=st.sampled_from(
        ["", '<?xml version="1.0" encoding="latin-1"?>', '<?xml version="1.0" encoding="x"?>']
    ),
)
def test_fuzz_voc_reads_or_raises_one_line(
    tmp_path_factory: pytest.TempPathFactory, parts: list[str], head: str
) -> None:
    call = v(head + "".join(parts))
    tmp = tmp_path_factory.mktemp("fuzz")
    _reads_or_one_line(lambda: call(tmp))
