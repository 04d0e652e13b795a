"""Fuzz targets and limits of the layout readers: whatever bytes, json or yaml sit where a layout
expects its files, opening it raises ``ValueError`` (one line) or succeeds, never another
exception or a hang; absurd sizes and counts give a clear error or finish in bounded time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structpred.data import build_dataset
from tests.data import layout_builders as lb

# A bounded run in the suite; STRUCTPRED_FUZZ_EXAMPLES=2000 for a long, randomised one.
LONG = int(os.environ.get("STRUCTPRED_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=LONG or 40,
    deadline=None if LONG else 2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=not LONG,
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
KEYS = ["images", "annotations", "categories", "id", "file_name", "height", "width", "image_id",
        "category_id", "bbox", "segmentation", "name", "iscrowd", "size", "counts"]  # fmt: skip
COCO_LIKE = st.recursive(
    st.integers(-3, 70)
    | st.floats(-5, 100, allow_nan=False)
    | st.sampled_from(["000000000000.jpg", "x", ""]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    max_leaves=40,
)


def _open_all(spec: str, **kwargs) -> None:
    for split in ("train", "val"):
        try:
            data = build_dataset(spec, split, **kwargs)
        except ValueError as err:
            assert "\n" not in str(err), str(err)
            return
        for i in range(min(len(data), 2)):
            data[i]  # what construction accepted reads


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    return lb.coco2017(tmp_path / "coco", n_train=1, n_val=1)


@FUZZ
@given(content=st.one_of(JSON, COCO_LIKE))
def test_fuzz_coco_tree_json(coco: Path, content: object) -> None:
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps(content))
    _open_all(f"coco:{coco}", task="instance_segmentation")


@FUZZ
@given(content=st.binary(max_size=200))
def test_fuzz_coco_tree_bytes(coco: Path, content: bytes) -> None:
    (coco / "annotations" / "instances_val2017.json").write_bytes(content)
    _open_all(f"coco:{coco}")


@FUZZ
@given(content=st.binary(max_size=300), target=st.sampled_from(["xml", "set", "png", "classes", "jpg"]))
def test_fuzz_voc_devkit(tmp_path: Path, content: bytes, target: str) -> None:
    voc = tmp_path / "ds" / "VOCdevkit" / "VOC2012"
    if not voc.is_dir():
        lb.voc_devkit(tmp_path / "ds", n_train=1, n_val=1)
    path = {
        "xml": voc / "Annotations" / "2012_000000.xml",
        "set": voc / "ImageSets" / "Segmentation" / "train.txt",
        "png": voc / "SegmentationClass" / "2012_000000.png",
        "classes": voc / "classes.txt",
        "jpg": voc / "JPEGImages" / "2012_000000.jpg",
    }[target]
    original = path.read_bytes() if path.is_file() else None
    path.write_bytes(content)
    try:
        _open_all(f"voc:{voc}")
        _open_all(f"voc:{voc}", task="semantic_segmentation")
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)


YAML_VALUES = st.recursive(
    st.none() | st.integers(-2, 5) | st.sampled_from(["train/images", "../valid/images", "x.txt", "cat", ""]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.integers(-1, 3) | st.text(max_size=3), inner)
    ),
    max_leaves=12,
)


@FUZZ
@given(
    doc=st.dictionaries(
        st.sampled_from(["path", "train", "val", "valid", "test", "nc", "names"]), YAML_VALUES
    ),
    raw=st.one_of(st.none(), st.text(max_size=80)),
)
def test_fuzz_yolo_yaml(tmp_path: Path, doc: dict, raw: str | None) -> None:
    root = tmp_path / "ds"
    if not root.is_dir():
        lb.yolo_roboflow(root, n_train=1, n_val=1)
    text = raw if raw is not None else yaml.safe_dump(doc)
    (root / "data.yaml").write_text(text, encoding="utf-8")
    _open_all(f"yolo:{root}")


@FUZZ
@given(content=st.binary(max_size=300), target=st.sampled_from(["mask", "classes", "image", "label"]))
def test_fuzz_mask_folders_and_yolo_labels(tmp_path: Path, content: bytes, target: str) -> None:
    root = tmp_path / "m"
    if not root.is_dir():
        lb.mask_folders(root, n_train=2, n_val=1)
        lb.yolo_roboflow(tmp_path / "y", n_train=1, n_val=1)
    path = {
        "mask": root / "masks" / "train" / "p000.png",
        "classes": root / "classes.txt",
        "image": root / "images" / "val" / "p002.jpg",
        "label": tmp_path / "y" / "train" / "labels" / "img0.txt",
    }[target]
    original = path.read_bytes()
    path.write_bytes(content)
    try:
        _open_all(f"masks:{root}")
        _open_all(f"yolo:{tmp_path / 'y'}")
    finally:
        path.write_bytes(original)


# ----------------------------------------------------------------------------------- limits
def test_json_claiming_a_huge_image_is_a_size_error(coco: Path) -> None:
    ann = coco / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    data["images"][0]["height"] = data["images"][0]["width"] = 10**9
    data["annotations"][0]["segmentation"] = {"size": [10**9, 10**9], "counts": [10**18]}
    ann.write_text(json.dumps(data))
    # the pixel limit (structpred.data.limits) refuses it before the image file is even opened
    match = r"instances_train2017.json: images\[0\]: .*1000000000 x 1000000000 .*over the limit max_pixels"
    with pytest.raises(ValueError, match=match):
        build_dataset(f"coco:{coco}", "train", task="instance_segmentation")


@pytest.mark.slow
def test_many_annotations_on_one_image_read_in_bounded_time(coco: Path) -> None:
    ann = coco / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    n = 100_000
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 40, (n, 2)).tolist()
    data["annotations"] = [
        {"id": k + 1, "image_id": data["images"][0]["id"], "category_id": 1 + k % 2, "bbox": [x, y, 4, 4]}
        for k, (x, y) in enumerate(xy)
    ]
    ann.write_text(json.dumps(data))
    train = build_dataset(f"coco:{coco}", "train")
    _, target = train[0]
    assert target["boxes"].shape == (n, 4)


def test_many_image_files_are_checked_from_headers(tmp_path: Path) -> None:
    root = lb.coco_cvat(tmp_path / "c", n=1)
    data = json.loads((root / "annotations" / "instances_default.json").read_text())
    image = (root / "images" / "frame_000000.jpg").read_bytes()
    data["images"] = [dict(data["images"][0], id=k, file_name=f"f{k}.jpg") for k in range(500)]
    data["annotations"] = []
    for k in range(500):
        (root / "images" / f"f{k}.jpg").write_bytes(image)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    assert len(build_dataset(f"coco:{root}", "train")) == 500
