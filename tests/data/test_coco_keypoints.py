"""COCO keypoint files (person_keypoints_*.json) into the keypoint contract: reading, alignment, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from structpred.data import limits
from structpred.data.coco_keypoints import COCO_PERSON_KEYPOINTS, CocoKeypoints
from structpred.data.formats.coco_keypoints import read_coco_keypoints
from structpred.data.images import write_image
from structpred.data.registry import build_dataset
from structpred.data.transforms import hflip

NAMES = ["nose", "left_eye", "right_eye"]


def _file(tmp_path: Path, anns: list[dict[str, Any]] | None = None, **category: Any) -> Path:
    """A 2-image keypoint json (images 40 x 30 written next to it) with ``anns``."""
    for i in (1, 2):
        write_image(tmp_path / f"im{i}.png", torch.rand(3, 30, 40))
    cat = {"id": 1, "name": "person", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]], **category}
    if anns is None:
        anns = [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 20, 15], "area": 200.0, "iscrowd": 0,
             "keypoints": [5, 6, 2, 10, 7, 1, 0, 0, 0], "num_keypoints": 2},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 90.0, "iscrowd": 0,
             "keypoints": [0, 0, 0, 0, 0, 0, 0, 0, 0], "num_keypoints": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [20, 10, 15, 12], "area": 150.0, "iscrowd": 0,
             "keypoints": [25, 12, 2, 22, 11, 2, 30, 11.5, 2], "num_keypoints": 3},
        ]  # fmt: skip
    data = {
        "images": [{"id": 1, "file_name": "im1.png", "height": 30, "width": 40},
                   {"id": 2, "file_name": "im2.png", "height": 30, "width": 40}],
        "annotations": anns,
        "categories": [cat],
    }  # fmt: skip
    path = tmp_path / "person_keypoints_all.json"
    path.write_text(json.dumps(data))
    return path


def test_reads_keypoints_aligned_with_the_objects(tmp_path: Path) -> None:
    records, categories, keypoints, info = read_coco_keypoints(_file(tmp_path))
    assert categories.names == ["person"] and info.names == NAMES
    assert info.skeleton == [(0, 1), (0, 2)] and info.flip == [0, 2, 1]
    assert [len(r.labels) for r in records] == [2, 1] and [k.shape for k in keypoints] == [
        (2, 3, 3),
        (1, 3, 3),
    ]
    assert keypoints[0][1].tolist() == [
        [25, 12, 2],
        [22, 11, 2],
        [30, 11.5, 2],
    ]  # annotation 3: image 1's 2nd
    assert records[0].boxes[1].tolist() == [20, 10, 35, 22]
    assert keypoints[1].sum() == 0


def test_dataset_items_flip_and_data_spec(tmp_path: Path) -> None:
    path = _file(tmp_path)
    ds = build_dataset(f"coco_keypoints:{path}", "all")
    assert isinstance(ds, CocoKeypoints) and ds.keypoint_names == NAMES and ds.keypoint_sigmas == [0.05] * 3
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and target["keypoints"].shape == (2, 3, 3)
    assert target["area"].tolist() == [200.0, 150.0]
    _, flipped = hflip(image, target, ds.keypoint_flip)
    # left_eye (10, 7, v=1) becomes the right eye at x = 40 - 10; nose stays
    assert flipped["keypoints"][0].tolist() == [[35, 6, 2], [0, 0, 0], [30, 7, 1]]
    val = build_dataset(f"coco_keypoints:{tmp_path}", "val", val_fraction=0.5)  # a directory, carved
    assert len(val) == 1 and val.keypoint_names == NAMES


def test_coco_person_files_get_coco_sigmas(tmp_path: Path) -> None:
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 20, 15], "area": 1.0,
             "keypoints": [5, 6, 2] * 17, "num_keypoints": 17}]  # fmt: skip
    ds = CocoKeypoints(_file(tmp_path, anns, keypoints=list(COCO_PERSON_KEYPOINTS), skeleton=[]))
    assert ds.keypoint_sigmas[0] == pytest.approx(0.026) and len(ds.keypoint_sigmas) == 17
    assert ds.keypoint_flip[1:3] == [2, 1]


def _bad(field: str, value: Any) -> list[dict[str, Any]]:
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [2, 3, 20, 15], "iscrowd": 0,
           "keypoints": [5, 6, 2, 10, 7, 1, 0, 0, 0], "num_keypoints": 2}  # fmt: skip
    ann[field] = value
    return [ann]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("keypoints", [1, 2, 2], r"must be a list of 3 \* K = 9 numbers, got 3 values"),
        ("keypoints", "abc", "must be a list of 3 \\* K = 9 numbers"),
        ("keypoints", [5, 6, 3, 10, 7, 1, 0, 0, 0], "visibility must be 0, 1 or 2, got 3"),
        ("keypoints", [5, 6, 2, 10, 7, 1, 0, 0, 0.5], "visibility must be 0, 1 or 2"),
        ("keypoints", [5, 6, 2, 1e4, 7, 1, 0, 0, 0], "far outside"),
        ("keypoints", [5, 6, 2, "x", 7, 1, 0, 0, 0], "keypoints' value"),
        ("num_keypoints", 3, "'num_keypoints' is 3 but 2 points are labelled"),
    ],
)
def test_bad_annotation_is_one_line_error_naming_file_id_and_field(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    path = _file(tmp_path, _bad(field, value))
    with pytest.raises(ValueError, match=message) as err:
        read_coco_keypoints(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "annotation id 7" in text


def test_nan_keypoint_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, _bad("keypoints", [5, 6, 2, float("nan"), 7, 1, 0, 0, 0]))  # json.dumps writes NaN
    with pytest.raises(ValueError, match="finite"):
        read_coco_keypoints(path)


def test_skip_mode_drops_the_bad_object_only(tmp_path: Path) -> None:
    good = json.loads(_file(tmp_path).read_text())["annotations"]
    anns = [*good[:1], *_bad("num_keypoints", 3), *good[1:]]
    records, _, keypoints, _ = read_coco_keypoints(_file(tmp_path, anns), on_error="skip")
    assert [len(r.labels) for r in records] == [2, 1]
    assert keypoints[0][1, 0].tolist() == [25, 12, 2]  # annotation 3 still on the right object


@pytest.mark.parametrize(
    ("category", "message"),
    [
        ({"keypoints": []}, "'keypoints' must be a non-empty list of names"),
        ({"skeleton": [[1, 4]]}, r"skeleton\[0\] must be \[a, b\] with 1 <= a, b <= 3"),
        ({"keypoints": None}, "no category has 'keypoints'"),
    ],
)
def test_bad_categories(tmp_path: Path, category: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_coco_keypoints(_file(tmp_path, [], **category))


def test_keypoint_count_limit(tmp_path: Path) -> None:
    path = _file(tmp_path, [], keypoints=[f"p{i}" for i in range(12)], skeleton=[])
    with (
        limits.override(max_keypoints_per_object=10),
        pytest.raises(limits.LimitError, match="max_keypoints_per_object"),
    ):
        read_coco_keypoints(path)
    assert len(read_coco_keypoints(path)[3].names) == 12  # under the default limit
