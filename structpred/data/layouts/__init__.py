"""Datasets on disk in the layouts users already have: ``coco:``, ``voc:``, ``yolo:``, ``masks:``.

:func:`open_layout` serves one split of one layout for one target kind, checked before it is
returned (annotations parsed, every image header read and its size compared; label maps decoded
and range-checked), so a broken layout fails when the dataset is built, with one ``ValueError``
naming the file and the field. Layouts and their trees: ``docs/data.md``.

Target kinds: ``"boxes"`` (detection items: ``boxes``, ``labels``, ``image_id``, ``iscrowd``),
``"masks"`` (the same plus instance ``masks``, COCO only) and ``"semantic"`` (label maps:
``semantic``, ``image_id``; VOC ``SegmentationClass``, mask folders, or COCO instances painted
into a map). A task name picks one (:data:`TASK_TARGETS`); without one a layout gives its own
kind (label maps for ``masks:``, boxes for the others).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..datasets import DetectionFiles, from_yolo
from ..formats.coco import segmentation_to_mask
from ..formats.labelmap import IGNORE_INDEX
from ..formats.yolo import yolo_splits
from .coco_tree import coco_files, open_coco
from .mask_folders import MaskFolders
from .splits import serve
from .voc_devkit import available, open_boxes, open_label_maps, voc_root

LAYOUTS = ("coco", "voc", "yolo", "masks")
TARGETS = ("boxes", "masks", "semantic")
TASK_TARGETS = {"detection": "boxes", "instance_segmentation": "masks", "semantic_segmentation": "semantic"}


class SemanticFromInstances(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Label maps painted from COCO instance segmentations: 0 background, label k for class k,
    later objects over earlier ones, crowd regions 255 (ignore)."""

    def __init__(self, base: DetectionFiles) -> None:
        self.base = base
        self.categories = base.categories
        self.label_map_classes = {"semantic": len(base.categories) + 1}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.base[index]
        record = self.base.records[index]
        semantic = torch.zeros(record.height, record.width, dtype=torch.int64)  # (H, W)
        crowd = target["iscrowd"].tolist()
        labels = target["labels"].tolist()
        for k, (seg, label) in enumerate(zip(record.segmentations or [], labels, strict=True)):
            mask = segmentation_to_mask(seg, record.height, record.width).bool()  # (H, W)
            semantic[mask] = IGNORE_INDEX if crowd[k] else label
        return image, {"semantic": semantic, "image_id": target["image_id"]}


def _target(fmt: str, task: str | None, target: str | None) -> str:
    kind = target or TASK_TARGETS.get(task or "", "semantic" if fmt == "masks" else "boxes")
    if kind not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {kind!r}")
    supported = {"coco": TARGETS, "voc": ("boxes", "semantic"), "yolo": ("boxes",), "masks": ("semantic",)}
    if kind not in supported[fmt]:
        needs = {"boxes": "boxes", "masks": "instance masks", "semantic": "label maps"}[kind]
        what = f"the {task} task" if task else f"target={kind!r}"
        raise ValueError(
            f"{fmt}: data holds no {needs}, which {what} needs ({fmt}: gives {', '.join(supported[fmt])}; "
            "instance masks come from coco:, label maps from masks:, voc: or coco:)"
        )
    return kind


def open_layout(
    fmt: str,
    arg: str,
    split: str,
    *,
    task: str | None = None,
    target: str | None = None,
    val_fraction: float | None = None,
    split_seed: int = 0,
    on_error: str = "raise",
) -> Dataset[Any]:
    """Split ``split`` of the ``fmt`` layout at ``arg`` (a folder or file), checked.

    Args:
        fmt: ``"coco"``, ``"voc"``, ``"yolo"`` or ``"masks"``.
        arg: the path after ``fmt:`` in the ``--data`` spec.
        split: ``train``, ``val``, ``test``, ``all``... (see :mod:`.splits` for what unsplit data
            and ``val_fraction`` give).
        task: the model's task name; picks the target kind (:data:`TASK_TARGETS`).
        target: ``"boxes"``, ``"masks"`` or ``"semantic"``; overrides ``task``.
        val_fraction, split_seed: carve ``val`` out of ``train`` for data without a val split.
        on_error: ``"skip"`` leaves out (and logs) bad annotations instead of raising (COCO, VOC
            and YOLO readers).
    """
    if fmt not in LAYOUTS:
        raise ValueError(f"unknown layout {fmt!r}; known: {LAYOUTS}")
    if not arg:
        raise ValueError(f"--data {fmt}:PATH needs a directory (or file), e.g. {fmt}:datasets/mine")
    kind = _target(fmt, task, target)
    where = f"{fmt}:{arg}"
    try:
        path = Path(arg).expanduser()
    except RuntimeError:  # "~nobody/data": no such user's home
        raise ValueError(f"{where}: cannot expand '~' (no such user's home directory)") from None
    try:
        return _open(fmt, kind, path, where, split, val_fraction, split_seed, on_error)
    except OSError as err:  # a path too long for the file system, a folder that cannot be listed...
        names = " -> ".join(str(n)[:300] for n in (err.filename, err.filename2) if n is not None)
        raise ValueError(f"{where}: cannot read {names or 'the data'}: {err.strerror or err}") from err


def _open(
    fmt: str,
    kind: str,
    path: Path,
    where: str,
    split: str,
    val_fraction: float | None,
    split_seed: int,
    on_error: str,
) -> Dataset[Any]:
    """:func:`open_layout` once the arguments are checked."""
    if fmt == "coco":
        files = coco_files(path)
        root = path if path.is_dir() else path.parent

        def build_coco(s: str) -> Dataset[Any]:
            data = open_coco(files[s], root, s, with_masks=kind != "boxes", on_error=on_error)
            return SemanticFromInstances(data) if kind == "semantic" else data

        return serve(sorted(files), split, val_fraction, split_seed, where, build_coco)
    if fmt == "voc":
        voc = voc_root(path)
        if kind == "semantic":
            return serve(
                available(voc, "Segmentation"), split, val_fraction, split_seed, where,
                lambda s: open_label_maps(voc, s),
            )  # fmt: skip
        return serve(
            available(voc, "Main"), split, val_fraction, split_seed, where,
            lambda s: open_boxes(voc, s, on_error),
        )  # fmt: skip
    if fmt == "yolo":
        if not path.exists():
            raise ValueError(f"{where}: no such folder or yaml file")

        def build_yolo(s: str) -> Dataset[Any]:
            return from_yolo(path, s, on_error=on_error)  # sizes come from the image headers

        return serve(yolo_splits(path), split, val_fraction, split_seed, where, build_yolo)
    folders = MaskFolders(path)
    return serve(folders.available(), split, val_fraction, split_seed, where, folders.dataset)
