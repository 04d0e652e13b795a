"""Multi-object tracking: a box per object per frame, linked into identities (tubes); CLEAR MOT, IDF1, HOTA.

Shape shorthand: B clips, T frames, M ground-truth tracks of a clip, R (frame, track) rows.

Inputs: clips ``float32[T, 3, H, W]``. Targets (one dict per clip, as ``shapes-video`` gives them):
``tracks`` float ``[M, T, 4]`` xyxy pixels, NaN where the object is not in the frame, ``labels``
int64 ``[M]`` in ``1..K``, optional ``visible`` bool ``[M, T]`` (default: the box is finite).
Predictions: a list of B dicts, one row per (frame, tube): ``frames`` int64 ``[R]`` (0-based),
``track_ids`` int64 ``[R]`` (1-based, unique within the clip), ``boxes`` float ``[R, 4]`` xyxy,
``scores`` float ``[R]``, ``labels`` int64 ``[R]``. ``num_classes``: the detector's object
classes (``len(dataset.categories)``), as detection.

Metric :class:`MOTMetric`: every clip's rows become MOTChallenge rows (frame from 1, boxes as
``x, y, w, h``), clips placed one after another (frames and identities offset so no two clips
share either), scored once by :func:`structpred.metrics.mot_metrics` (motmetrics' CLEAR MOT and
IDF1 at IoU 0.5, trackeval's HOTA): the numbers a benchmark's sequences give when concatenated.
The headline is HOTA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .base import Headline, Metric, Targets, Task, expect_items, expect_tensor, register_task
from .detection import DetectionTask

TRACKING_KEYS = ("frames", "track_ids", "boxes", "scores", "labels")


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """xyxy ``[N, 4]`` -> MOTChallenge ``x, y, w, h`` ``[N, 4]``."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


class MOTMetric:
    """Accumulates clips' predicted tubes and ground-truth tracks; :meth:`compute` scores them
    with :func:`structpred.metrics.mot_metrics` (see the module docstring)."""

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self.reset()

    def reset(self) -> None:
        self._gt: list[np.ndarray] = []
        self._hyp: list[np.ndarray] = []
        self._frames = 0  # frames of the clips seen so far: the next clip's frame offset
        self._ids = 0  # identities so far (gt and predicted share one offset per clip)

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"MOTMetric: {len(preds)} predictions for {len(targets)} clips")
        for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
            tracks = t.get("tracks")
            if not isinstance(tracks, Tensor) or tracks.dim() != 3 or tracks.shape[-1] != 4:
                raise ValueError(
                    f"MOTMetric: target {i} needs 'tracks' float [M, T, 4], got {type(tracks).__name__}"
                )
            M, T, _ = tracks.shape
            boxes = tracks.detach().double().cpu().numpy()  # (M, T, 4)
            seen = np.isfinite(boxes).all(-1)  # (M, T)
            if "visible" in t:
                seen &= t["visible"].detach().cpu().numpy().astype(bool)
            m, f = np.nonzero(seen)  # the (track, frame) pairs with a box
            gt = np.column_stack([f + 1 + self._frames, m + 1 + self._ids, _xywh(boxes[m, f])])  # (G, 6)
            frames = p["frames"].detach().cpu().numpy().astype(np.int64)
            ids = p["track_ids"].detach().cpu().numpy().astype(np.int64)
            if frames.size and (frames.min() < 0 or frames.max() >= T):
                raise ValueError(f"MOTMetric: prediction {i} has frames outside 0..{T - 1}")
            hyp_boxes = p["boxes"].detach().double().cpu().numpy().reshape(-1, 4)
            hyp = np.column_stack([frames + 1 + self._frames, ids + self._ids, _xywh(hyp_boxes)])  # (R, 6)
            self._gt.append(gt)
            self._hyp.append(hyp)
            self._frames += T
            self._ids += max(M, int(ids.max(initial=0))) + 1

    def compute(self) -> dict[str, Any]:
        from ..metrics.mot import mot_metrics

        gt = np.concatenate(self._gt) if self._gt else np.zeros((0, 6))
        hyp = np.concatenate(self._hyp) if self._hyp else np.zeros((0, 6))
        return mot_metrics(gt, hyp, iou_threshold=self.iou_threshold)


class MultiObjectTrackingTask(Task):
    """Tubes of a clip (a video detector: a detector + a linker); HOTA, MOTA, IDF1."""

    name = "multi_object_tracking"
    inputs = "clip"
    target_keys = {"tracks": "float[M, T, 4] xyxy px, NaN where unseen", "labels": "int64[M] in 1..K"}
    prediction_keys = {
        "frames": "int64[R] (0-based)",
        "track_ids": "int64[R] (1-based)",
        "boxes": "float[R, 4] xyxy px",
        "scores": "float[R]",
        "labels": "int64[R] in 1..K",
    }
    num_classes_rule = "the detector's object classes, background excluded (len(dataset.categories))"
    headline = Headline("hota", True, "HOTA (trackeval)")

    model_kwargs = DetectionTask.model_kwargs  # num_classes = len(dataset.categories), as detection

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        return MOTMetric

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        for i, p in enumerate(expect_items(predictions, batch_size, list(TRACKING_KEYS), self.name)):
            n = p["frames"].shape[0] if isinstance(p["frames"], Tensor) else -1
            expect_tensor(p["frames"], f"predictions[{i}]['frames']", [n], "int")
            expect_tensor(p["track_ids"], f"predictions[{i}]['track_ids']", [n], "int")
            expect_tensor(p["boxes"], f"predictions[{i}]['boxes']", [n, 4], "float")
            expect_tensor(p["scores"], f"predictions[{i}]['scores']", [n], "float")
            expect_tensor(p["labels"], f"predictions[{i}]['labels']", [n], "int")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        """Clips of 3 frames, 48 x 64, with two boxes sliding across them."""
        g = torch.Generator().manual_seed(seed)
        T, H, W = 3, 48, 64
        clips, targets = [], []
        for _ in range(batch_size):
            clips.append(torch.rand(T, 3, H, W, generator=g))
            start = torch.rand(2, 1, 2, generator=g) * torch.tensor([W / 2, H / 2])  # (M, 1, 2) top-left
            step = torch.arange(T, dtype=torch.float32).view(1, T, 1) * 4.0  # (1, T, 1) px per frame
            xy = start + step  # (M, T, 2)
            tracks = torch.cat([xy, xy + 12.0], dim=-1)  # (M, T, 4) xyxy
            targets.append({"tracks": tracks, "labels": torch.ones(2, dtype=torch.int64)})
        return clips, targets


register_task(MultiObjectTrackingTask())
