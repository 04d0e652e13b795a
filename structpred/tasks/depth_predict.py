"""``structpred predict`` for depth: a stereo model on (left, right) image pairs, a monocular model on
each image alone -> disparity (colour PNG + ``.npy``) and, with a calibration, depth in metres.

Shape shorthand: H x W pixels of an input image.

The pair rule of the stereo model: **image inputs, in the order given, are (left, right) pairs**
(``l1.png r1.png l2.png r2.png``; a folder's images in sorted order, so name them ``*_0`` /
``*_1`` or ``left`` / ``right`` to sort in that order). Unlike optical flow's consecutive frames
(:mod:`.flow_predict`), each image belongs to one pair. Pairs must be rectified (OpenCV's
``stereoRectify`` beforehand): an unrectified pair gives wrong disparities, not an error. A
monocular model reads each image alone (one view, V = 1).

Each item writes, under ``--out``, named by its (left) image's stem:

* ``<stem>_disparity.png``: :func:`structpred.viz.depth.disparity_to_color` (plasma, near bright,
  scaled to the item's largest disparity, unknown black);
* ``<stem>_disparity.npy``: float32 ``[H, W]``, disparity in pixels of the input width;
* with ``calib = (focal px, baseline m, doffs px)``: ``<stem>_depth.npy`` float32 ``[H, W]``
  metres (0 = unknown) and ``<stem>_depth.png``, 16-bit grey, KITTI's convention:
  ``value = round(depth * 256)``, 0 = unknown (depths beyond 255.996 m are written as 65535, with
  a warning).

``predictions.json`` has one row per item (``file_name``, ``right_file`` for pairs, the outputs'
names, ``min_disparity`` / ``mean_disparity`` / ``max_disparity`` px and ``median_depth`` m);
``images.json`` one entry per written colour picture.

Bad input is a ``ValueError`` naming the file before anything is written: a video, an odd
number of images for a stereo model, a pair's images of different sizes, an unreadable file, a
bad calibration, an output that would land on an input.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..data.images import image_size, read_image
from ..metrics.depth import disparity_to_depth
from ..progress import Progress, progress
from ..viz import save_png
from ..viz.depth import disparity_to_color
from .base import PredictJob
from .depth import check_calibration
from .flow_predict import check_pair
from .outputs import write_json
from .video_frames import is_video

logger = logging.getLogger(__name__)
DEPTH_PNG_SCALE = 256.0  # KITTI: 16-bit value = metres x 256


def predict_disparity(
    model: nn.Module, left: Tensor, right: Tensor | None = None, input_size: int | None = None
) -> Tensor:
    """The model's disparity of ``left`` (``float[3, H, W]`` in [0, 1]) -> ``float[1, H, W]`` px.

    ``right`` given: a stereo model's pair ``[2, 3, H, W]``; None: one view ``[1, 3, H, W]`` (a
    monocular model). ``input_size``: the model runs on images resampled to this longer side (the
    run's ``--image-size``); the disparity comes back at ``H x W``, rescaled to that width's pixels.
    """
    check_pair(left, left if right is None else right, "left, right" if right is not None else "image")
    _, H, W = left.shape
    views = torch.stack([left] if right is None else [left, right])  # (V, 3, H, W)
    if input_size is not None:
        scale = input_size / max(H, W)
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        views = F.interpolate(views, size=size, mode="bilinear", align_corners=False, antialias=True)
    preds, _ = model([views])
    disp = preds["disparity"][0].float()  # (1, h, w)
    w = disp.shape[-1]
    if tuple(disp.shape[-2:]) != (H, W):
        disp = F.interpolate(disp[None], size=(H, W), mode="bilinear", align_corners=False)[0] * (W / w)
    if not torch.isfinite(disp).all():
        raise ValueError("the model's disparity holds NaN or inf (check the checkpoint and the input size)")
    return disp


def _items(job: PredictJob, pairs: bool) -> list[tuple[Path, Path | None, Path]]:
    """(left or only image, right image or None, output stem), checked from the headers alone."""
    for p in job.paths:
        if is_video(p):
            raise ValueError(f"{p}: depth prediction reads images, not videos (extract the frames first)")
    stems = list(job.stems) if job.stems else [Path(p.stem) for p in job.paths]
    sizes = [image_size(p) for p in job.paths]  # ValueError naming an unreadable file
    if not pairs:
        return [(p, None, s) for p, s in zip(job.paths, stems, strict=True)]
    if len(job.paths) % 2:
        raise ValueError(
            f"{job.paths[-1]}: a stereo model needs (left, right) pairs, got {len(job.paths)} images "
            "(an odd number; the last one has no right image)"
        )
    items: list[tuple[Path, Path | None, Path]] = []
    for k in range(0, len(job.paths), 2):
        left, right = job.paths[k], job.paths[k + 1]
        if sizes[k] != sizes[k + 1]:
            raise ValueError(
                f"{left} is {sizes[k][0]} x {sizes[k][1]} but its right image {right} is "
                f"{sizes[k + 1][0]} x {sizes[k + 1][1]} (H x W): a stereo pair must have one size"
            )
        items.append((left, right, stems[k]))
    return items


def _save_atomic(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename: a stopped run leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, array)

    _save_atomic(path, write)


def depth_png_values(depth: Tensor) -> tuple[Tensor, int]:
    """Depth ``[H, W]`` / ``[1, H, W]`` metres -> ``uint16[H, W]`` KITTI values ``round(depth x 256)``
    (0 = unknown: <= 0 or not finite) and how many pixels were clipped at 65535 (beyond 255.996 m)."""
    d = depth.detach().cpu().double().reshape(depth.shape[-2:])  # (H, W)
    d = torch.where(torch.isfinite(d) & (d > 0), d, 0.0)
    values = torch.round(d * DEPTH_PNG_SCALE)
    clipped = int((values > 65535).sum())
    return values.clamp(0, 65535).to(torch.uint16), clipped


def write_depth_png(path: Path, depth: Tensor) -> int:
    """Depth ``[H, W]`` / ``[1, H, W]`` metres -> 16-bit grey PNG (:func:`depth_png_values`).
    Returns how many pixels were clipped at 65535 (beyond 255.996 m)."""
    values, clipped = depth_png_values(depth)
    image = Image.fromarray(values.to(torch.int32).numpy().astype(np.uint16))  # mode I;16
    _save_atomic(path, lambda tmp: image.save(tmp, format="PNG"))
    return clipped


def _write_item(
    job: PredictJob, stem: Path, disp: Tensor, calib: tuple[float, float, float] | None
) -> dict[str, Any]:
    """One item's files; returns its predictions.json row (file names relative to ``job.out``)."""
    names = {"disparity_png": f"{stem}_disparity.png", "disparity_npy": f"{stem}_disparity.npy"}
    save_png(job.out / names["disparity_png"], disparity_to_color(disp))
    plain = disp[0].cpu().numpy().astype(np.float32)  # (1, H, W) -> (H, W)
    _save_npy(job.out / names["disparity_npy"], plain)
    row: dict[str, Any] = {
        **names,
        "min_disparity": round(float(disp.min()), 4),
        "mean_disparity": round(float(disp.mean()), 4),
        "max_disparity": round(float(disp.max()), 4),
    }
    if calib is not None:
        depth = disparity_to_depth(disp[0].double(), *calib)  # (H, W) metres, 0 = unknown
        names = {"depth_png": f"{stem}_depth.png", "depth_npy": f"{stem}_depth.npy"}
        metres = depth.numpy().astype(np.float32)
        _save_npy(job.out / names["depth_npy"], metres)
        clipped = write_depth_png(job.out / names["depth_png"], depth)
        if clipped:
            logger.warning("%s: %d pixels beyond 255.996 m written as 65535", names["depth_png"], clipped)
        known = depth[depth > 0]
        row.update(names, median_depth=round(float(known.median()), 4) if known.numel() else None)
    return row


def _check_outputs(job: PredictJob, items: list[tuple[Path, Path | None, Path]], calib: Any) -> None:
    """Outputs never overwrite inputs (a caller may pass an ``out`` that holds them)."""
    inputs = {p.resolve() for p in job.paths}
    suffixes = ["_disparity.png", "_disparity.npy"] + (["_depth.png", "_depth.npy"] if calib else [])
    for left, _, stem in items:
        for suffix in suffixes:
            out = (job.out / f"{stem}{suffix}").resolve()
            if out in inputs:
                raise ValueError(
                    f"{out}: the output for {left} would overwrite an input; choose another --out"
                )


def predict_depth_files(
    model: nn.Module, job: PredictJob, pairs: bool, calib: tuple[float, float, float] | None
) -> Path:
    """Run a stereo (``pairs=True``) or monocular model on ``job.paths`` (module docstring) and
    write disparity (and depth with ``calib`` = (focal px, baseline m, doffs px)); returns
    ``predictions.json``'s path."""
    calib = None if calib is None else check_calibration(calib)
    items = _items(job, pairs)
    _check_outputs(job, items, calib)
    job.out.mkdir(parents=True, exist_ok=True)
    device = next(iter(model.parameters()), torch.empty(0)).device
    rows: list[dict[str, Any]] = []
    pictures: list[dict[str, Any]] = []
    bar: Progress[Any] = progress(None, total=len(items), desc="predict", enabled=job.progress)
    try:
        with torch.no_grad():
            for left_path, right_path, stem in items:
                left = read_image(left_path).to(device)
                right = None if right_path is None else read_image(right_path).to(device)
                if right is not None:
                    check_pair(left, right, f"{left_path}, {right_path}")
                disp = predict_disparity(model, left, right, job.input_size).cpu()
                row = {"file_name": str(left_path)}
                if right_path is not None:
                    row["right_file"] = str(right_path)
                row.update(_write_item(job, stem, disp, calib))
                rows.append(row)
                _, H, W = disp.shape
                pictures.append({"id": len(pictures), "file_name": str(left_path), "height": H, "width": W,
                                 "output": row["disparity_png"]})  # fmt: skip
                bar.update(1)
    finally:
        write_json(job.out / "images.json", pictures)
        write_json(job.out / "predictions.json", rows)
        bar.close()
    logger.info("%d disparity maps -> %s", len(rows), job.out)
    return job.out / "predictions.json"
