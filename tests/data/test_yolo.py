"""YOLO txt + data.yaml: hand-written datasets, round trips, names as list and dict, broken files.

Reference: a label line ``c cx cy w h`` is the box ``((cx - w/2) W, (cy - h/2) H, (cx + w/2) W,
(cy + h/2) H)`` with label ``c + 1``, written out here per line.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data.datasets import from_yolo
from structpred.data.formats import read_yolo, write_yolo
from structpred.data.records import Categories, ImageRecord

NAMES = ["cat", "dog", "tree"]


def save_png(path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_dataset(tmp_path, labels: dict[str, str], yaml_text: str | None = None, sizes=None):
    """``root/images/train/<stem>.png`` (default 30 x 40) and ``root/labels/train/<stem>.txt``."""
    root = tmp_path / "ds"
    sizes = sizes or {}
    for i, (stem, text) in enumerate(labels.items()):
        save_png(root / "images" / "train" / f"{stem}.png", *sizes.get(stem, (30, 40)), seed=i)
        if text is not None:
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    if yaml_text is None:
        yaml_text = "train: images/train\nnames: [cat, dog, tree]\n"
    (root / "data.yaml").write_text(yaml_text)
    return root


def reference_box(line: str, height: int, width: int) -> tuple[int, list[float]]:
    c, cx, cy, w, h = line.split()
    cx, cy, w, h = float(cx), float(cy), float(w), float(h)
    return int(c) + 1, [
        (cx - w / 2) * width,
        (cy - h / 2) * height,
        (cx + w / 2) * width,
        (cy + h / 2) * height,
    ]


def test_reads_hand_written_dataset(tmp_path):
    lines_a = ["1 0.5 0.5 0.25 0.5", "0 0.125 0.2 0.25 0.4", "2 0.5 0.5 1 1"]
    root = make_dataset(
        tmp_path, {"a": "\n".join(lines_a) + "\n\n", "b": "", "c": None}, sizes={"b": (16, 24)}
    )
    records, cats = read_yolo(root)
    assert cats.names == NAMES and cats.ids == [1, 2, 3]
    assert [r.file_name for r in records] == [
        "images/train/a.png",
        "images/train/b.png",
        "images/train/c.png",
    ]
    assert [r.image_id for r in records] == [0, 1, 2]
    assert [(r.height, r.width) for r in records] == [(30, 40), (16, 24), (30, 40)]  # from the image
    expected = [reference_box(line, 30, 40) for line in lines_a]
    assert records[0].labels.tolist() == [c for c, _ in expected]
    assert torch.allclose(records[0].boxes, torch.tensor([b for _, b in expected]), atol=1e-4)
    for r in records[1:]:  # empty label file, no label file: no objects
        assert r.boxes.shape == (0, 4) and r.labels.shape == (0,)


@pytest.mark.parametrize(
    "names",
    [
        "names: [cat, dog, tree]",
        "names: {0: cat, 1: dog, 2: tree}",
        "names: {'2': tree, '0': cat, '1': dog}",
        "nc: 3\nnames:\n  - cat\n  - dog\n  - tree",
    ],
    ids=["list", "dict", "dict-str-keys", "nc-and-block-list"],
)
def test_names_as_list_and_dict(tmp_path, names):
    root = make_dataset(tmp_path, {"a": "2 0.5 0.5 0.5 0.5\n"}, yaml_text=f"train: images/train\n{names}\n")
    records, cats = read_yolo(root / "data.yaml")
    assert cats.names == NAMES and records[0].labels.tolist() == [3]


def test_path_key_and_list_file(tmp_path):
    root = make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.5 0.5 0.5 0.5\n"})
    (root / "val.txt").write_text("images/train/b.png\n\nimages/train/a.png\n")
    (tmp_path / "data.yaml").write_text("path: ds\nval: val.txt\nnames: [cat, dog, tree]\n")
    records, _ = read_yolo(tmp_path / "data.yaml", split="val")
    assert [r.file_name for r in records] == ["ds/images/train/b.png", "ds/images/train/a.png"]
    assert [r.labels.tolist() for r in records] == [[2], [1]]


def test_round_trip(tmp_path):
    source = tmp_path / "src"
    save_png(source / "x" / "a.png", 37, 53, seed=1)
    save_png(source / "b.png", 20, 10, seed=2)
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(5, 2, generator=gen) * torch.tensor([40.0, 30.0])
    wh = torch.rand(5, 2, generator=gen) * torch.tensor([12.0, 6.0]) + 0.5
    boxes_a = torch.cat([xy, xy + wh], dim=1)
    boxes_a[0] = torch.tensor([0.0, 0.0, 53.0, 37.0])  # the whole image
    records = [
        ImageRecord("x/a.png", 37, 53, boxes_a, torch.tensor([1, 2, 3, 1, 2])),
        ImageRecord("b.png", 20, 10, torch.tensor([[0.3, 0.7, 9.9, 19.1]]), torch.tensor([3])),
    ]
    yaml_path = write_yolo(records, Categories(NAMES), tmp_path / "out", split="val", image_source=source)
    assert yaml_path == tmp_path / "out" / "data.yaml"
    assert (tmp_path / "out" / "labels" / "val" / "x" / "a.txt").is_file()
    back, cats = read_yolo(tmp_path / "out", split="val")
    assert cats.names == NAMES
    by_name = {r.file_name: r for r in back}
    assert sorted(by_name) == ["images/val/b.png", "images/val/x/a.png"]
    for original, name in zip(records, ["images/val/x/a.png", "images/val/b.png"], strict=True):
        r = by_name[name]
        assert (r.height, r.width) == (original.height, original.width)
        assert torch.equal(r.labels, original.labels)
        assert (r.boxes - original.boxes).abs().max() < 1e-3
    # a second split keeps the first and must use the same names
    write_yolo(records[1:], Categories(NAMES), tmp_path / "out", split="train", image_source=source)
    assert len(read_yolo(tmp_path / "out", split="val")[0]) == 2
    assert len(read_yolo(tmp_path / "out", split="train")[0]) == 1
    with pytest.raises(ValueError, match="data.yaml: exists with other class names"):
        write_yolo(records[1:], Categories(["a", "b", "c"]), tmp_path / "out", image_source=source)


def test_round_trip_no_records(tmp_path):
    write_yolo([], Categories(NAMES), tmp_path / "out", split="test")
    records, cats = read_yolo(tmp_path / "out", split="test")
    assert records == [] and cats.names == NAMES


def test_write_leaves_out_crowds_with_a_warning(tmp_path, caplog):
    save_png(tmp_path / "src" / "a.png", 10, 10)
    record = ImageRecord(
        "a.png", 10, 10, torch.tensor([[0.0, 0.0, 5.0, 5.0], [2.0, 2.0, 8.0, 9.0]]), torch.tensor([1, 2]),
        iscrowd=torch.tensor([1, 0], dtype=torch.uint8),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        write_yolo([record], Categories(NAMES), tmp_path / "out", image_source=tmp_path / "src")
    assert "1 crowd object(s) left out" in caplog.text
    (back,), _ = read_yolo(tmp_path / "out")
    assert back.labels.tolist() == [2] and torch.allclose(back.boxes, record.boxes[1:], atol=1e-4)


def test_write_errors(tmp_path):
    record = ImageRecord("a.png", 10, 10, torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"record 0 \(a.png\): image .*src/a.png not found"):
        write_yolo([record], Categories(NAMES), tmp_path / "out", image_source=tmp_path / "src")
    with pytest.raises(ValueError, match=r"record 0 \(a.png\): image .*a.png not found \(image_source=None"):
        write_yolo([record], Categories(NAMES), tmp_path / "out")
    save_png(tmp_path / "src" / "a.png", 10, 10)
    outside = ImageRecord("a.png", 10, 10, torch.tensor([[0.0, 0.0, 5.0, 10.5]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="outside the 10 x 10"):
        write_yolo([outside], Categories(NAMES), tmp_path / "out", image_source=tmp_path / "src")


def test_from_yolo_dataset(tmp_path):
    root = make_dataset(tmp_path, {"a": "1 0.5 0.5 0.25 0.5\n"})
    for source in (root, root / "data.yaml"):
        dataset = from_yolo(source)
        image, target = dataset[0]
        assert image.shape == (3, 30, 40)
        expected = np.asarray(Image.open(root / "images" / "train" / "a.png"), dtype=np.float32) / 255
        assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))
        assert target["labels"].tolist() == [2] and target["boxes"].tolist() == [[15.0, 7.5, 25.0, 22.5]]


# ------------------------------------------------------------------------ broken files

BAD_LINES = {
    "4 fields": ("0 0.5 0.5 0.2", r"expected 5 fields 'class cx cy w h' or a segment .*, got 4"),
    "6 fields (segment)": ("0 0.5 0.5 0.2 0.2 0.1", r"expected 5 fields .* or a segment .*, got 6"),
    "class too big": ("3 0.5 0.5 0.2 0.2", "class 3 outside 0..2"),
    "negative class": ("-1 0.5 0.5 0.2 0.2", "class -1 outside 0..2"),
    "float class": ("1.5 0.5 0.5 0.2 0.2", "class must be an integer"),
    "text class": ("dog 0.5 0.5 0.2 0.2", "class must be a number"),
    "text coordinate": ("1 0.5 half 0.2 0.2", "coordinate must be a number, got 'half'"),
    "nan coordinate": ("1 0.5 nan 0.2 0.2", "coordinate must be finite"),
    "cx > 1": ("1 1.5 0.5 0.2 0.2", r"normalised values must be in \[0, 1\]"),
    "w > 1": ("1 0.5 0.5 1.2 0.2", r"normalised values must be in \[0, 1\]"),
    "pixel coordinates": ("1 20 15 8 4", r"normalised values must be in \[0, 1\]"),
    "negative cy": ("1 0.5 -0.1 0.2 0.2", r"normalised values must be in \[0, 1\]"),
    "zero width": ("1 0.5 0.5 0 0.2", "width and height must be positive"),
    "box over the edge": (
        "1 0.95 0.5 0.5 0.2",
        r"box \[28.0, 12.0, 48.0, 18.0\] \(xyxy\) lies outside the 40 x 30",
    ),
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_bad_label_lines(tmp_path, name):
    line, match = BAD_LINES[name]
    root = make_dataset(tmp_path, {"a": f"0 0.5 0.5 0.2 0.2\n\n{line}\n"})
    with pytest.raises(ValueError, match=f"labels/train/a.txt line 3: {match}"):
        read_yolo(root)


def test_skip_bad_lines(tmp_path, caplog):
    text = "0 0.5 0.5 0.5 0.5\n5 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.5 0.5\n2 0.5 0.5 0.2\n"
    root = make_dataset(tmp_path, {"a": text, "b": "2 0.5 0.5 1 1\n"})
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        records, _ = read_yolo(root, on_error="skip")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "labels/train/a.txt line 2: class 5 outside 0..2" in messages[0]
    assert "labels/train/a.txt line 4: expected 5 fields" in messages[1]
    assert records[0].labels.tolist() == [1, 2]
    assert records[0].boxes.tolist() == [[10.0, 7.5, 30.0, 22.5], [0.0, 0.0, 20.0, 15.0]]
    assert records[1].boxes.tolist() == [[0.0, 0.0, 40.0, 30.0]]


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("train: images/train\nnames: [cat, dog\n", "data.yaml: malformed yaml"),
        ("- train\n- names\n", "data.yaml: top level must be a mapping"),
        ("train: images/train\n", "data.yaml: 'names' must be a non-empty list"),
        ("train: images/train\nnames: []\n", "data.yaml: 'names' must be a non-empty list"),
        (
            "train: images/train\nnames: {0: cat, 2: dog}\n",
            r"data.yaml: names keys must be .* 0..1, got \[0, 2\]",
        ),
        ("train: images/train\nnames: {a: cat}\n", "data.yaml: names: class index must be a number"),
        ("train: images/train\nnc: 2\nnames: [cat, dog, tree]\n", "data.yaml: nc = 2 but 3 names"),
        ("val: images/train\nnames: [cat]\n", r"data.yaml: no split 'train'; splits present: \['val'\]"),
        ("train: nowhere\nnames: [cat]\n", "data.yaml: split path .*nowhere is neither a directory"),
        ("train: 3\nnames: [cat]\n", "data.yaml: split entries must be paths"),
        ("path: 3\ntrain: images/train\nnames: [cat]\n", "data.yaml: 'path' must be a string"),
    ],
)
def test_bad_yaml(tmp_path, yaml_text, match):
    root = make_dataset(tmp_path, {"a": ""}, yaml_text=yaml_text)
    with pytest.raises(ValueError, match=match):
        read_yolo(root)


def test_missing_data_yaml(tmp_path):
    root = make_dataset(tmp_path, {"a": ""})
    (root / "data.yaml").unlink()
    with pytest.raises(ValueError, match="ds: no data.yaml found"):
        read_yolo(root)
    with pytest.raises(ValueError, match="nope: no data.yaml found"):
        read_yolo(tmp_path / "nope")


def test_missing_and_broken_images(tmp_path, caplog):
    root = make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    (root / "list.txt").write_text("images/train/a.png\nimages/train/gone.png\n")
    (root / "data.yaml").write_text("train: list.txt\nnames: [cat]\n")
    with pytest.raises(ValueError, match="gone.png: image file not found"):
        read_yolo(root)
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        records, _ = read_yolo(root, on_error="skip")
    assert [r.file_name for r in records] == ["images/train/a.png"]
    assert "gone.png: image file not found" in caplog.text
    (root / "images" / "train" / "junk.png").write_bytes(b"not an image")
    (root / "data.yaml").write_text("train: images/train\nnames: [cat]\n")
    with pytest.raises(ValueError, match="junk.png: not a readable image file"):
        read_yolo(root)


def test_unreadable_list_file(tmp_path):
    root = make_dataset(tmp_path, {"a": ""}, yaml_text="train: list.txt\nnames: [cat]\n")
    (root / "list.txt").write_bytes(b"\xff\xfe\x00images")
    with pytest.raises(ValueError, match="list.txt: image list is not UTF-8"):
        read_yolo(root)


def test_bad_on_error(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        read_yolo(make_dataset(tmp_path, {"a": ""}), on_error="continue")
