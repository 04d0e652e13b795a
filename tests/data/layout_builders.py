"""Tiny datasets written the way other tools write them (not through our exporter), for tests.

Each builder draws ``n`` small images with one or two filled rectangles and writes them in one
layout: the COCO 2017 tree, a Roboflow COCO export, a CVAT COCO export (unsplit), a VOC devkit
(boxes and SegmentationClass palette PNGs), Ultralytics / Roboflow YOLO, and image + mask folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from structpred.data.formats.labelmap import voc_palette

H, W = 48, 64
CLASSES = ["cat", "dog"]  # VOC class names, so the 20-class default also reads them


def scene(index: int) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """``(rgb uint8[H, W, 3], [(class 1..2, [x1, y1, x2, y2]), ...])``, deterministic in index."""
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 60, (H, W, 3)).astype(np.uint8)
    objects = []
    for k in range(1 + index % 2):
        cls = 1 + (index + k) % 2
        x1, y1 = int(rng.integers(0, W // 2)), int(rng.integers(0, H // 2))
        x2, y2 = x1 + int(rng.integers(12, W // 2)), y1 + int(rng.integers(10, H // 2))
        pixels[y1:y2, x1:x2] = (200, 40, 40) if cls == 1 else (40, 200, 40)
        objects.append((cls, [x1, y1, x2, y2]))
    return pixels, objects


def label_map(objects: list[tuple[int, list[int]]]) -> np.ndarray:
    """The objects painted as a class map ``uint8[H, W]`` with a 255 (ignore) border, as VOC."""
    labels = np.zeros((H, W), np.uint8)
    for cls, (x1, y1, x2, y2) in objects:
        labels[y1:y2, x1:x2] = 255
        labels[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] = cls
    return labels


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels, mode="L").convert("P")
    im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    im.putpalette(voc_palette().reshape(-1).tolist())
    im.save(path)


def save_jpg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


# ------------------------------------------------------------------------------------------ COCO
def coco_json(names: list[str], first: int, n: int, with_rle: bool = True) -> dict:
    """A COCO instances dict of ``n`` scenes (``first..``), polygons and one compressed RLE."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for i in range(first, first + n):
        _, objects = scene(i)
        images.append({"id": 1000 + i, "file_name": names[i - first], "height": H, "width": W})
        for cls, (x1, y1, x2, y2) in objects:
            ann = {
                "id": len(annotations) + 1, "image_id": 1000 + i, "category_id": cls,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
            }  # fmt: skip
            if with_rle and not annotations:
                m = np.zeros((H, W), np.uint8, order="F")
                m[y1:y2, x1:x2] = 1
                rle = mask_utils.encode(np.asfortranarray(m))
                ann["segmentation"] = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
            annotations.append(ann)
    categories = [{"id": k + 1, "name": n, "supercategory": "animal"} for k, n in enumerate(CLASSES)]
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def coco2017(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """``annotations/instances_{train,val}2017.json`` + ``train2017/``, ``val2017/`` (COCO's tree)."""
    for split, first, n in (("train2017", 0, n_train), ("val2017", n_train, n_val)):
        names = [f"{i:012d}.jpg" for i in range(first, first + n)]
        for i, name in zip(range(first, first + n), names, strict=True):
            save_jpg(root / split / name, scene(i)[0])
        path = root / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(coco_json(names, first, n)))
    return root


