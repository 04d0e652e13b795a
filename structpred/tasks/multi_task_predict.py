"""``structpred predict`` for the multi-task network: every head's output for an image, from one run.

Shape shorthand: H x W pixels of an input image, K classes of a label-map head.

Each image (or video frame) goes through the model once, alone (images may differ in size; the
network takes one size per batch), and each head's output is turned into files by its own task's
writer where that task has one (detection's boxes, semantic segmentation's label maps), so a
head's files mean what the single-task model's mean. Under ``--out`` (the predict loop,
:mod:`.predict_loop`, writes the :class:`~.base.ItemOutput`):

* ``<stem>.png``: one panel, the heads side by side in the model's head order, each ``H`` high,
  separated by 2 white columns: detections at or above ``job.score_threshold`` drawn over the
  image with their class names; label maps (``semantic``, ``parts``) blended over the image;
  disparity in colour (plasma, near bright, :func:`structpred.viz.disparity_to_color`).
* ``<stem>_<head>.png`` for each label-map head (``_semantic``, ``_parts``): 8-bit grey, one grey
  level = the class id (the semantic-segmentation task's ``_labels`` file).
* depth head: ``<stem>_disparity.npy`` (float32 ``[H, W]``, px of the input width) and
  ``<stem>_disparity.png`` (colour). With a camera — ``job.calib`` (``--calib
  FOCAL,BASELINE[,DOFFS]``), else the depth head's own ``focal`` / ``baseline`` (the training
  data's camera, doffs 0; right for images of the training images' size) — also
  ``<stem>_depth.npy`` (float32 ``[H, W]`` metres, 0 = unknown) and ``<stem>_depth.png`` (16-bit
  grey, KITTI's ``round(metres x 256)``, 0 = unknown, 65535 beyond 255.996 m), as
  :mod:`.depth_predict` writes them.
* ``predictions.json``: one row per image: ``image_id``, ``file_name`` (``frame``, ``time`` for a
  video frame), the files' names (``semantic_png``, ``parts_png``, ``disparity_png``,
  ``disparity_npy``, ``depth_png``, ``depth_npy``) and one entry per head: ``detection``: a list
  of COCO results without ``image_id`` (``category_id`` from ``job.category_ids``, ``bbox`` xywh
  px, ``score``; every detection, whatever the threshold); ``semantic`` / ``parts``:
  ``{"class_pixels": [K counts]}``; ``depth``: ``min_disparity`` / ``mean_disparity`` /
  ``max_disparity`` px, and with a camera ``median_depth`` m and ``camera`` (``focal``,
  ``baseline``, ``doffs``, ``source``: ``"--calib"`` or ``"model"``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics.depth import disparity_to_depth
from ..viz import disparity_to_color
from .base import ItemOutput, PredictJob, get_task
from .depth_predict import depth_png_values

logger = logging.getLogger(__name__)
SEPARATOR = 2  # white columns between the panel's heads
LABEL_MAP_TASK, DETECTION_TASK, DEPTH_TASK = "semantic_segmentation", "detection", "monocular_depth"


class _Replay(nn.Module):
    """A stand-in model returning given predictions: a single task's writer then draws and
    describes one head's output without running the network again."""

    def __init__(self, predictions: Any) -> None:
        super().__init__()
        self.predictions = predictions

    def forward(self, images: Any, targets: Any = None) -> tuple[Any, dict[str, Tensor]]:
        return self.predictions, {}


def _camera(head: nn.Module, job: PredictJob) -> tuple[tuple[float, float, float], str] | None:
    """(focal px, baseline m, doffs px) and where it comes from: ``job.calib``, else the head's."""
    if job.calib is not None:
        return job.calib, "--calib"
    focal, baseline = getattr(head, "focal", None), getattr(head, "baseline", None)
    if focal is None or baseline is None:
        return None
    return (float(focal), float(baseline), 0.0), "model"


def _depth_output(
    disparity: Tensor, camera: tuple[tuple[float, float, float], str] | None
) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
    """Disparity ``float[1, H, W]`` px -> (its json entry, PNG extras, .npy arrays)."""
    color = disparity_to_color(disparity)  # (3, H, W) uint8
    entry: dict[str, Any] = {
        "min_disparity": round(float(disparity.min()), 4),
        "mean_disparity": round(float(disparity.mean()), 4),
        "max_disparity": round(float(disparity.max()), 4),
    }
    extras = {"_disparity": color}
    arrays = {"_disparity": disparity[0].to(torch.float32)}  # (1, H, W) -> (H, W)
    if camera is not None:
        (focal, baseline, doffs), source = camera
        depth = disparity_to_depth(disparity[0].double(), focal, baseline, doffs)  # (H, W) m, 0 = unknown
        extras["_depth"], clipped = depth_png_values(depth)
        if clipped:
            logger.warning("%d depth pixels beyond 255.996 m written as 65535 in the 16-bit PNG", clipped)
        arrays["_depth"] = depth.to(torch.float32)
        known = depth[depth > 0]
        entry["median_depth"] = round(float(known.median()), 4) if known.numel() else None
        entry["camera"] = {"focal": focal, "baseline": baseline, "doffs": doffs, "source": source}
    return entry, extras, arrays


