"""Optical flow: a 2-vector per pixel between the two frames of a pair; end-point error.

Shape shorthand: B pairs, H x W pixels.

Inputs: pairs ``float32[2, 3, H, W]`` (frame0, frame1; ``layers.views.batch_views`` stacks a
batch). Targets: ``flow`` float ``[2, H, W]`` (dx, dy) in pixels from frame0 to frame1 and
``valid`` bool ``[H, W]`` (the pixel is visible in frame1); optional ``occluded`` bool ``[H, W]``
(frame0 pixel hidden or out of view in frame1; its flow may still be valid) or ``noc`` (KITTI's
non-occluded mask, ``occluded = ~noc``): with either, the metric adds ``epe_noc``, ``epe_occ``,
``fl_noc``, ``fl_occ``, ``noc_pixels``, ``occ_pixels``. Predictions: one dict,
``flow`` float ``[B, 2, H, W]``. No classes. Metric: :class:`~structpred.metrics.flow.FlowMetric`
(EPE, 1/3/5 px accuracy, Fl-all) over valid pixels. ``structpred predict``: image inputs in
order are pairs (each frame with the next) -> ``.flo`` + colour PNG; a video -> its frames with
point trajectories drawn (:mod:`structpred.tasks.flow_predict`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .base import Headline, Metric, PredictJob, Targets, Task, expect, expect_tensor, register_task


class OpticalFlowTask(Task):
    """Dense forward flow of a frame pair; EPE."""

    name = "optical_flow"
    inputs = "pair"
    target_keys = {"flow": "float[2, H, W] (dx, dy) px", "valid": "bool[H, W]"}
    prediction_keys = {"flow": "float[B, 2, H, W] (dx, dy) px"}
    num_classes_rule = "no classes"
    headline = Headline("epe", False, "EPE (px, end-point error)")

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics.flow import FlowMetric

        return FlowMetric

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        ok = isinstance(predictions, dict) and set(predictions) == {"flow"}
        expect(ok, f"{self.name}: predictions must be one dict with the key 'flow'")
        expect_tensor(predictions["flow"], "predictions['flow']", [batch_size, 2, None, None], "float")

    def predict_files(self, model: nn.Module, job: PredictJob) -> Path:
        """Frame pairs -> ``.flo`` + colour PNG; videos -> drawn trajectories (:mod:`.flow_predict`)."""
        from .flow_predict import predict_flow_files

        return predict_flow_files(model, job)

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        pairs = [torch.rand(2, 3, 48, 64, generator=g) for _ in range(batch_size)]
        targets: Targets = [
            {"flow": 4 * torch.randn(2, 48, 64, generator=g), "valid": torch.rand(48, 64, generator=g) > 0.1}
            for _ in range(batch_size)
        ]
        return pairs, targets


register_task(OpticalFlowTask())
