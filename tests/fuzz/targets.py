"""The fuzz targets: one per (reader, file role), grouped by reader.

A target builds a small valid layout once (:attr:`Target.setup`, with our own writers or the way
other tools write it, ``tests/data/layout_builders.py``), names the one file an input replaces,
and reads the layout back the way a user's command does (``build_dataset`` and the first items,
or the reader itself). Seeds are in ``tests/fuzz/corpus/<target>/`` (``make_corpus.py``).

The oracle (:func:`outcome`): the read returns a result that keeps the contract
(:func:`check_item`), or raises a ``ValueError``-family exception whose message is one line
and names a file of the layout. Anything else is a crash; hangs, memory blow-ups and native
crashes are caught by the supervisor (``runner.py``), which runs targets in a child process.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from tests.fuzz import mutate

CORPUS = Path(__file__).parent / "corpus"
REGRESSIONS = Path(__file__).parent / "regressions"
Setup = Callable[[Path], tuple[Path, Callable[[], None]]]  # workdir -> (input file, read it)


@dataclass(frozen=True)
class Target:
    """One file role of one reader; ``setup(workdir)`` -> (the file an input replaces, read)."""

    name: str
    reader: str
    mutator: mutate.Mutator
    setup: Setup


class WrongResult(AssertionError):
    """A read returned something that breaks the contract (a silent wrong result)."""


# ------------------------------------------------------------------------- checks
def check_image(image: object, where: str) -> tuple[int, int]:
    """float32 [3, H, W] in [0, 1], finite -> (H, W)."""
    if (
        not isinstance(image, Tensor)
        or image.dtype != torch.float32
        or image.dim() != 3
        or image.shape[0] != 3
    ):
        raise WrongResult(f"{where}: image is not float32 [3, H, W]: {getattr(image, 'shape', image)!r}")
    if image.numel() == 0 or not bool(torch.isfinite(image).all()) or image.min() < 0 or image.max() > 1:
        raise WrongResult(f"{where}: image values not finite in [0, 1] or empty {tuple(image.shape)}")
    return int(image.shape[1]), int(image.shape[2])


def check_item(item: object, num_classes: int | None, where: str) -> None:
    """A dataset item ``(image, target)``: boxes inside the image, labels in range, masks sized."""
    if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[1], dict):
        raise WrongResult(f"{where}: item is not (image, target dict)")
    image, target = item
    h, w = check_image(image, where)
    if "boxes" in target:
        boxes, labels = target["boxes"], target["labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != (boxes.shape[0],):
            raise WrongResult(f"{where}: boxes {tuple(boxes.shape)} labels {tuple(labels.shape)}")
        if boxes.numel():
            if not bool(torch.isfinite(boxes).all()):
                raise WrongResult(f"{where}: non-finite box")
            x1, y1, x2, y2 = boxes.unbind(1)
            if bool((x1 < 0).any() | (y1 < 0).any() | (x2 > w).any() | (y2 > h).any() | (x2 < x1).any()
                    | (y2 < y1).any()):  # fmt: skip
                raise WrongResult(f"{where}: box outside the {h} x {w} image: {boxes.tolist()[:3]}")
            if num_classes is not None and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
                raise WrongResult(f"{where}: labels {labels.tolist()[:5]} outside 1..{num_classes}")
        if "masks" in target and tuple(target["masks"].shape) != (boxes.shape[0], h, w):
            raise WrongResult(
                f"{where}: masks {tuple(target['masks'].shape)} for {boxes.shape[0]} boxes, {h}x{w}"
            )
    if "semantic" in target:
        sem = target["semantic"]
        if tuple(sem.shape) != (h, w) or sem.dtype != torch.int64:
            raise WrongResult(f"{where}: semantic {tuple(sem.shape)} {sem.dtype} for a {h} x {w} image")
        bad = (sem < 0) | ((sem > (num_classes or 255)) & (sem != 255))  # 0 = background, 1..K
        if bool(bad.any()):
            raise WrongResult(f"{where}: semantic values {sorted(set(sem[bad].tolist()))[:5]} out of range")


def read_split(spec: str, split: str, **kwargs: Any) -> None:
    """Open one split of a layout and check its first two items."""
    from structpred.data import build_dataset

    data: Any = build_dataset(spec, split, **kwargs)
    categories = getattr(data, "categories", None)
    k = len(categories) if categories is not None else None
    for i in range(min(len(data), 2)):
        check_item(data[i], k, f"{spec} {split}[{i}]")


def outcome(err: BaseException | None, workdir: Path) -> str:
    """``"ok"``, ``"error"`` (a clear one) or the crash kind."""
    if err is None:
        return "ok"
    if isinstance(err, WrongResult):
        return "wrong"
    if not isinstance(err, ValueError):
        return f"exception-{type(err).__name__}"
    text = str(err)
    if "\n" in text:
        return "multiline"
    if str(workdir) not in text:
        return "unnamed"
    return "error"


# ------------------------------------------------------------------------ layouts
def _layout(builder: str, rel: str, reads: list[tuple[str, str, dict[str, Any]]], **build: Any) -> Setup:
    """A layout from ``layout_builders.<builder>``; the input replaces ``rel``; ``reads`` are
    ``(spec kind, split, build_dataset kwargs)``."""

    def setup(workdir: Path) -> tuple[Path, Callable[[], None]]:
        from tests.data import layout_builders as lb

        root: Path = getattr(lb, builder)(workdir / "ds", **build)
        spec_root = workdir / "ds" if builder == "voc_devkit" else root

        def run() -> None:
            for kind, split, kwargs in reads:
                read_split(f"{kind}:{spec_root}", split, **kwargs)

        return root / rel, run

    return setup


def _label_studio(workdir: Path) -> tuple[Path, Callable[[], None]]:
    from tests.data import layout_builders as lb

    root = workdir / "ls"
    names = [f"images/{i}a1b2.jpg" for i in range(2)]  # Label Studio: names relative to result.json
    for i, name in enumerate(names):
        lb.save_jpg(root / name, lb.scene(i)[0])
    (root / "result.json").write_text(json.dumps(lb.coco_json(names, 0, 2, with_rle=False)))
    return root / "result.json", lambda: read_split(f"coco:{root}", "train", task="instance_segmentation")


def _direct(suffix: str, read: Callable[[Path], None]) -> Setup:
    def setup(workdir: Path) -> tuple[Path, Callable[[], None]]:
        path = workdir / f"input{suffix}"
        return path, lambda: read(path)

    return setup


def _read_coco(path: Path) -> None:
    from structpred.data.formats.coco import read_coco, segmentation_area, segmentation_to_mask

    for on_error in ("raise", "skip"):
        records, categories = read_coco(path, on_error=on_error)
        for record in records[:3]:
            for seg in (record.segmentations or [])[:3]:
                mask = segmentation_to_mask(seg, record.height, record.width)
                area = segmentation_area(seg, record.height, record.width)
                if tuple(mask.shape) != (record.height, record.width) or not math.isfinite(area) or area < 0:
                    raise WrongResult(f"{path}: mask {tuple(mask.shape)} / area {area} of {record.file_name}")


def _read_coco_keypoints(path: Path) -> None:
    from structpred.data.formats.coco_keypoints import read_coco_keypoints

    for on_error in ("raise", "skip"):
        records, _, keypoints, info = read_coco_keypoints(path, on_error=on_error)
        K = len(info.names)
        if len(keypoints) != len(records) or any(not (0 <= a < K and 0 <= b < K) for a, b in info.skeleton):
            raise WrongResult(f"{path}: {len(keypoints)} keypoint tensors for {len(records)} records")
        for record, kp in zip(records, keypoints, strict=True):
            ok = kp.shape == (len(record.labels), K, 3) and bool(torch.isfinite(kp).all())
            if not ok or not set(kp[..., 2].unique().tolist()) <= {0.0, 1.0, 2.0}:
                raise WrongResult(
                    f"{path}: keypoints {tuple(kp.shape)} of {record.file_name} break the contract"
                )


def _read_image(path: Path) -> None:
    from structpred.data.images import image_size, read_image

    size = image_size(path)
    shape = check_image(read_image(path), str(path))
    if shape != size:
        raise WrongResult(f"{path}: image_size says {size}, read_image gives {shape}")


def _read_label_map(path: Path) -> None:
    from structpred.data.formats.labelmap import read_label_map

    labels = read_label_map(path)
    if labels.dtype != torch.int64 or labels.dim() != 2 or labels.numel() == 0:
        raise WrongResult(f"{path}: label map {labels.dtype} {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) > 65535:
        raise WrongResult(f"{path}: label values [{int(labels.min())}, {int(labels.max())}]")
    with Image.open(path) as im:  # it read: the file must be a lossless integer image (issue 15.4)
        fmt, mode = im.format, im.mode
    if fmt not in ("PNG", "TIFF", "BMP", "GIF"):
        raise WrongResult(f"{path}: a {fmt} label map was accepted (lossy or not an integer image)")
    if mode == "1" and int(labels.max()) > 1:
        raise WrongResult(f"{path}: a 1-bit label map read as values up to {int(labels.max())}")


def _read_flo(path: Path) -> None:
    from structpred.data.formats.flo import read_flo

    flow = read_flo(path)
    if flow.dtype != torch.float32 or flow.dim() != 3 or flow.shape[0] != 2:
        raise WrongResult(f"{path}: flow {flow.dtype} {tuple(flow.shape)}")


def _read_homography_xml(path: Path) -> None:
    from structpred.data.flow_real import read_homography_xml

    H = read_homography_xml(path)
    if H.dtype != torch.float64 or tuple(H.shape) != (3, 3) or not bool(torch.isfinite(H).all()):
        raise WrongResult(f"{path}: homography {H.dtype} {tuple(H.shape)} not a finite float64 [3, 3]")
    if float(H[2, 2]) != 1.0 or abs(float(torch.linalg.det(H))) < 1e-9:
        raise WrongResult(f"{path}: homography not normalised (H[2, 2] = {float(H[2, 2])}) or singular")


def _read_disparity_png(path: Path) -> None:
    from structpred.data.flow_real import read_disparity_png

    disparity, known = read_disparity_png(path)
    ok = disparity.dtype == torch.float32 and disparity.dim() == 3 and disparity.shape[0] == 1
    if not ok or known.dtype != torch.bool or tuple(known.shape) != tuple(disparity.shape[1:]):
        raise WrongResult(
            f"{path}: disparity {disparity.dtype} {tuple(disparity.shape)}, known {tuple(known.shape)}"
        )
    if (
        not bool(torch.isfinite(disparity).all())
        or float(disparity.min()) < 0
        or float(disparity.max()) > 65535
    ):
        raise WrongResult(f"{path}: disparity values outside 0..65535")
    if not torch.equal(known, disparity[0] > 0):
        raise WrongResult(f"{path}: known is not disparity > 0")
    with Image.open(path) as im:  # it read: a lossless grey PNG (a JPEG or RGB map must be refused)
        if im.format != "PNG" or im.mode not in ("L", "I;16", "I;16B", "I"):
            raise WrongResult(f"{path}: a {im.format} {im.mode} disparity was accepted")


# ------------------------------------------------------------------------- export
class _Items(torch.utils.data.Dataset):
    """Two items with boxes and masks, for the exporter."""

    def __init__(self) -> None:
        from structpred.data.records import Categories

        self.categories = Categories(["cat", "dog"])

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        g = torch.Generator().manual_seed(i)
        image = torch.rand(3, 24, 32, generator=g)
        masks = torch.zeros(2, 24, 32, dtype=torch.uint8)
        masks[0, 2:10, 3:12] = 1
        masks[1, 12:20, 15:30] = 1
        boxes = torch.tensor([[3.0, 2.0, 12.0, 10.0], [15.0, 12.0, 30.0, 20.0]])
        return image, {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}


def _export(fmt: str, rel: str) -> Setup:
    def setup(workdir: Path) -> tuple[Path, Callable[[], None]]:
        from structpred.data.export import export_dataset, open_export

        root = workdir / f"export_{fmt}"
        export_dataset(_Items(), root, fmt)

        def run() -> None:
            data = open_export(root, fmt, with_masks=True) if fmt == "coco" else open_export(root, fmt)
            for i in range(min(len(data), 2)):
                check_item(data[i], len(data.categories), f"{root} [{i}]")

        return root / rel, run

    return setup


# --------------------------------------------------------------------- checkpoints
def _checkpoint(rel: str, best: bool) -> Setup:
    def setup(workdir: Path) -> tuple[Path, Callable[[], None]]:
        from structpred.engine.checkpoint import (
            load_checkpoint,
            read_meta,
            restore,
            restore_optimizer,
            save_checkpoint,
            set_rng_state,
        )

        run_dir = workdir / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        torch.manual_seed(0)  # the RNG states go into the file: the same bytes in every process
        np.random.seed(0)
        random.seed(0)
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        train_state = {"epoch": 1, "step_in_epoch": 0, "config": {"lr": 0.1}, "best": {"loss": 0.5}}
        save_checkpoint(run_dir, 1, model, optimizer, train_state, best=True)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        rng = torch.get_rng_state()

        def run() -> None:
            try:
                read_meta(run_dir, best=best)
                tensors, meta = load_checkpoint(run_dir, best=best)
                fresh = torch.nn.Linear(3, 2)  # as Trainer._resume: model, optimizer, RNG states
                restore(tensors, meta, fresh, None, rng=False)
                optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
                try:
                    restore_optimizer(tensors, meta, optimizer)
                except (ValueError, KeyError):
                    pass  # the trainer starts a fresh optimizer state then (and says so)
                set_rng_state(tensors, meta["rng"])
                for k, v in fresh.state_dict().items():  # the file's checksum must catch any change
                    if not torch.equal(v, state[k]):
                        raise WrongResult(f"{run_dir}: restored {k} differs from the saved weights")
            finally:
                torch.set_rng_state(rng)

        paths = sorted(run_dir.glob(rel))
        return paths[0], run

    return setup


# ------------------------------------------------------------------------- registry
TARGETS: list[Target] = [
    # COCO (reader owner: "images")
    Target("coco_json", "coco", mutate.mutate_json, _direct(".json", _read_coco)),
    Target("coco_tree", "coco", mutate.mutate_json, _layout(
        "coco2017", "annotations/instances_train2017.json",
        [("coco", "train", {"task": "instance_segmentation"})], n_train=2, n_val=1)),
    Target("coco_roboflow", "coco", mutate.mutate_json, _layout(
        "coco_roboflow", "train/_annotations.coco.json",
        [("coco", "train", {"task": "instance_segmentation"})], n_train=2, n_val=1)),
    Target("coco_cvat", "coco", mutate.mutate_json, _layout(
        "coco_cvat", "annotations/instances_default.json",
        [("coco", "train", {"task": "semantic_segmentation"})], n=2)),
    Target("coco_labelstudio", "coco", mutate.mutate_json, _label_studio),
    Target("coco_keypoints_json", "coco_keypoints", mutate.mutate_json,
           _direct(".json", _read_coco_keypoints)),
    # VOC (owner: "errors")
    Target("voc_xml", "voc", mutate.mutate_xml, _layout(
        "voc_devkit", "Annotations/2012_000000.xml", [("voc", "train", {})], n_train=2, n_val=1)),
    Target("voc_imageset", "voc", mutate.mutate_bytes, _layout(
        "voc_devkit", "ImageSets/Main/train.txt", [("voc", "train", {})], n_train=2, n_val=1)),
    Target("voc_seg_png", "voc", mutate.mutate_png, _layout(
        "voc_devkit", "SegmentationClass/2012_000000.png",
        [("voc", "train", {"task": "semantic_segmentation"})], n_train=2, n_val=1)),
    # YOLO (owner: "errors")
    Target("yolo_yaml", "yolo", mutate.mutate_yaml, _layout(
        "yolo_roboflow", "data.yaml", [("yolo", "train", {}), ("yolo", "val", {})], n_train=2, n_val=1)),
    Target("yolo_label", "yolo", mutate.mutate_lines, _layout(
        "yolo_roboflow", "train/labels/img0.txt", [("yolo", "train", {})], n_train=2, n_val=1)),
    Target("yolo_list", "yolo", mutate.mutate_bytes, _layout(
        "yolo_ultralytics", "val.txt", [("yolo", "val", {})], n_train=1, n_val=2)),
    # label PNGs and mask folders (owner: "images")
    Target("label_png", "labelmap", mutate.mutate_png, _direct(".png", _read_label_map)),
    Target("mask_folder_png", "labelmap", mutate.mutate_png, _layout(
        "mask_folders", "masks/train/p000.png", [("masks", "train", {})], n_train=2, n_val=1)),
    Target("mask_folder_classes", "labelmap", mutate.mutate_bytes, _layout(
        "mask_folders", "classes.txt", [("masks", "train", {})], n_train=2, n_val=1)),
    # images (owner: "images")
    Target("image", "images", mutate.mutate_image, _direct(".png", _read_image)),
    Target("image_in_layout", "images", mutate.mutate_image, _layout(
        "coco_cvat", "images/frame_000000.jpg", [("coco", "train", {})], n=2)),
    # .flo (owner: "errors")
    Target("flo", "flo", mutate.mutate_flo, _direct(".flo", _read_flo)),
    # real flow ground truth: OpenCV's homography XML, Middlebury disparity PNGs (owner: "flowdata")
    Target("homography_xml", "flow_real", mutate.mutate_xml, _direct(".xml", _read_homography_xml)),
    Target("disparity_png", "flow_real", mutate.mutate_png, _direct(".png", _read_disparity_png)),
    # our export read back (owner: "errors")
    Target("export_coco", "export", mutate.mutate_json, _export("coco", "annotations/train.json")),
    Target("export_voc", "export", mutate.mutate_xml, _export("voc", "Annotations/train_000000.xml")),
    Target("export_yolo_label", "export", mutate.mutate_lines, _export("yolo", "labels/train/000000.txt")),
    Target("export_yolo_yaml", "export", mutate.mutate_yaml, _export("yolo", "data.yaml")),
    # checkpoints (owner: "engine")
    Target("ckpt_meta", "checkpoint", mutate.mutate_json, _checkpoint("ckpt-*.json", best=False)),
    Target("ckpt_weights", "checkpoint", mutate.mutate_safetensors, _checkpoint("ckpt-*.safetensors", False)),
    Target("ckpt_best", "checkpoint", mutate.mutate_json, _checkpoint("best.json", best=True)),
]  # fmt: skip
from tests.fuzz.targets_stereo import STEREO_TARGETS  # noqa: E402  (it imports the helpers above)

TARGETS += STEREO_TARGETS  # calib.txt, PFM, a stereo-folder's disparity PNG (owner: "stereo")
from tests.fuzz.targets_mot import MOT_TARGETS  # noqa: E402

TARGETS += MOT_TARGETS  # MOTChallenge gt / tracker text (owner: "mot")
BY_NAME = {t.name: t for t in TARGETS}
READERS: dict[str, list[Target]] = {}
for _t in TARGETS:
    READERS.setdefault(_t.reader, []).append(_t)


def seeds(target: Target) -> list[bytes]:
    """The seed corpus of ``target`` (sorted by file name)."""
    folder = CORPUS / target.name
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []


def generate(target: Target, corpus: list[bytes], rnd: Any) -> bytes:
    """One input: a seed mutated by the target's format-aware mutator (or bytes), rarely as is."""
    seed = rnd.choice(corpus)
    roll = rnd.random()
    if roll < 0.03:
        return seed
    if roll < 0.25:
        return mutate.mutate_bytes(seed, rnd, corpus)
    return target.mutator(seed, rnd)
