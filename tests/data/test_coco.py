"""COCO json: round trips (boxes, ids, crowds, polygons, RLE) against pycocotools, broken files.

References: masks are decoded by ``pycocotools.mask`` from the same segmentation; uncompressed
RLE is built here by a loop over the mask in column-major order (COCO's run convention: counts
alternate 0-runs and 1-runs, starting with 0s).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from structpred.data.datasets import from_coco
from structpred.data.formats import (
    check_segmentation,
    mask_to_rle,
    read_coco,
    segmentation_to_mask,
    write_coco,
)
from structpred.data.images import write_image
from structpred.data.records import Categories, ImageRecord


def naive_uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a binary ``(H, W)`` mask, from the definition."""
    height, width = mask.shape
    counts, current, run = [], 0, 0
    for x in range(width):  # column-major: down each column, then the next
        for y in range(height):
            if int(mask[y, x] != 0) == current:
                run += 1
            else:
                counts.append(run)
                current, run = 1 - current, 1
    counts.append(run)
    return {"size": [height, width], "counts": counts}


def coco_decode(seg, height: int, width: int) -> np.ndarray:
    """pycocotools' mask of a segmentation (polygons, uncompressed or compressed RLE)."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    return mask_utils.decode(rle)


def random_mask(height: int, width: int, seed: int, p: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width)) < p).astype(np.uint8)


def blob_mask(height: int, width: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


# Edge cases for RLE: empty, full, one pixel, long runs (multi-group and negative diffs).
MASKS = [
    np.zeros((5, 7), dtype=np.uint8),
    np.ones((5, 7), dtype=np.uint8),
    blob_mask(9, 11, 4, 3, 5, 4),
    blob_mask(40, 300, 3, 0, 290, 40),
    random_mask(37, 53, seed=0),
    random_mask(64, 48, seed=1, p=0.05),
    random_mask(1, 1, seed=2, p=1.0),
]


@pytest.mark.parametrize("mask", MASKS, ids=range(len(MASKS)))
def test_mask_to_rle_matches_pycocotools(mask):
    rle = mask_to_rle(torch.from_numpy(mask))
    reference = mask_utils.encode(np.asfortranarray(mask))
    assert rle["size"] == list(mask.shape)
    assert rle["counts"] == reference["counts"].decode("ascii")
    json.dumps(rle)  # json-ready
    back = segmentation_to_mask(rle, *mask.shape)
    assert back.dtype == torch.uint8 and np.array_equal(back.numpy(), mask)


@pytest.mark.parametrize("mask", MASKS, ids=range(len(MASKS)))
def test_uncompressed_rle_decodes_like_pycocotools(mask):
    rle = naive_uncompressed_rle(mask)
    ours = segmentation_to_mask(rle, *mask.shape).numpy()
    assert np.array_equal(ours, coco_decode(rle, *mask.shape))
    assert np.array_equal(ours, mask)


def test_mask_to_rle_nonzero_is_inside():
    mask = torch.tensor([[0, 3], [-1, 0]])
    assert segmentation_to_mask(mask_to_rle(mask), 2, 2).tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize(
    "polygons",
    [
        [[2.0, 2.0, 20.0, 3.0, 11.0, 17.5]],
        [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0], [15.5, 12.0, 28.0, 12.0, 20.0, 22.0]],
        [[-5.0, -5.0, 40.0, -5.0, 40.0, 30.0]],  # overshoots the image: rasterised clipped
    ],
)
def test_polygon_to_mask_matches_pycocotools(polygons):
    ours = segmentation_to_mask(polygons, 24, 31).numpy()
    assert ours.shape == (24, 31) and ours.sum() > 0
    assert np.array_equal(ours, coco_decode(polygons, 24, 31))


def test_empty_segmentation_is_an_empty_mask():
    assert segmentation_to_mask([], 3, 4).tolist() == [[0] * 4] * 3


@pytest.mark.parametrize(
    "seg, match",
    [
        ([[1.0, 2.0, 3.0, 4.0]], "even number"),
        ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]], "even number"),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "polygon 0 must be a list"),
        ([[1.0, 2.0, "x", 4.0, 5.0, 6.0]], "coordinate must be a number"),
        ([[1.0, 2.0, float("nan"), 4.0, 5.0, 6.0]], "finite"),
        ({"size": [4, 5], "counts": [20]}, "RLE size"),
        ({"size": [5, 4], "counts": [10, 5]}, "sum to H \\* W = 20"),
        ({"size": [5, 4], "counts": [25, -5]}, "non-negative"),
        ({"size": [5, 4], "counts": 20}, "string or a list"),
        ({"size": [5, 4], "counts": "0 "}, "invalid character"),
        ({"size": [5, 4], "counts": "f"}, "end inside a number"),  # 'f' = 54: 'more' bit set
        ("polygon", "polygons \\(list\\) or RLE \\(dict\\)"),
        (
            [[1.0, 2.0, 2.08e8, 3.52e8, 5.0, 6.0]],
            "vertex 1 .* more than one image size outside",
        ),  # cocoapi#380
        ([[1.0, 2.0, 8.01, 1.0, 5.0, 6.0]], "vertex 1"),  # x > 2W for W = 4
        ([[0.0, 0.0, 4.0, 5.0] * 3000], "outline .* over 1000 x \\(H \\+ W\\)"),
        ({"size": [5, 4], "counts": [2**40, 20 - 2**40]}, "non-negative"),
    ],
)
def test_bad_segmentation(seg, match):
    with pytest.raises(ValueError, match=match):
        check_segmentation(seg, 5, 4)
    with pytest.raises(ValueError, match=match):
        segmentation_to_mask(seg, 5, 4)


# ------------------------------------------------------------------------ round trips


def two_records() -> tuple[list[ImageRecord], Categories]:
    categories = Categories(["cat", "dog", "bird"], ids=[3, 17, 90])  # non-contiguous ids
    polygon = [[2.0, 2.0, 20.0, 3.0, 11.0, 17.5]]
    crowd_mask = blob_mask(30, 40, 5, 6, 25, 20)
    a = ImageRecord(
        "img/a.png",
        30,
        40,
        torch.tensor([[2.0, 2.0, 20.0, 17.5], [5.0, 6.0, 25.0, 20.0], [0.25, 0.5, 40.0, 30.0]]),
        torch.tensor([1, 3, 2]),
        image_id=42,
        iscrowd=torch.tensor([0, 1, 0], dtype=torch.uint8),
        segmentations=[
            polygon,
            naive_uncompressed_rle(crowd_mask),  # crowd: uncompressed RLE, as in COCO
            mask_to_rle(torch.from_numpy(random_mask(30, 40, seed=3))),  # compressed string
        ],
    )
    b = ImageRecord.empty("img/b.png", 10, 12, image_id=7)
    b.segmentations = []
    return [a, b], categories


def test_round_trip_with_segmentations(tmp_path):
    records, categories = two_records()
    path = tmp_path / "ann" / "instances.json"
    write_coco(records, categories, path)
    back, cats = read_coco(path)
    assert cats.names == ["cat", "dog", "bird"] and cats.ids == [3, 17, 90]
    assert [r.file_name for r in back] == ["img/a.png", "img/b.png"]
    assert [r.image_id for r in back] == [42, 7]
    assert [(r.height, r.width) for r in back] == [(30, 40), (10, 12)]
    a = back[0]
    assert torch.equal(a.boxes, records[0].boxes) and a.boxes.dtype == torch.float32
    assert torch.equal(a.labels, records[0].labels) and a.labels.dtype == torch.int64
    assert torch.equal(a.iscrowd, records[0].iscrowd)
    assert a.segmentations is not None and len(a.segmentations) == 3
    for ours, original in zip(a.segmentations, records[0].segmentations, strict=True):
        mask = segmentation_to_mask(ours, 30, 40).numpy()
        assert np.array_equal(mask, coco_decode(original, 30, 40))
    assert back[1].boxes.shape == (0, 4) and back[1].labels.shape == (0,)


def test_written_file_is_plain_coco(tmp_path):
    records, categories = two_records()
    write_coco(records, categories, tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["categories"] == [
        {"id": 3, "name": "cat"},
        {"id": 17, "name": "dog"},
        {"id": 90, "name": "bird"},
    ]
    anns = data["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3] and {a["image_id"] for a in anns} == {42}
    assert [a["category_id"] for a in anns] == [3, 90, 17]  # labels 1, 3, 2 -> COCO ids
    assert anns[0]["bbox"] == [2.0, 2.0, 18.0, 15.5]  # xywh
    assert [a["iscrowd"] for a in anns] == [0, 1, 0]
    assert anns[1]["area"] == 20 * 14  # the mask's pixel area, not the box's


def test_round_trip_without_segmentations(tmp_path):
    record = ImageRecord("x.jpg", 20, 20, torch.tensor([[1.5, 2.25, 10.125, 19.0]]), torch.tensor([1]), 5)
    write_coco([record], Categories(["thing"]), tmp_path / "c.json")
    (back,), cats = read_coco(tmp_path / "c.json")
    assert back.segmentations is None and cats.ids == [1]
    assert torch.equal(back.boxes, record.boxes) and back.iscrowd.tolist() == [0]


def test_from_coco_items_with_masks(tmp_path):
    records, categories = two_records()
    write_coco(records, categories, tmp_path / "ann.json")
    images = [torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(0)), torch.zeros(3, 10, 12)]
    for record, image in zip(records, images, strict=True):
        write_image(tmp_path / record.file_name, image)
    dataset = from_coco(tmp_path / "ann.json", tmp_path, with_masks=True)
    assert len(dataset) == 2 and dataset.categories.ids == [3, 17, 90]
    image, target = dataset[0]
    assert torch.equal(image, (images[0] * 255).round() / 255)
    assert torch.equal(target["boxes"], records[0].boxes) and target["labels"].tolist() == [1, 3, 2]
    assert target["image_id"].item() == 42 and target["iscrowd"].tolist() == [0, 1, 0]
    assert target["masks"].shape == (3, 30, 40) and target["masks"].dtype == torch.uint8
    for mask, seg in zip(target["masks"], records[0].segmentations, strict=True):
        assert np.array_equal(mask.numpy(), coco_decode(seg, 30, 40))
    assert dataset[1][1]["masks"].shape == (0, 10, 12)


def test_from_coco_masks_need_segmentations(tmp_path):
    data = coco_dict()
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, torch.zeros(3, 30, 40))
    with pytest.raises(ValueError, match=r"records\[0\] \(a.png\) has no segmentations"):
        from_coco(write_json(tmp_path, data), tmp_path, with_masks=True)
    data["annotations"][0]["segmentation"] = [[1, 2, 10, 2, 5, 9]]  # the others get [] (no polygon)
    dataset = from_coco(write_json(tmp_path, data), tmp_path, with_masks=True)
    with pytest.raises(ValueError, match="a.png: object 1 has an empty segmentation"):
        dataset[0]


def test_categories_sorted_by_id(tmp_path):
    data = coco_dict()
    data["categories"] = [{"id": 9, "name": "z"}, {"id": 2, "name": "a"}]
    for ann, category_id in zip(data["annotations"], [9, 2, 9], strict=True):
        ann["category_id"] = category_id
    (record, *_), cats = read_coco(write_json(tmp_path, data))
    assert cats.names == ["a", "z"] and cats.ids == [2, 9] and record.labels.tolist() == [2, 1]


@pytest.mark.parametrize(
    "record, match",
    [
        (ImageRecord("a.png", 10, 10, torch.tensor([[0.0, 0.0, 11.0, 5.0]]), torch.tensor([1])), "outside"),
        (
            ImageRecord("a.png", 10, 10, torch.tensor([[5.0, 0.0, 4.0, 5.0]]), torch.tensor([1])),
            "invalid box",
        ),
        (
            ImageRecord("a.png", 10, 10, torch.tensor([[0.0, 0.0, 4.0, 5.0]]), torch.tensor([2])),
            "outside 1..1",
        ),
    ],
)
def test_write_rejects_bad_records(tmp_path, record, match):
    with pytest.raises(ValueError, match=f"record 0 \\(a.png\\).*{match}"):
        write_coco([record], Categories(["thing"]), tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_write_rejects_duplicate_image_ids(tmp_path):
    records = [ImageRecord.empty("a.png", 4, 4, image_id=1), ImageRecord.empty("b.png", 4, 4, image_id=1)]
    with pytest.raises(ValueError, match="record 1 \\(b.png\\): duplicate image id 1"):
        write_coco(records, Categories(["thing"]), tmp_path / "c.json")


# ------------------------------------------------------------------------ broken files


def coco_dict() -> dict:
    """A valid file: two 40 x 30 images, three annotations (ids 11, 12, 13)."""
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 30, "width": 40},
            {"id": 2, "file_name": "b.png", "height": 30, "width": 40},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 8], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 6, "bbox": [20, 10, 5, 5], "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 5, "bbox": [0, 0, 40, 30], "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "a"}, {"id": 6, "name": "b"}],
    }


def write_json(tmp_path, data, name: str = "bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_valid_fixture_reads(tmp_path):
    records, cats = read_coco(write_json(tmp_path, coco_dict(), "good.json"))
    assert cats.ids == [5, 6] and [r.file_name for r in records] == ["a.png", "b.png"]
    assert records[0].boxes.tolist() == [[1.0, 2.0, 11.0, 10.0], [20.0, 10.0, 25.0, 15.0]]
    assert records[0].labels.tolist() == [1, 2] and records[1].labels.tolist() == [1]
    assert records[0].segmentations is None


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(ValueError, match="bad.json: malformed json at line 2"):
        read_coco(path)


def test_missing_file_and_bad_top_level(tmp_path):
    with pytest.raises(ValueError, match="nope.json: COCO json file not found"):
        read_coco(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="bad.json: top level must be a json object"):
        read_coco(write_json(tmp_path, [1, 2]))
    with pytest.raises(ValueError, match="on_error"):
        read_coco(write_json(tmp_path, coco_dict()), on_error="ignore")


def edit(change):
    data = coco_dict()
    change(data)
    return data


def set_ann(key, value, index=1):
    return lambda d: d["annotations"][index].__setitem__(key, value)


def del_ann(key, index=1):
    return lambda d: d["annotations"][index].pop(key)


BAD_FILES = {
    "unknown category id": (set_ann("category_id", 99), "annotation id 12 .*unknown category id 99"),
    "negative width": (set_ann("bbox", [20, 10, -5, 5]), "annotation id 12 .*non-positive width or height"),
    "zero height": (set_ann("bbox", [20, 10, 5, 0]), "annotation id 12 .*non-positive width or height"),
    "box right of image": (set_ann("bbox", [30, 10, 15, 5]), "annotation id 12 .*outside the 40 x 30"),
    "box above image": (set_ann("bbox", [20, -3, 5, 5]), "annotation id 12 .*outside the 40 x 30"),
    "box beyond image": (set_ann("bbox", [50, 40, 5, 5]), "annotation id 12 .*outside the 40 x 30"),
    "bbox of 3 values": (set_ann("bbox", [1, 2, 3]), "annotation id 12 .*bbox must be a list"),
    "non-numeric bbox": (set_ann("bbox", [1, 2, "w", 3]), "annotation id 12 .*bbox value must be a number"),
    "infinite bbox": (
        set_ann("bbox", [1, 2, float("inf"), 3]),
        "annotation id 12 .*bbox value must be finite",
    ),
    "unknown image id": (set_ann("image_id", 3), "annotation id 12 .*unknown image id 3"),
    "iscrowd 2": (set_ann("iscrowd", 2), "annotation id 12 .*iscrowd must be 0 or 1"),
    "bad segmentation": (set_ann("segmentation", [[1, 2, 3, 4]]), "annotation id 12 .*polygon 0"),
    "RLE of other size": (
        set_ann("segmentation", {"size": [30, 30], "counts": [900]}),
        "annotation id 12 .*RLE size",
    ),
    "no bbox": (del_ann("bbox"), "annotation id 12 .*bbox must be a list.*None"),
    "no category_id": (del_ann("category_id"), "annotation id 12 .*category_id must be a number"),
    "no image_id": (del_ann("image_id"), "annotation id 12 .*image_id must be a number"),
    "list image_id": (set_ann("image_id", [1]), r"annotation id 12 .*image_id must be a number, got \[1\]"),
    "annotation not an object": (lambda d: d["annotations"].__setitem__(1, [1]), r"annotations\[1\]"),
    "duplicate annotation id": (set_ann("id", 11), "annotation id 11 .*duplicate annotation id 11"),
    "list annotation id": (set_ann("id", [12]), r"annotation id \[12\] .*annotation id must be a number"),
    "no file_name": (lambda d: d["images"][1].pop("file_name"), r"images\[1\].*file_name"),
    "no height": (lambda d: d["images"][1].pop("height"), r"images\[1\].*height must be a number"),
    "zero width": (lambda d: d["images"][1].__setitem__("width", 0), r"images\[1\].*size must be positive"),
    "duplicate image id": (
        lambda d: d["images"][1].__setitem__("id", 1),
        r"images\[1\].*duplicate image id 1",
    ),
    "no categories": (lambda d: d.pop("categories"), "'categories' must be a non-empty list"),
    "no category name": (lambda d: d["categories"][1].pop("name"), r"categories\[1\].*string 'name'"),
    "duplicate category id": (
        lambda d: d["categories"][1].__setitem__("id", 5),
        "category ids must be unique",
    ),
    "no images": (lambda d: d.pop("images"), "'images' and 'annotations' must be lists"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files(tmp_path, name):
    change, match = BAD_FILES[name]
    path = write_json(tmp_path, edit(change))
    with pytest.raises(ValueError, match=match) as info:
        read_coco(path)
    assert str(path) in str(info.value)


def test_overshoot_within_one_pixel_is_clipped(tmp_path):
    path = write_json(tmp_path, edit(set_ann("bbox", [-0.5, 10, 40.5, 5])))
    records, _ = read_coco(path)
    assert records[0].boxes[1].tolist() == [0.0, 10.0, 40.0, 15.0]


# ------------------------------------------------------------------------ on_error="skip"


def test_skip_bad_annotation(tmp_path, caplog):
    path = write_json(tmp_path, edit(set_ann("category_id", 99)))
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        records, _ = read_coco(path, on_error="skip")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "bad.json" in message and "annotation id 12" in message and "unknown category id 99" in message
    assert [r.image_id for r in records] == [1, 2]
    assert records[0].boxes.tolist() == [[1.0, 2.0, 11.0, 10.0]]  # annotation 11 stays
    assert records[0].labels.tolist() == [1] and records[0].iscrowd.tolist() == [0]
    assert records[1].boxes.tolist() == [[0.0, 0.0, 40.0, 30.0]]


def test_skip_bad_image_drops_its_annotations(tmp_path, caplog):
    path = write_json(tmp_path, edit(lambda d: d["images"][1].pop("file_name")))
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        records, _ = read_coco(path, on_error="skip")
    assert len(caplog.records) == 1 and "images[1]" in caplog.records[0].getMessage()
    assert [r.image_id for r in records] == [1]
    assert records[0].labels.tolist() == [1, 2]


def test_skip_duplicate_image_id_drops_both_images(tmp_path, caplog):
    # Annotations on image id 1 cannot be told apart: neither image may keep (or lose) them silently.
    path = write_json(tmp_path, edit(lambda d: d["images"][1].__setitem__("id", 1)))
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        records, _ = read_coco(path, on_error="skip")
    assert records == []
    assert any("duplicate image id 1" in r.getMessage() for r in caplog.records)


def test_skip_duplicate_annotation_id_keeps_the_first(tmp_path, caplog):
    path = write_json(tmp_path, edit(set_ann("id", 11, index=2)))
    with caplog.at_level(logging.WARNING, logger="structpred.data.formats"):
        records, _ = read_coco(path, on_error="skip")
    assert len(caplog.records) == 1 and "duplicate annotation id 11" in caplog.records[0].getMessage()
    assert records[0].labels.tolist() == [1, 2] and records[1].labels.tolist() == []


def test_skip_still_raises_on_file_level_problems(tmp_path):
    with pytest.raises(ValueError, match="'categories' must be a non-empty list"):
        read_coco(write_json(tmp_path, edit(lambda d: d.pop("categories"))), on_error="skip")


def test_areas_are_read_kept_in_the_dataset_targets_and_written_back(tmp_path) -> None:
    """COCO's own ``area`` (what COCOeval sorts into small / medium / large) reaches the target."""
    write_image(tmp_path / "a.png", torch.zeros(3, 40, 50))
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": 40, "width": 50}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20], "area": 123.5, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [5, 5, 4, 4], "area": 0, "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "x"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    records, categories = read_coco(tmp_path / "a.json")
    assert records[0].areas is not None and records[0].areas.tolist() == [123.5, 0.0]
    _, target = from_coco(tmp_path / "a.json", tmp_path)[0]
    assert target["area"].tolist() == [123.5, 0.0] and target["area"].dtype == torch.float32
    write_coco(records, categories, tmp_path / "b.json")
    assert [a["area"] for a in json.loads((tmp_path / "b.json").read_text())["annotations"]] == [123.5, 0.0]
    # one object without an area: none are kept (the metric falls back to its own rule for all)
    del data["annotations"][1]["area"]
    (tmp_path / "a.json").write_text(json.dumps(data))
    assert read_coco(tmp_path / "a.json")[0][0].areas is None
    data["annotations"][0]["area"] = -1
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotation id 1 .*area must be >= 0"):
        read_coco(tmp_path / "a.json")


def test_vertices_up_to_one_image_size_outside_are_kept_and_clipped() -> None:
    ring = [-4.0, -5.0, 8.0, -5.0, 8.0, 2.5, -4.0, 2.5]  # W = 4, H = 5: the bounds themselves
    mask = segmentation_to_mask(check_segmentation([ring], 5, 4), 5, 4)
    assert mask[:2].all() and not mask[3:].any()


def test_from_coco_refuses_a_missing_image_when_built(tmp_path):
    write_image(tmp_path / "a.png", torch.zeros(3, 30, 40))  # b.png is missing
    with pytest.raises(ValueError, match=r"b\.png: image file not found"):
        from_coco(write_json(tmp_path, coco_dict()), tmp_path)