def coco_roboflow(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """Roboflow's COCO export: ``train/_annotations.coco.json`` beside the images, ``valid/``."""
    for split, first, n in (("train", 0, n_train), ("valid", n_train, n_val)):
        names = [f"img{i}_jpg.rf.{i:08x}.jpg" for i in range(first, first + n)]
        for i, name in zip(range(first, first + n), names, strict=True):
            save_jpg(root / split / name, scene(i)[0])
        data = coco_json(names, first, n, with_rle=False)
        # Roboflow puts the dataset's name as category 0, a supercategory no annotation uses.
        data["categories"].insert(0, {"id": 0, "name": "animals", "supercategory": "none"})
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    (root / "README.roboflow.txt").write_text("exported from roboflow\n")
    return root


def coco_cvat(root: Path, n: int = 6) -> Path:
    """CVAT's "COCO 1.0" export: ``annotations/instances_default.json`` + ``images/`` (unsplit)."""
    names = [f"frame_{i:06d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        save_jpg(root / "images" / name, scene(i)[0])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(coco_json(names, 0, n)))
    return root


# ------------------------------------------------------------------------------------------ VOC
def voc_xml(stem: str, objects: list[tuple[int, list[int]]]) -> str:
    """An xml as the VOC devkit's (1-based inclusive pixel numbers)."""
    parts = [
        "<annotation>", "<folder>VOC2012</folder>", f"<filename>{stem}.jpg</filename>",
        "<source><database>The VOC2007 Database</database></source>",
        f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>", "<segmented>1</segmented>",
    ]  # fmt: skip
    for cls, (x1, y1, x2, y2) in objects:
        parts += [
            "<object>", f"<name>{CLASSES[cls - 1]}</name>", "<pose>Frontal</pose>",
            "<truncated>0</truncated>", "<difficult>0</difficult>",
            f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>",
            "</object>",
        ]  # fmt: skip
    return "\n".join([*parts, "</annotation>"])


def voc_devkit(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """``VOCdevkit/VOC2012/`` with Annotations, JPEGImages, ImageSets/{Main,Segmentation},
    SegmentationClass (palette PNGs, 255 borders). Returns the VOC2012 folder."""
    voc = root / "VOCdevkit" / "VOC2012"
    splits = {"train": range(n_train), "val": range(n_train, n_train + n_val)}
    for split, indices in splits.items():
        stems = [f"2012_{i:06d}" for i in indices]
        for i, stem in zip(indices, stems, strict=True):
            pixels, objects = scene(i)
            save_jpg(voc / "JPEGImages" / f"{stem}.jpg", pixels)
            (voc / "Annotations").mkdir(parents=True, exist_ok=True)
            (voc / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, objects))
            save_palette_png(voc / "SegmentationClass" / f"{stem}.png", label_map(objects))
        for kind in ("Main", "Segmentation"):
            (voc / "ImageSets" / kind).mkdir(parents=True, exist_ok=True)
            (voc / "ImageSets" / kind / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
        (voc / "ImageSets" / "Main" / f"cat_{split}.txt").write_text("".join(f"{s}  1\n" for s in stems))
    trainval = [f"2012_{i:06d}\n" for i in range(n_train + n_val)]
    for kind in ("Main", "Segmentation"):
        (voc / "ImageSets" / kind / "trainval.txt").write_text("".join(trainval))
    return voc


# ------------------------------------------------------------------------------------------ YOLO
def _yolo_split(images: Path, labels: Path, indices: range) -> None:
    for i in indices:
        pixels, objects = scene(i)
        save_jpg(images / f"img{i}.jpg", pixels)
        labels.mkdir(parents=True, exist_ok=True)
        lines = []
        for cls, (x1, y1, x2, y2) in objects:
            cx, cy, w, h = (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H
            lines.append(f"{cls - 1} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        (labels / f"img{i}.txt").write_text("\n".join(lines) + "\n")


def yolo_roboflow(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """Roboflow's YOLOv8 export: ``data.yaml`` with ``train: ../train/images`` (relative to a
    parent folder, which Ultralytics retries without ``../``) and ``train/``, ``valid/``, ``test/``."""
    _yolo_split(root / "train" / "images", root / "train" / "labels", range(n_train))
    _yolo_split(root / "valid" / "images", root / "valid" / "labels", range(n_train, n_train + n_val))
    last = n_train + n_val
    _yolo_split(root / "test" / "images", root / "test" / "labels", range(last, last + 1))
    data = {"train": "../train/images", "val": "../valid/images", "test": "../test/images",
            "nc": 2, "names": CLASSES, "roboflow": {"workspace": "w", "version": 1}}  # fmt: skip
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def yolo_ultralytics(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """Ultralytics' own layout: ``path:``, ``images/{train,val}``, names as a dict, a .txt list."""
    _yolo_split(root / "images" / "train", root / "labels" / "train", range(n_train))
    _yolo_split(root / "images" / "val", root / "labels" / "val", range(n_train, n_train + n_val))
    lines = [f"./images/val/img{i}.jpg\n" for i in range(n_train, n_train + n_val)]
    (root / "val.txt").write_text("".join(lines))
    text = f"path: {root}\ntrain: images/train\nval: [val.txt]\nnames:\n  0: cat\n  1: dog\n"
    (root / "data.yml").write_text(text)
    return root


# ------------------------------------------------------------------------------------------ masks
def mask_folders(
    root: Path, n_train: int = 4, n_val: int = 2, split: bool = True, classes: bool = True
) -> Path:
    """``images/{train,val}/*.jpg`` + ``masks/{train,val}/*.png`` (palette) + ``classes.txt``."""
    parts = {"train": range(n_train), "val": range(n_train, n_train + n_val)}
    for name, indices in parts.items():
        sub = name if split else ""
        for i in indices:
            pixels, objects = scene(i)
            save_jpg(root / "images" / sub / f"p{i:03d}.jpg", pixels)
            save_palette_png(root / "masks" / sub / f"p{i:03d}.png", label_map(objects))
    if classes:
        (root / "classes.txt").write_text("background\ncat\ndog\n")
    return root


# ------------------------------------------------------------------------------------------ broken
def break_layout(kind: str, tmp_path: Path) -> tuple[str, dict, str]:
    """A broken layout of ``kind``: (spec, build kwargs, the expected message)."""
    if kind.startswith("coco"):
        root = coco2017(tmp_path / "ds")
        ann = root / "annotations" / "instances_train2017.json"
        data = json.loads(ann.read_text())
        if kind == "coco-no-json":
            ann.unlink()
            (root / "annotations" / "instances_val2017.json").unlink()
            return f"coco:{root}", {}, "no COCO annotation json"
        if kind == "coco-missing-image":
            (root / "train2017" / "000000000001.jpg").unlink()
            return (
                f"coco:{root}",
                {},
                r"images\[1\] \(id 1001\) file_name '000000000001.jpg' not found; tried .*train2017",
            )
        if kind == "coco-size":
            data["images"][2]["height"] = 50
            ann.write_text(json.dumps(data))
            return (
                f"coco:{root}",
                {},
                r"000000000002.jpg: image is 48 x 64 \(H x W\) but .*instances_train2017.json says 50 x 64",
            )
        if kind == "coco-category":
            data["annotations"][0]["category_id"] = 7
            ann.write_text(json.dumps(data))
            return f"coco:{root}", {}, r"instances_train2017.json: annotation id 1 .*unknown category id 7"
        if kind == "coco-no-segmentation":
            for a in data["annotations"]:
                del a["segmentation"]
            ann.write_text(json.dumps(data))
            return f"coco:{root}", {"task": "instance_segmentation"}, "no annotation has a 'segmentation'"
        if kind == "coco-empty":
            data["images"], data["annotations"] = [], []
            ann.write_text(json.dumps(data))
            return f"coco:{root}", {}, "split 'train' has no images"
    if kind.startswith("voc"):
        voc = voc_devkit(tmp_path / "ds")
        if kind == "voc-missing-image":
            (voc / "JPEGImages" / "2012_000001.jpg").unlink()
            return (
                f"voc:{voc}",
                {},
                r"2012_000001.xml: <filename> .2012_000001.jpg. not found in .*JPEGImages",
            )
        if kind == "voc-unknown-class":
            xml = voc / "Annotations" / "2012_000000.xml"
            xml.write_text(xml.read_text().replace("<name>cat</name>", "<name>kat</name>"))
            return f"voc:{voc}", {}, r"2012_000000.xml: object 0: unknown category 'kat'"
        if kind == "voc-mask-size":
            save_palette_png(voc / "SegmentationClass" / "2012_000002.png", np.zeros((10, 10), np.uint8))
            return (
                f"voc:{voc}",
                {"task": "semantic_segmentation"},
                r"2012_000002.png: mask is 10 x 10 .*is 48 x 64",
            )
    if kind.startswith("yolo"):
        root = yolo_roboflow(tmp_path / "ds")
        if kind == "yolo-names":
            (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: cat\n")
            return f"yolo:{root}", {}, r"data.yaml: 'names' must be a non-empty list"
        if kind == "yolo-nc":
            (root / "data.yaml").write_text("train: train/images\nval: valid/images\nnc: 3\nnames: [a, b]\n")
            return f"yolo:{root}", {}, r"data.yaml: nc = 3 but 2 names"
        if kind == "yolo-class":
            (root / "train" / "labels" / "img1.txt").write_text("5 0.5 0.5 0.1 0.1\n")
            return f"yolo:{root}", {}, r"train/labels/img1.txt line 1: class 5 outside 0..1"
        if kind == "yolo-broken-image":
            (root / "train" / "images" / "img2.jpg").write_bytes(b"not a jpeg")
            return f"yolo:{root}", {}, r"img2.jpg: not a readable image file"
        if kind == "yolo-empty":
            for p in (root / "train" / "images").iterdir():
                p.unlink()
            return f"yolo:{root}", {}, "split 'train' has no images"
    root = mask_folders(tmp_path / "m")
    if kind == "masks-index":
        save_palette_png(root / "masks" / "train" / "p001.png", np.full((H, W), 9, np.uint8))
        return f"masks:{root}", {}, r"masks/train/p001.png: class index 9 is outside 0\.\.2 .*classes.txt"
    if kind == "masks-unpaired":
        (root / "masks" / "train" / "p002.png").unlink()
        return f"masks:{root}", {}, r"images/train/p002.jpg: no mask .*masks/train/p002.png"
    if kind == "masks-binary-255":
        (root / "classes.txt").unlink()
        for p in (root / "masks").rglob("*.png"):
            save_palette_png(p, np.where(label_map([(1, [2, 2, 20, 20])]) > 0, 255, 0).astype(np.uint8))
        return f"masks:{root}", {}, "every mask holds only 0 and 255"
    if kind == "masks-rgb":
        Image.new("RGB", (W, H), (1, 2, 3)).save(root / "masks" / "val" / "p004.png")
        return (
            f"masks:{root}",
            {},
            r"p004.png: colour \(1, 2, 3\) at pixel \(y=0, x=0\) is not a class colour",
        )
    raise AssertionError(kind)


BAD_LAYOUTS = [
    "coco-no-json", "coco-missing-image", "coco-size", "coco-category", "coco-no-segmentation", "coco-empty",
    "voc-missing-image", "voc-unknown-class", "voc-mask-size", "yolo-names", "yolo-nc", "yolo-class",
    "yolo-broken-image", "yolo-empty", "masks-index", "masks-unpaired", "masks-binary-255", "masks-rgb",
]  # fmt: skip
