"""Single-object tracking: one box per frame of a clip, given the first; OTB one-pass evaluation.

Shape shorthand: B clips, T frames, H x W pixels, M tracks.

Inputs: clips ``float32[T, 3, H, W]`` in [0, 1]. Targets: ``boxes`` float ``[T, 4]`` xyxy px
(frame 0's box initialises the tracker), optional ``visible`` bool ``[T]``; or a multi-object
clip's ``tracks`` ``[M, T, 4]`` (NaN where unseen) + ``visible`` ``[M, T]`` (``shapes-video``):
the first track seen in frame 0 is the target
(:func:`structpred.heads.sint_loss.target_track`, the rule the models use too). Predictions: one
dict, ``boxes`` float ``[B, T, 4]`` xyxy px. No classes. Metric: :class:`OPEMetric`, the OTB
one-pass evaluation (:func:`structpred.metrics.ope.ope`) per clip, frames where the target is not
visible excluded; success AUC (headline) and precision at 20 px averaged over the clips (the mean
of per-sequence curves, as the OTB toolkit's overall plot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..heads.sint_loss import target_track
from .base import Headline, Metric, Targets, Task, expect, expect_tensor, register_task


def xyxy_to_xywh(boxes: Tensor, visible: Tensor | None = None) -> np.ndarray:
    """``[T, 4]`` xyxy -> float64 ``[T, 4]`` x, y, w, h; rows where ``visible`` is False become NaN."""
    b = boxes.detach().to("cpu", torch.float64).numpy().copy()
    b[:, 2:] -= b[:, :2]  # (x2, y2) -> (w, h)
    if visible is not None:
        b[~visible.detach().cpu().numpy().astype(bool)] = np.nan
    return b


class OPEMetric:
    """OTB one-pass evaluation over clips: ``success_auc``, ``precision_20`` (means over the
    clips of the per-clip values), ``success_curve`` [21], ``precision_curve`` [51], ``num_clips``."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def update(self, preds: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> None:
        """preds ``{"boxes": [B, T, 4]}`` xyxy; targets one dict per clip (the task's keys)."""
        from ..metrics.ope import ope

        boxes = preds["boxes"]
        if len(targets) != boxes.shape[0]:
            raise ValueError(f"OPEMetric: {len(targets)} targets for {boxes.shape[0]} predicted clips")
        T = boxes.shape[1]
        for i, target in enumerate(targets):
            gt, visible = target_track(target, T, f"OPEMetric: targets[{i}]")
            self.results.append(ope(xyxy_to_xywh(boxes[i]), xyxy_to_xywh(gt, visible)))

    def compute(self) -> dict[str, Any]:
        """The averages over the clips seen so far (NaN when none)."""
        scored = [r for r in self.results if r["num_frames"] > 0]
        if not scored:
            return {"success_auc": float("nan"), "precision_20": float("nan"), "num_clips": 0}
        success = np.mean([r["success_curve"] for r in scored], 0)  # (21,)
        precision = np.mean([r["precision_curve"] for r in scored], 0)  # (51,)
        return {
            "success_auc": float(success.mean()),
            "precision_20": float(precision[20]),
            "success_curve": success,
            "precision_curve": precision,
            "num_clips": len(scored),
        }


class SingleObjectTrackingTask(Task):
    """One target per clip, tracked from its first-frame box; OPE success AUC."""

    name = "single_object_tracking"
    inputs = "clip"
    target_keys = {
        "boxes": "float[T, 4] xyxy px (frame 0 initialises; or tracks [M, T, 4]: the first seen in frame 0)",
        "visible": "bool[T] (optional)",
    }
    prediction_keys = {"boxes": "float[B, T, 4] xyxy px, the tracked box per frame"}
    num_classes_rule = "no classes"
    headline = Headline("success_auc", True, "OPE success AUC")

    def required_target_keys(self, model_kwargs: dict[str, Any]) -> list[str]:
        return []  # boxes or tracks: checked by check_dataset

    def check_dataset(self, dataset: Dataset, model_kwargs: dict[str, Any], where: str) -> None:
        super().check_dataset(dataset, model_kwargs, where)
        frames, target = dataset[0]
        target_track(target, frames.shape[0], f"{where}: item 0")

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        return OPEMetric

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        ok = isinstance(predictions, dict) and set(predictions) == {"boxes"}
        expect(ok, f"{self.name}: predictions must be one dict with the key 'boxes'")
        expect_tensor(predictions["boxes"], "predictions['boxes']", [batch_size, None, 4], "float")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        T, H, W = 4, 32, 64
        clips, targets = [], []
        for _ in range(batch_size):
            clip = 0.1 * torch.rand(T, 3, H, W, generator=g)
            start = torch.rand(2, generator=g) * torch.tensor([W - 24.0, H - 16.0])  # (x, y)
            step = torch.randn(2, generator=g)
            boxes = []
            for t in range(T):
                x, y = (start + t * step).clamp(min=0).tolist()
                x, y = min(x, W - 13.0), min(y, H - 13.0)
                clip[t, :, int(y) : int(y) + 12, int(x) : int(x) + 12] = 0.9  # a bright square
                boxes.append([int(x), int(y), int(x) + 12, int(y) + 12])
            clips.append(clip)
            targets.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32),
                    "visible": torch.ones(T, dtype=torch.bool),
                }
            )
        return clips, targets


register_task(SingleObjectTrackingTask())
