"""Pascal VOC xml: round trips, directories with class names / maps / image sets, broken files.

Files are written here by hand from the VOC layout (``<annotation><filename><size><object>``
with ``<name>``, ``<difficult>``, ``<bndbox><xmin>...``), so the reader is checked against the
format rather than against our writer only.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import pytest
import torch

from structpred.data.formats import VOC_CLASSES, read_voc, read_voc_dir, write_voc
from structpred.data.records import Categories, ImageRecord


def obj_xml(name: str, box=(1, 2, 30, 20), difficult: str | None = "0", bndbox: bool = True) -> str:
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
    inner = f"<bndbox>{coords}</bndbox>" if bndbox else ""
    return f"<object><name>{name}</name><pose>Unspecified</pose>{flag}{inner}</object>"


def voc_xml(objects: list[str], width: int = 40, height: int = 30, filename: str = "a.jpg") -> str:
    return (
        f"<annotation><folder>VOC2012</folder><filename>{filename}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{''.join(objects)}</annotation>"
    )


def write_text(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


CATS = Categories(["cat", "dog", "tree"])


def test_reads_hand_written_file(tmp_path):
    path = write_text(
        tmp_path / "a.xml",
        voc_xml([obj_xml("dog", (1, 2, 30, 20)), obj_xml("cat", (0.5, 3.25, 40, 30), difficult="1")]),
    )
    record = read_voc(path, CATS, image_id=9)
    assert record.file_name == "a.jpg" and (record.height, record.width) == (30, 40)
    assert record.image_id == 9
    assert record.boxes.tolist() == [[1.0, 2.0, 30.0, 20.0], [0.5, 3.25, 40.0, 30.0]]
    assert record.labels.tolist() == [2, 1] and record.labels.dtype == torch.int64
    assert record.difficult.tolist() == [0, 1]


def test_default_categories_are_voc_classes(tmp_path):
    path = write_text(tmp_path / "a.xml", voc_xml([obj_xml("person"), obj_xml("aeroplane", difficult=None)]))
    record = read_voc(path)
    assert len(VOC_CLASSES) == 20
    assert record.labels.tolist() == [15, 1] and record.difficult.tolist() == [0, 0]


def test_one_based_full_image_box_is_clipped(tmp_path):
    # original VOC files: 1-based inclusive, so xmax = W (+1 px overshoot tolerated and clipped)
    path = write_text(tmp_path / "a.xml", voc_xml([obj_xml("cat", (1, 1, 41, 31))]))
    assert read_voc(path, CATS).boxes.tolist() == [[1.0, 1.0, 40.0, 30.0]]


def test_round_trip(tmp_path):
    record = ImageRecord(
        "sub/img 1.png",
        30,
        40,
        torch.tensor([[0.1, 0.2, 39.9, 29.7], [3.0, 4.0, 5.0, 6.0], [0.0, 0.0, 40.0, 30.0]]),
        torch.tensor([3, 1, 2]),
        difficult=torch.tensor([0, 1, 0], dtype=torch.uint8),
        iscrowd=torch.tensor([0, 0, 1], dtype=torch.uint8),
    )
    path = tmp_path / "out" / "a.xml"
    write_voc(record, CATS, path)
    back = read_voc(path, CATS)
    assert back.file_name == "sub/img 1.png" and (back.height, back.width) == (30, 40)
    assert torch.equal(back.boxes, record.boxes)  # float32 values read back exactly
    assert torch.equal(back.labels, record.labels)
    assert back.difficult.tolist() == [0, 1, 1]  # crowd becomes difficult
    root = ET.parse(path).getroot()
    assert [o.findtext("name") for o in root.iter("object")] == ["tree", "cat", "dog"]


def test_round_trip_empty_record(tmp_path):
    write_voc(ImageRecord.empty("e.png", 5, 6), CATS, tmp_path / "e.xml")
    back = read_voc(tmp_path / "e.xml", CATS)
    assert back.boxes.shape == (0, 4) and back.labels.shape == (0,) and (back.height, back.width) == (5, 6)


def test_write_rejects_bad_records(tmp_path):
    outside = ImageRecord("a.png", 10, 10, torch.tensor([[0.0, 0.0, 12.0, 5.0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="x.xml: object 0 box .* outside the 10 x 10"):
        write_voc(outside, CATS, tmp_path / "x.xml")
    label = ImageRecord("a.png", 10, 10, torch.tensor([[0.0, 0.0, 2.0, 5.0]]), torch.tensor([4]))
    with pytest.raises(ValueError, match="x.xml: object 0 has label 4, outside 1..3"):
        write_voc(label, CATS, tmp_path / "x.xml")
    assert not (tmp_path / "x.xml").exists()


# ------------------------------------------------------------------------ directories


def make_dir(tmp_path):
    ann = tmp_path / "Annotations"
    write_text(ann / "b.xml", voc_xml([obj_xml("Dead"), obj_xml("Alive", (5, 5, 9, 9))], filename="b.jpg"))
    write_text(ann / "a.xml", voc_xml([obj_xml("Alive")], filename="a.jpg"))
    write_text(ann / "c.xml", voc_xml([obj_xml("Bush")], filename="c.jpg"))
    return ann


def test_read_dir_collects_sorted_names(tmp_path):
    records, cats = read_voc_dir(make_dir(tmp_path))
    assert cats.names == ["Alive", "Bush", "Dead"]
    assert [r.file_name for r in records] == ["a.jpg", "b.jpg", "c.jpg"]  # files sorted by name
    assert [r.image_id for r in records] == [0, 1, 2]
    assert [r.labels.tolist() for r in records] == [[1], [3, 1], [2]]


def test_read_dir_class_names_fix_labels(tmp_path):
    records, cats = read_voc_dir(make_dir(tmp_path), class_names=["Bush", "Dead", "Alive", "Unseen"])
    assert cats.names == ["Bush", "Dead", "Alive", "Unseen"]
    assert [r.labels.tolist() for r in records] == [[3], [2, 3], [1]]


def test_read_dir_class_map_merges(tmp_path):
    class_map = {"Alive": "Tree", "Dead": "Tree"}
    records, cats = read_voc_dir(make_dir(tmp_path), class_map=class_map)
    assert cats.names == ["Bush", "Tree"]
    assert [r.labels.tolist() for r in records] == [[2], [2, 2], [1]]
    records, cats = read_voc_dir(make_dir(tmp_path), class_names=["Tree", "Bush"], class_map=class_map)
    assert [r.labels.tolist() for r in records] == [[1], [1, 1], [2]]


def test_read_dir_image_set(tmp_path):
    ann = make_dir(tmp_path)
    image_set = write_text(tmp_path / "ImageSets" / "Main" / "val.txt", "c\n\nb  1\n")  # stem [flag]
    records, _ = read_voc_dir(ann, class_names=["Alive", "Bush", "Dead"], image_set=image_set)
    assert [r.file_name for r in records] == ["c.jpg", "b.jpg"]  # in the set's order
    assert [r.image_id for r in records] == [0, 1]


def test_read_dir_errors(tmp_path):
    ann = make_dir(tmp_path)
    with pytest.raises(ValueError, match="nope: VOC annotation directory not found"):
        read_voc_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match="set.txt: image set file not found"):
        read_voc_dir(ann, image_set=tmp_path / "set.txt")
    image_set = write_text(tmp_path / "set.txt", "a\nmissing\n")
    with pytest.raises(ValueError, match="missing.xml: VOC xml file not found"):
        read_voc_dir(ann, image_set=image_set)
    with pytest.raises(ValueError, match="c.xml: object 0: unknown category 'Bush'"):
        read_voc_dir(ann, class_names=["Alive", "Dead"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no object names found; pass class_names"):
        read_voc_dir(empty)
    with pytest.raises(ValueError, match="categories is empty"):
        read_voc_dir(ann, class_names=[])


def test_read_dir_skip_bad_file_and_object(tmp_path, caplog):
    ann = make_dir(tmp_path)
    write_text(ann / "d.xml", "<annotation><filename>d.jpg</filename>")  # truncated
    write_text(ann / "e.xml", voc_xml([obj_xml("Bush", (9, 1, 3, 5)), obj_xml("Dead")], filename="e.jpg"))
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        records, cats = read_voc_dir(ann, on_error="skip")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "d.xml: malformed xml" in messages[0]
    assert "e.xml: object 0:" in messages[1] and "x2 <= x1" in messages[1]
    assert [r.file_name for r in records] == ["a.jpg", "b.jpg", "c.jpg", "e.jpg"]
    assert records[3].labels.tolist() == [cats.label_of_name("Dead")]
    assert records[3].boxes.tolist() == [[1.0, 2.0, 30.0, 20.0]]
    with pytest.raises(ValueError, match="d.xml: malformed xml"):
        read_voc_dir(ann)


# ------------------------------------------------------------------------ broken files

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>&lol9;</filename><size><width>4</width><height>4</height></size></annotation>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<annotation><filename>&secret;</filename><size><width>4</width><height>4</height></size></annotation>
"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external"])
def test_entities_refused(tmp_path, text):
    path = write_text(tmp_path / "evil.xml", text)
    with pytest.raises(ValueError, match="evil.xml: refused unsafe xml \\(EntitiesForbidden\\)"):
        read_voc(path, CATS)
    ann = tmp_path
    with pytest.raises(ValueError, match="evil.xml: refused unsafe xml"):
        read_voc_dir(ann, class_names=["cat"])


BAD_FILES = {
    "truncated": ("<annotation><filename>a.jpg</filename><size>", "malformed xml at line 1"),
    "empty": ("", "malformed xml"),
    "mismatched tag": ("<annotation>\n<filename>a.jpg</name>\n</annotation>", "malformed xml at line 2"),
    "wrong root": ("<doc><filename>a.jpg</filename></doc>", "root element is <doc>, expected <annotation>"),
    "no filename": (voc_xml([]).replace("<filename>a.jpg</filename>", ""), "missing <filename>"),
    "no size": ("<annotation><filename>a.jpg</filename></annotation>", "missing <size>"),
    "no width": (voc_xml([]).replace("<width>40</width>", ""), "missing <width> in <size>"),
    "text width": (
        voc_xml([]).replace("<width>40</width>", "<width>wide</width>"),
        "<width> must be a number",
    ),
    "zero height": (voc_xml([], height=0), "image size must be positive"),
    "no bndbox": (voc_xml([obj_xml("cat", bndbox=False)]), "object 0: missing <bndbox>"),
    "no name": (voc_xml([obj_xml("cat").replace("<name>cat</name>", "")]), "object 0: missing <name>"),
    "no xmax": (voc_xml([obj_xml("cat", ("1", "2", "", "4"))]), "object 0: missing <xmax> in <bndbox>"),
    "text xmin": (voc_xml([obj_xml("cat", ("a", "2", "3", "4"))]), "object 0: <xmin> must be a number"),
    "xmax < xmin": (voc_xml([obj_xml("dog"), obj_xml("cat", (20, 2, 10, 9))]), "object 1: .*x2 <= x1"),
    "ymax = ymin": (voc_xml([obj_xml("cat", (1, 9, 10, 9))]), "object 0: .*y2 <= y1"),
    "right of size": (voc_xml([obj_xml("cat", (1, 2, 45, 9))]), "object 0: .*outside the 40 x 30"),
    "below size": (voc_xml([obj_xml("cat", (1, 2, 5, 32))]), "object 0: .*outside the 40 x 30"),
    "negative": (voc_xml([obj_xml("cat", (-3, 2, 5, 9))]), "object 0: .*outside the 40 x 30"),
    "nan": (voc_xml([obj_xml("cat", ("nan", 2, 5, 9))]), "object 0: <xmin> must be finite"),
    "unknown class": (voc_xml([obj_xml("horse")]), "object 0: unknown category 'horse'"),
    "difficult 2": (voc_xml([obj_xml("cat", difficult="2")]), "object 0: <difficult> must be 0 or 1"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files(tmp_path, name):
    text, match = BAD_FILES[name]
    path = write_text(tmp_path / "bad.xml", text)
    with pytest.raises(ValueError, match=match) as info:
        read_voc(path, CATS)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="nope.xml: VOC xml file not found"):
        read_voc(tmp_path / "nope.xml", CATS)
    path = write_text(tmp_path / "a.xml", voc_xml([]))
    with pytest.raises(ValueError, match="on_error"):
        read_voc(path, CATS, on_error="warn")
    with pytest.raises(ValueError, match="categories is empty"):
        read_voc(path, Categories([]))


def test_skip_bad_object(tmp_path, caplog):
    objects = [obj_xml("dog"), obj_xml("horse"), obj_xml("cat", (1, 2, 45, 9)), obj_xml("tree", (3, 4, 5, 6))]
    path = write_text(tmp_path / "a.xml", voc_xml(objects))
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        record = read_voc(path, CATS, on_error="skip")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "a.xml: object 1: unknown category 'horse'" in messages[0]
    assert "a.xml: object 2:" in messages[1] and "outside" in messages[1]
    assert record.labels.tolist() == [2, 3] and record.difficult.tolist() == [0, 0]
    assert record.boxes.tolist() == [[1.0, 2.0, 30.0, 20.0], [3.0, 4.0, 5.0, 6.0]]


def test_skip_still_raises_on_file_level_problems(tmp_path):
    path = write_text(tmp_path / "a.xml", "<annotation><filename>a.jpg</filename></annotation>")
    with pytest.raises(ValueError, match="a.xml: missing <size>"):
        read_voc(path, CATS, on_error="skip")