def _back_to_image(preds: Any, task: str, view: tuple[int, int], size: tuple[int, int]) -> Any:
    """One head's predictions of one image seen at ``view`` (h, w) -> in the image's ``size`` (H, W)
    pixels (label maps are resampled by their task's writer)."""
    (h, w), (H, W) = view, size
    if task == DETECTION_TASK:
        det = {k: v.float() if v.is_floating_point() else v for k, v in preds[0].items()}
        if (h, w) != (H, W):
            scale = torch.tensor([W / w, H / h, W / w, H / h], device=det["boxes"].device)
            det["boxes"] = det["boxes"] * scale  # (N, 4) xyxy
        return [det]
    if task == LABEL_MAP_TASK:
        return {"logits": preds["logits"][:1].float(), "label_map": preds["label_map"][:1]}
    disparity = preds["disparity"][0].detach().float().cpu()  # (1, h, w) px of width w
    if (h, w) != (H, W):
        disparity = F.interpolate(disparity[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        disparity = disparity * (W / w)  # px of width W
    return disparity


def predict_multi_task_batch(model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
    """The multi-task writer: ``images`` (float ``[3, H, W]`` each, on the model's device) -> one
    :class:`ItemOutput` per image holding every head's outputs (the module docstring)."""
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict) or not heads:
        raise ValueError(f"{type(model).__name__} has no heads: not a multi-task model")
    tasks = {name: str(getattr(head, "task", "")) for name, head in heads.items()}
    for name, task in tasks.items():
        if task not in (DETECTION_TASK, LABEL_MAP_TASK, DEPTH_TASK):
            raise ValueError(f"head {name!r}: predict has no writer for its task {task!r}")
    if job.calib is not None and DEPTH_TASK not in tasks.values():
        raise ValueError(f"--calib: the model has no depth head (its heads: {', '.join(heads)})")
    outputs = []
    for image in images:  # one at a time: sizes may differ, the network takes one size per batch
        view = job.model_view(image)
        preds, _ = model([view])
        size = (int(image.shape[-2]), int(image.shape[-1]))
        view_size = (int(view.shape[-2]), int(view.shape[-1]))
        row: dict[str, Any] = {}
        panels: list[Tensor] = []
        extras: dict[str, Tensor] = {}
        arrays: dict[str, Tensor] = {}
        for name, task in tasks.items():
            own = _back_to_image(preds[name], task, view_size, size)
            if task == DEPTH_TASK:
                row[name], more, arrays_of = _depth_output(own, _camera(heads[name], job))
                panels.append(more["_disparity"])
                extras.update(more)
                arrays.update(arrays_of)
                continue
            out = get_task(task).predict_batch(_Replay(own), [image], job)[0]  # the task's own writer
            assert out.picture is not None
            panels.append(out.picture)
            if task == DETECTION_TASK:
                row[name] = out.rows
            else:
                row[name] = out.rows[0]
                extras[f"_{name}"] = out.extras["_labels"]  # (H, W) uint8: grey level = class id
        outputs.append(ItemOutput([row], side_by_side(panels), extras, arrays))
    return outputs


def side_by_side(panels: list[Tensor]) -> Tensor:
    """``uint8[3, H, W_i]`` pictures of one height -> ``uint8[3, H, sum W_i + 2 (n - 1)]``, left to
    right, ``SEPARATOR`` white columns between them."""
    if not panels or len({p.shape[1] for p in panels}) != 1:
        raise ValueError(
            f"side_by_side: needs pictures of one height, got {[tuple(p.shape) for p in panels]}"
        )
    H = panels[0].shape[1]
    gap = torch.full((3, H, SEPARATOR), 255, dtype=torch.uint8)
    parts: list[Tensor] = []
    for k, panel in enumerate(panels):
        parts.extend([gap, panel.cpu()] if k else [panel.cpu()])
    return torch.cat(parts, dim=2)  # (3, H, sum W_i + 2 (n - 1))
