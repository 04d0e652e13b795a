"""Data on disk in the layouts other tools write (structpred.data.layouts via build_dataset):
what each reads, which split and target a request gets, and the one-line errors of bad layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from structpred.data import build_dataset
from structpred.data.formats.labelmap import voc_palette
from structpred.data.layouts.splits import canonical, carve
from tests.data import layout_builders as lb


def _expected(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, objects = lb.scene(index)
    boxes = torch.tensor([box for _, box in objects], dtype=torch.float32)
    return boxes, torch.tensor([cls for cls, _ in objects])


# ----------------------------------------------------------------------------------- COCO
@pytest.mark.parametrize("builder", [lb.coco2017, lb.coco_roboflow])
def test_coco_trees_read_both_splits(tmp_path: Path, builder) -> None:
    root = builder(tmp_path / "ds")
    for split, first, n in (("train", 0, 4), ("val", 4, 2)):
        data = build_dataset(f"coco:{root}", split)
        assert len(data) == n and data.categories.names == ["cat", "dog"]  # Roboflow's category 0 left out
        for i in range(n):
            image, target = data[i]
            boxes, labels = _expected(first + i)
            assert image.shape == (3, lb.H, lb.W)
            torch.testing.assert_close(target["boxes"], boxes)
            assert torch.equal(target["labels"], labels)
            assert int(target["image_id"]) == 1000 + first + i  # the json's own ids


def test_coco_instance_masks_from_polygons_and_rle(tmp_path: Path) -> None:
    root = lb.coco2017(tmp_path / "ds")
    data = build_dataset(f"coco:{root}", "train", task="instance_segmentation")
    for i in range(len(data)):
        _, target = data[i]
        for mask, (x1, y1, x2, y2) in zip(target["masks"], target["boxes"].int().tolist(), strict=True):
            assert mask.shape == (lb.H, lb.W)
            assert int(mask.sum()) >= (x2 - x1 - 1) * (y2 - y1 - 1)  # the rectangle, polygon or RLE
            assert int(mask[:y1].sum()) == 0 and int(mask[:, :x1].sum()) == 0


def test_coco_semantic_maps_from_instances(tmp_path: Path) -> None:
    root = lb.coco2017(tmp_path / "ds")
    data = build_dataset(f"coco:{root}", "val", task="semantic_segmentation")
    assert data.label_map_classes == {"semantic": 3}
    _, target = data[0]
    _, objects = lb.scene(4)
    cls, (x1, y1, x2, y2) = objects[-1]
    assert int(target["semantic"][y1 + 1, x1 + 1]) == cls and int(target["semantic"][0, 0]) in (0, 1, 2)


def test_coco_single_json_and_val_fraction(tmp_path: Path) -> None:
    root = lb.coco_cvat(tmp_path / "cvat")
    train = build_dataset(f"coco:{root}", "train")
    assert len(train) == 6  # unsplit: train is all of it
    with pytest.raises(ValueError, match=r"has no 'val' split; it has \['all'\] \(pass --val-fraction"):
        build_dataset(f"coco:{root}", "val")
    a = build_dataset(f"coco:{root}", "train", val_fraction=0.34, split_seed=3)
    b = build_dataset(f"coco:{root}", "val", val_fraction=0.34, split_seed=3)
    ids = [int(a[i][1]["image_id"]) for i in range(len(a))] + [
        int(b[i][1]["image_id"]) for i in range(len(b))
    ]
    assert len(b) == 2 and sorted(ids) == list(range(1000, 1006))  # disjoint, covering
    again = build_dataset(f"coco:{root}", "val", val_fraction=0.34, split_seed=3)
    assert [int(again[i][1]["image_id"]) for i in range(2)] == [int(b[i][1]["image_id"]) for i in range(2)]
    json_file = build_dataset(f"coco:{root / 'annotations' / 'instances_default.json'}", "all")
    assert len(json_file) == 6  # coco:FILE.json, images found in images/ beside annotations/


def test_coco_json_beside_an_image_folder(tmp_path: Path) -> None:
    root = lb.coco_cvat(tmp_path / "ds")
    shutil.move(root / "annotations" / "instances_default.json", root / "labels.json")
    data = build_dataset(f"coco:{root / 'labels.json'}", "train")  # names resolved in images/ under it
    assert len(data) == 6 and data.image_path(0).parent == root / "images"


def test_our_own_export_still_reads(tmp_path: Path) -> None:
    from structpred.data import ShapesWorld, export_dataset

    world = ShapesWorld("train", size=48, num_images=2)
    for fmt in ("coco", "voc", "yolo"):
        export_dataset(world, tmp_path / fmt, fmt, split="train")
        export_dataset(world, tmp_path / fmt, fmt, split="val")
        data = build_dataset(f"{fmt}:{tmp_path / fmt}", "val")
        assert len(data) == 2 and data.categories.names == world.categories.names


def test_val_fraction_refused_for_data_with_its_own_val(tmp_path: Path) -> None:
    root = lb.coco2017(tmp_path / "ds")
    with pytest.raises(
        ValueError, match="has its own val split; --val-fraction is only for data without one"
    ):
        build_dataset(f"coco:{root}", "train", val_fraction=0.2)
    with pytest.raises(ValueError, match="'shapes' has its own splits"):
        build_dataset("shapes", "train", val_fraction=0.2)
    with pytest.raises(ValueError, match=r"--val-fraction must be in \(0, 1\)"):
        build_dataset(f"coco:{lb.coco_cvat(tmp_path / 'c')}", "train", val_fraction=1.5)


def test_carve_is_deterministic_and_bounded() -> None:
    assert carve(10, 0.2, 0, "x") == carve(10, 0.2, 0, "x")
    assert carve(10, 0.2, 0, "x") != carve(10, 0.2, 1, "x")
    train, val = carve(3, 0.01, 0, "x")
    assert len(val) == 1 and len(train) == 2  # at least one, never all
    assert len(carve(3, 0.99, 0, "x")[0]) == 1
    with pytest.raises(ValueError, match="needs at least 2"):
        carve(1, 0.5, 0, "x")
    assert [canonical(n) for n in ("train2017", "Validation", "valid", "val2014", "trainval", "test")] == [
        "train", "val", "val", "val", "trainval", "test",
    ]  # fmt: skip


# ----------------------------------------------------------------------------------- VOC
def test_voc_devkit_boxes_and_label_maps(tmp_path: Path) -> None:
    voc = lb.voc_devkit(tmp_path / "ds")
    for spec in (f"voc:{tmp_path / 'ds'}", f"voc:{voc}"):  # the folder above VOCdevkit, or VOC2012
        boxes = build_dataset(spec, "val")
        assert len(boxes) == 2 and len(boxes.categories) == 20  # the 20 standard classes
        _, target = boxes[0]
        expected, labels = _expected(4)
        torch.testing.assert_close(target["boxes"], expected + torch.tensor([1.0, 1.0, 0.0, 0.0]))
        names = [boxes.categories.names[k - 1] for k in target["labels"].tolist()]
        assert names == [lb.CLASSES[k - 1] for k in labels.tolist()]
    maps = build_dataset(f"voc:{voc}", "train", task="semantic_segmentation")
    assert len(maps) == 4 and maps.label_map_classes == {"semantic": 21}
    _, target = maps[1]
    assert torch.equal(target["semantic"], torch.from_numpy(lb.label_map(lb.scene(1)[1]).astype(np.int64)))
    assert len(build_dataset(f"voc:{voc}", "trainval")) == 6


def test_voc_class_file_sets_the_classes(tmp_path: Path) -> None:
    voc = lb.voc_devkit(tmp_path / "ds")
    (voc / "labels.txt").write_text("background\ncat\ndog\n")
    boxes = build_dataset(f"voc:{voc}", "train")
    assert boxes.categories.names == ["cat", "dog"]
    maps = build_dataset(f"voc:{voc}", "val", target="semantic")
    assert maps.label_map_classes == {"semantic": 3}  # now label 21 would be out of range


def test_voc_segmentation_out_of_range_index(tmp_path: Path) -> None:
    voc = lb.voc_devkit(tmp_path / "ds")
    (voc / "classes.txt").write_text("cat\n")  # 2 classes: background, cat; dog (2) is out of range
    with pytest.raises(
        ValueError, match=r"SegmentationClass/2012_00000\d\.png: class index 2 is outside 0\.\.1"
    ):
        build_dataset(f"voc:{voc}", "train", task="semantic_segmentation")


# ----------------------------------------------------------------------------------- YOLO
@pytest.mark.parametrize("builder", [lb.yolo_roboflow, lb.yolo_ultralytics])
def test_yolo_as_ultralytics_reads_it(tmp_path: Path, builder) -> None:
    root = builder(tmp_path / "ds")
    for split, first, n in (("train", 0, 4), ("val", 4, 2)):
        data = build_dataset(f"yolo:{root}", split)
        assert len(data) == n and data.categories.names == ["cat", "dog"]
        for i in range(n):
            boxes, labels = _expected(first + i)
            _, target = data[i]
            torch.testing.assert_close(target["boxes"], boxes, atol=1e-3, rtol=0)
            assert torch.equal(target["labels"], labels)


def test_yolo_valid_key_segment_lines_and_train_only(tmp_path: Path) -> None:
    root = lb.yolo_roboflow(tmp_path / "ds")
    data = yaml.safe_load((root / "data.yaml").read_text())
    data["valid"] = data.pop("val")
    del data["test"]
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    assert len(build_dataset(f"yolo:{root / 'data.yaml'}", "val")) == 2
    (root / "train" / "labels" / "img0.txt").write_text("1 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6\n")  # a segment
    _, target = build_dataset(f"yolo:{root}", "train")[0]
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[0.1 * lb.W, 0.1 * lb.H, 0.5 * lb.W, 0.6 * lb.H]])
    )
    del data["valid"]
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="pass --val-fraction"):
        build_dataset(f"yolo:{root}", "val")
    assert len(build_dataset(f"yolo:{root}", "val", val_fraction=0.5)) == 2


# ----------------------------------------------------------------------------------- masks
def test_mask_folders_split_and_unsplit(tmp_path: Path) -> None:
    root = lb.mask_folders(tmp_path / "m")
    train, val = build_dataset(f"masks:{root}", "train"), build_dataset(f"masks:{root}", "val")
    assert (len(train), len(val)) == (4, 2) and train.label_map_classes == {"semantic": 3}
    assert train.categories.names == ["cat", "dog"]
    _, target = val[0]
    assert torch.equal(target["semantic"], torch.from_numpy(lb.label_map(lb.scene(4)[1]).astype(np.int64)))
    flat = lb.mask_folders(tmp_path / "flat", split=False, classes=False)
    data = build_dataset(f"masks:{flat}", "train")
    assert len(data) == 6 and data.label_map_classes == {"semantic": 3}  # max index 2 -> 3 classes
    assert data.categories.names == ["class_1", "class_2"]
    assert len(build_dataset(f"masks:{flat}", "val", val_fraction=0.5)) == 3


def test_mask_folders_grey_index_masks_any_image_suffix(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for i in range(3):
        pixels, objects = lb.scene(i)
        (root / "images" / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / "sub" / f"x{i}.png")
        (root / "masks" / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.minimum(lb.label_map(objects), 2)).save(root / "masks" / "sub" / f"x{i}.png")
    data = build_dataset(f"masks:{root}", "all", task="semantic_segmentation")
    assert len(data) == 3 and data.label_map_classes == {"semantic": 3}


# ----------------------------------------------------------------------------------- bad layouts
@pytest.mark.parametrize("kind", lb.BAD_LAYOUTS)
def test_bad_layouts_fail_at_construction_with_one_line(kind: str, tmp_path: Path) -> None:
    spec, kwargs, message = lb.break_layout(kind, tmp_path)
    with pytest.raises(ValueError, match=message) as info:
        for split in ("train", "val"):
            build_dataset(spec, split, **kwargs)
    assert "\n" not in str(info.value)


def test_unsupported_target_is_a_clear_error(tmp_path: Path) -> None:
    root = lb.yolo_roboflow(tmp_path / "y")
    with pytest.raises(
        ValueError, match="yolo: data holds no label maps, which the semantic_segmentation task"
    ):
        build_dataset(f"yolo:{root}", "train", task="semantic_segmentation")
    with pytest.raises(ValueError, match="masks: data holds no boxes"):
        build_dataset(f"masks:{lb.mask_folders(tmp_path / 'm')}", "train", task="detection")
    with pytest.raises(ValueError, match="voc: data holds no instance masks"):
        build_dataset(f"voc:{lb.voc_devkit(tmp_path / 'v')}", "train", task="instance_segmentation")


def test_cvat_voc_export_default_subset_and_labelmap(tmp_path: Path) -> None:
    voc = lb.voc_devkit(tmp_path / "cvat", n_train=3, n_val=0)
    sets = voc / "ImageSets" / "Main"
    for p in sets.glob("*.txt"):
        p.unlink()
    (sets / "default.txt").write_text("2012_000000\n2012_000001\n2012_000002\n")  # CVAT's one subset
    (voc / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:128,0,0::\ndog:0,128,0::\n"
    )
    data = build_dataset(f"voc:{voc}", "train")
    assert len(data) == 3 and data.categories.names == ["cat", "dog"]
    assert len(build_dataset(f"voc:{voc}", "val", val_fraction=0.34)) == 1


def test_label_studio_coco_export(tmp_path: Path) -> None:
    root = tmp_path / "ls"
    names = [f"images/{i}a1b2.jpg" for i in range(3)]  # Label Studio: names relative to result.json
    for i, name in enumerate(names):
        lb.save_jpg(root / name, lb.scene(i)[0])
    (root / "result.json").write_text(json.dumps(lb.coco_json(names, 0, 3, with_rle=False)))
    data = build_dataset(f"coco:{root}", "train")
    assert len(data) == 3 and data.image_path(2) == root / "images" / "2a1b2.jpg"


def test_label_map_datasets_list_their_image_files(tmp_path: Path) -> None:
    root = lb.mask_folders(tmp_path / "m")
    data = build_dataset(f"masks:{root}", "val")
    assert [(r.file_name, r.height, r.width, r.image_id) for r in data.records] == [
        (str(root / "images" / "val" / f"p00{i}.jpg"), lb.H, lb.W, i - 4) for i in (4, 5)
    ]


def test_rgb_masks_through_labelmap_or_voc_palette(tmp_path: Path) -> None:
    voc = lb.voc_devkit(tmp_path / "cvat", n_train=2, n_val=1)
    colours = {0: (0, 0, 0), 1: (250, 50, 83), 2: (36, 179, 83), 255: (224, 224, 192)}
    (voc / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:250,50,83::\ndog:36,179,83::\n"
    )
    for i in range(3):
        labels = lb.label_map(lb.scene(i)[1])
        rgb = np.zeros((*labels.shape, 3), np.uint8)
        for k, colour in colours.items():
            rgb[labels == k] = colour
        Image.fromarray(rgb).save(voc / "SegmentationClass" / f"2012_{i:06d}.png")  # CVAT writes colours
    data = build_dataset(f"voc:{voc}", "train", task="semantic_segmentation")
    assert data.label_map_classes == {"semantic": 3}
    for i in range(2):
        expected = torch.from_numpy(lb.label_map(lb.scene(i)[1]).astype(np.int64))
        assert torch.equal(data[i][1]["semantic"], expected)
    # Without labelmap.txt, colour masks are read through the VOC palette (index k -> its colour).
    (voc / "labelmap.txt").unlink()
    masks = lb.mask_folders(tmp_path / "m", n_train=2, n_val=1)
    palette = voc_palette().numpy()
    labels = lb.label_map(lb.scene(0)[1])
    Image.fromarray(palette[labels]).save(masks / "masks" / "train" / "p000.png")  # (H, W) -> (H, W, 3)
    assert torch.equal(
        build_dataset(f"masks:{masks}", "train")[0][1]["semantic"], torch.from_numpy(labels.astype(np.int64))
    )
    with pytest.raises(
        ValueError,
        match=r"2012_000000.png: colour \(250, 50, 83\) at pixel .* not a class colour of the VOC palette",
    ):
        build_dataset(f"voc:{voc}", "train", task="semantic_segmentation")
