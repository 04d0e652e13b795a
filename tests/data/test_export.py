"""export_dataset / open_export: the shapes world written as COCO, VOC and YOLO reads back the same.

Reference: the in-memory ``ShapesWorld`` items themselves, with images quantised as a PNG stores
them (``round(255 * x) / 255``).
"""

from __future__ import annotations

import json

import pytest
import torch

from structpred.data import ShapesWorld, export_dataset, open_export
from structpred.data.records import Categories

FORMATS = ["coco", "voc", "yolo"]


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld("val", size=(48, 64), num_images=4, seed=3)


@pytest.fixture(scope="module")
def items(world):
    return [world[i] for i in range(len(world))]


def quantised(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round() / 255


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_item(tmp_path, world, items, fmt):
    result = export_dataset(world, tmp_path, fmt, split="val")
    expected_result = {
        "coco": tmp_path / "annotations" / "val.json",
        "voc": tmp_path / "Annotations",
        "yolo": tmp_path / "data.yaml",
    }[fmt]
    assert result == expected_result and result.exists()
    dataset = open_export(tmp_path, fmt, split="val")
    assert len(dataset) == len(world)
    assert dataset.categories.names == world.categories.names
    assert sum(len(t["labels"]) for _, t in items) > 0  # the check below is not vacuous
    for i, (image, target) in enumerate(items):
        back_image, back = dataset[i]
        assert back_image.dtype == torch.float32 and back_image.shape == image.shape
        assert torch.equal(back_image, quantised(image)), f"item {i}"
        assert torch.equal(back["labels"], target["labels"]), f"item {i}"
        assert back["boxes"].shape == target["boxes"].shape
        if fmt == "yolo":
            assert (back["boxes"] - target["boxes"]).abs().max() < 1e-3, f"item {i}"
        else:
            assert torch.equal(back["boxes"], target["boxes"]), f"item {i}"
        assert torch.equal(back["iscrowd"], target["iscrowd"])
        if fmt == "coco":
            assert int(back["image_id"]) == int(target["image_id"])


def test_coco_masks_round_trip(tmp_path, world, items):
    export_dataset(world, tmp_path, "coco")
    dataset = open_export(tmp_path, "coco", with_masks=True)
    for i, (_, target) in enumerate(items):
        _, back = dataset[i]
        assert back["masks"].dtype == torch.uint8
        assert torch.equal(back["masks"], target["masks"]), f"item {i}"
    data = json.loads((tmp_path / "annotations" / "train.json").read_text())
    assert all(isinstance(a["segmentation"]["counts"], str) for a in data["annotations"])  # compressed RLE
    areas = [a["area"] for a in data["annotations"]]
    assert areas == [float(m.sum()) for _, t in items for m in t["masks"]]


def test_layouts_and_limit(tmp_path, world):
    export_dataset(world, tmp_path / "voc", "voc", split="test", limit=2)
    voc = tmp_path / "voc"
    assert sorted(p.name for p in (voc / "Annotations").iterdir()) == ["test_000000.xml", "test_000001.xml"]
    assert (voc / "JPEGImages" / "test_000001.png").is_file()
    assert (voc / "ImageSets" / "Main" / "test.txt").read_text() == "test_000000\ntest_000001\n"
    assert (voc / "classes.txt").read_text().splitlines() == world.categories.names
    assert len(open_export(voc, "voc", split="test")) == 2
    export_dataset(world, tmp_path / "yolo", "yolo", limit=0)
    assert len(open_export(tmp_path / "yolo", "yolo")) == 0
    export_dataset(world, tmp_path / "coco", "coco", limit=10)  # more than there are
    assert len(open_export(tmp_path / "coco", "coco")) == len(world)


def test_voc_labels_survive_unseen_classes(tmp_path, world):
    # classes.txt keeps label k = class k even when an image set shows only some classes
    export_dataset(world, tmp_path, "voc", limit=1)
    _, target = world[0]
    dataset = open_export(tmp_path, "voc")
    assert dataset.categories.names == world.categories.names
    assert torch.equal(dataset[0][1]["labels"], target["labels"])


def test_two_splits_side_by_side(tmp_path, world):
    other = ShapesWorld("train", size=(48, 64), num_images=2, seed=3)
    for fmt in FORMATS:
        export_dataset(world, tmp_path / fmt, fmt, split="val")
        export_dataset(other, tmp_path / fmt, fmt, split="train")
        assert len(open_export(tmp_path / fmt, fmt, split="val")) == 4
        train = open_export(tmp_path / fmt, fmt, split="train")
        assert len(train) == 2 and torch.equal(train[1][0], quantised(other[1][0]))


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize("fmt", FORMATS)
def test_open_export_missing_dir_and_split(tmp_path, world, fmt):
    with pytest.raises(ValueError, match=f"nope: not a directory .*--format {fmt}"):
        open_export(tmp_path / "nope", fmt)
    export_dataset(world, tmp_path, fmt, limit=1)
    match = {
        "coco": r"no COCO annotations for split 'val' \(.*val.json is missing\)",
        "voc": r"no VOC image set for split 'val' \(.*val.txt is missing\)",
        "yolo": r"data.yaml: no split 'val'; splits present: \['train'\]",
    }[fmt]
    with pytest.raises(ValueError, match=match):
        open_export(tmp_path, fmt, split="val")


def test_open_export_other_errors(tmp_path, world):
    with pytest.raises(ValueError, match="fmt must be one of"):
        open_export(tmp_path, "kitti")
    with pytest.raises(ValueError, match=r"no YOLO data.yaml \(.*data.yaml is missing\)"):
        open_export(tmp_path, "yolo")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_png_names_the_file(tmp_path, world, fmt):
    export_dataset(world, tmp_path, fmt, limit=2)
    dataset = open_export(tmp_path, fmt)
    path = dataset.image_path(1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    dataset = open_export(tmp_path, fmt)
    dataset[0]  # the other image is fine
    with pytest.raises(ValueError, match=f"{path.name}: corrupt or truncated image"):
        dataset[1]


def test_missing_or_resized_image_names_the_file(tmp_path, world):
    export_dataset(world, tmp_path, "coco", limit=2)
    dataset = open_export(tmp_path, "coco")
    dataset.image_path(0).unlink()
    with pytest.raises(ValueError, match="000000.png: image file not found"):
        dataset[0]
    small = ShapesWorld("val", size=(32, 64), num_images=2, seed=3)
    export_dataset(small, tmp_path / "small", "coco", limit=2)
    dataset.image_path(1).write_bytes((tmp_path / "small" / "images" / "train" / "000001.png").read_bytes())
    with pytest.raises(
        ValueError, match=r"000001.png: image is 32 x 64 \(H x W\) but its annotation says 48 x 64"
    ):
        dataset[1]


class Listed:
    """A minimal dataset: a list of items and (optionally) categories."""

    def __init__(self, items, categories=None) -> None:
        self.items = items
        if categories is not None:
            self.categories = categories

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def item(boxes=((1.0, 1.0, 4.0, 5.0),), labels=(1,), image=None, **extra):
    """One ``(image, target)`` pair of an 8 x 8 image."""
    image = torch.zeros(3, 8, 8) if image is None else image
    return image, {"boxes": torch.as_tensor(boxes), "labels": torch.as_tensor(labels), **extra}


ONE_CLASS = Categories(["a"])


def listed(*items, categories=ONE_CLASS):
    return Listed(list(items), categories)


@pytest.mark.parametrize(
    "dataset, kwargs, match",
    [
        (listed(item()), {"fmt": "kitti"}, "fmt must be one of"),
        (Listed([item()]), {}, "dataset must have a `categories: Categories` attribute"),
        (listed(item(), categories=["a"]), {}, "dataset must have a `categories: Categories` attribute"),
        (listed(item()), {"limit": -1}, "limit must be >= 0 or None, got -1"),
        (listed(item()), {"split": "a/b"}, "split must be a plain name"),
        (listed(item()), {"split": ""}, "split must be a plain name"),
        (listed(torch.zeros(3, 8, 8)), {}, r"dataset item 0: expected an \(image, target\)"),
        (listed((torch.zeros(8, 8), {})), {}, r"dataset item 0: image must be a Tensor\[3"),
        (listed((torch.zeros(3, 8, 8), {"boxes": 1})), {}, "item 0: target must be a dict"),
        (
            listed(item(), item(boxes=torch.zeros(2, 4), labels=(1, 1, 1))),
            {},
            r"dataset item 1: boxes must be \[N, 4\] and labels \[N\]",
        ),
        (
            listed(item(masks=torch.zeros(1, 4, 4))),
            {},
            r"dataset item 0: masks must be \[N, H, W\] = \(1, 8, 8\)",
        ),
        (listed(item(boxes=((1.0, 1.0, 9.5, 5.0),))), {}, "record 0 .*outside the 8 x 8"),
        (listed(item(labels=(2,))), {}, "record 0 .*label 2, outside 1..1"),
        (listed(item(image=torch.full((3, 8, 8), 2.0))), {}, r"values must be finite and in \[0, 1\]"),
    ],
)
def test_export_bad_input(tmp_path, dataset, kwargs, match):
    kwargs = {"fmt": "coco", **kwargs}
    with pytest.raises(ValueError, match=match):
        export_dataset(dataset, tmp_path / "out", **kwargs)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_checks_boxes_in_every_format(tmp_path, fmt):
    with pytest.raises(ValueError, match="object 0 has an invalid box"):
        export_dataset(listed(item(), item(boxes=((5.0, 1.0, 4.0, 5.0),))), tmp_path, fmt)


class _OneItem:
    """A dataset of one given item (for hostile targets)."""

    categories = Categories(["a"])

    def __init__(self, item: object) -> None:
        self.item = item

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> object:
        return self.item


_BOX, _LABEL = torch.tensor([[1.0, 1, 4, 4]]), torch.tensor([1])


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"boxes": _BOX, "labels": _LABEL, "image_id": torch.tensor([1, 2])}, r"dataset item 0: target\['image_id'\] must be one integer, got shape \(2,\)"),  # noqa: E501
        ({"boxes": _BOX, "labels": _LABEL, "image_id": "x"}, r"dataset item 0: target\['image_id'\] is not a tensor of numbers"),  # noqa: E501
        ({"boxes": "abc", "labels": _LABEL}, r"dataset item 0: target\['boxes'\] is not a tensor of numbers \(new\(\): invalid data type 'str'\)"),  # noqa: E501
        ({"boxes": [[1, 2], [3]], "labels": _LABEL}, r"dataset item 0: target\['boxes'\] is not a tensor of numbers"),  # noqa: E501
        ({"boxes": _BOX, "labels": _LABEL, "iscrowd": torch.tensor([0, 1])}, r"dataset item 0: target\['iscrowd'\] must be \[N\] = \[1\], got \(2,\)"),  # noqa: E501
    ],
    ids=["image_id vector", "image_id str", "boxes str", "boxes ragged", "iscrowd length"],
)  # fmt: skip
def test_hostile_target_is_one_error_naming_item_and_key(tmp_path, target, message) -> None:
    with pytest.raises(ValueError, match=message):
        export_dataset(_OneItem((torch.rand(3, 8, 8), target)), tmp_path, "coco")
