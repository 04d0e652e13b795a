"""Depth from rectified stereo pairs: a stereo network's disparity and a monocular network's depth.

Shape shorthand: B pairs, H x W pixels.

Convention (``docs/depth_data.md``): disparity is in pixels of the given image width, positive,
of the **left** view: left pixel ``x`` shows what right pixel ``x - d`` shows. Depth in metres is
``focal * baseline / (d + doffs)`` (``focal`` px, ``baseline`` m, ``doffs`` the principal points'
x offset in px, 0 when the cameras share it). Pairs are rectified by the user (OpenCV's
``stereoRectify`` before the library): an unrectified pair gives wrong disparities, not an error.

Two tasks:

* ``stereo_disparity`` (GC-Net / PSMNet-style networks, :mod:`structpred.models.stereo_net`):
  inputs pairs ``float32[2, 3, H, W]`` (left, right). Targets: ``disparity`` float ``[1, H, W]`` px,
  optional ``valid`` bool ``[H, W]`` and the scalars ``focal``, ``baseline``, ``doffs``.
  Predictions: one dict, ``disparity`` float ``[B, 1, H, W]`` px at the input resolution.
  Metric :class:`~structpred.metrics.depth.DisparityMetric` (EPE, bad-2, bad-3, D1; depth
  metrics too where the calibration is known).
* ``monocular_depth`` (Godard et al. 2017, :mod:`structpred.models.monodepth`): trained
  **self-supervised** on pairs (no target key is required: the right view is the supervision);
  predicts from the left view alone, so it also runs on single views ``[1, 3, H, W]``. Targets,
  for evaluation only: ``disparity`` and / or ``depth`` (``[1, H, W]``), ``valid``, ``focal``,
  ``baseline``, ``doffs``. Predictions as above (the left view's disparity in px). Metric
  :class:`~structpred.metrics.depth.DepthMetric` (AbsRel, SqRel, RMSE, RMSE log, a1-a3, named
  presets); the headline is AbsRel.

``structpred predict`` (:mod:`structpred.tasks.depth_predict`): a stereo model reads image files
in order as (left, right) pairs, a monocular model each image alone; both write the disparity as
a colour PNG and ``.npy``, and with ``--calib FOCAL,BASELINE[,DOFFS]`` the depth in metres
(16-bit PNG, value = metres x 256, 0 = unknown, and ``.npy``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from .base import Headline, Metric, PredictJob, Targets, Task, expect, expect_tensor, register_task

CALIBRATION_KEYS = ("focal", "baseline", "doffs")


def check_calibration(calib: Any, where: str = "--calib") -> tuple[float, float, float]:
    """``(focal px, baseline m, doffs px)`` checked: focal and baseline positive, doffs >= 0, all finite.

    Also accepts the text ``"FOCAL,BASELINE[,DOFFS]"`` (the CLI's ``--calib``; doffs defaults to 0).
    """
    if isinstance(calib, str):
        words = [w.strip() for w in calib.split(",")]
        try:
            values = [float(w) for w in words]
        except ValueError:
            raise ValueError(f"{where}: expected FOCAL,BASELINE[,DOFFS], got {calib[:80]!r}") from None
        calib = (*values, 0.0) if len(values) == 2 else tuple(values)
    if not isinstance(calib, (tuple, list)) or len(calib) != 3:
        raise ValueError(f"{where}: expected (focal px, baseline m, doffs px), got {str(calib)[:80]}")
    try:
        focal, baseline, doffs = (float(v) for v in calib)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: focal, baseline, doffs must be numbers, got {str(calib)[:80]}") from None
    finite = all(math.isfinite(v) for v in (focal, baseline, doffs))
    if not finite or focal <= 0 or baseline <= 0 or doffs < 0:
        raise ValueError(
            f"{where}: need focal > 0 (px), baseline > 0 (metres), doffs >= 0 (px), all finite; "
            f"got focal={focal}, baseline={baseline}, doffs={doffs}"
        )
    return focal, baseline, doffs


def _check_disparity_predictions(task: str, predictions: Any, batch_size: int) -> None:
    ok = isinstance(predictions, dict) and set(predictions) == {"disparity"}
    expect(ok, f"{task}: predictions must be one dict with the key 'disparity'")
    expect_tensor(predictions["disparity"], "predictions['disparity']", [batch_size, 1, None, None], "float")


def _sample_pairs(batch_size: int, seed: int, with_targets: bool) -> tuple[list[torch.Tensor], Targets]:
    """Random pairs ``[2, 3, 32, 64]``, whole-pixel disparities in [0, 8), a camera of focal 64 px."""
    g = torch.Generator().manual_seed(seed)
    H, W = 32, 64
    pairs = [torch.rand(2, 3, H, W, generator=g) for _ in range(batch_size)]
    targets: Targets = []
    for _ in range(batch_size):
        target: dict[str, Any] = {}
        if with_targets:
            target["disparity"] = torch.randint(0, 8, (1, H, W), generator=g).float()
            target["valid"] = torch.rand(H, W, generator=g) > 0.1
            target["focal"] = torch.tensor(64.0)
            target["baseline"] = torch.tensor(0.1)
        targets.append(target)
    return pairs, targets


class StereoDisparityTask(Task):
    """Disparity of the left view from a rectified pair; EPE / bad-2 / bad-3."""

    name = "stereo_disparity"
    inputs = "pair"
    target_keys = {"disparity": "float[1, H, W] px (left view; left x <-> right x - d)"}
    prediction_keys = {"disparity": "float[B, 1, H, W] px (left view)"}
    num_classes_rule = "no classes"
    headline = Headline("epe", False, "EPE (px, disparity end-point error)")

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics.depth import DisparityMetric

        return DisparityMetric

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        _check_disparity_predictions(self.name, predictions, batch_size)

    def predict_files(self, model: nn.Module, job: PredictJob) -> Path:
        """Image files in order as (left, right) pairs -> disparity (and depth with ``job.calib``)."""
        from .depth_predict import predict_depth_files

        return predict_depth_files(model, job, pairs=True, calib=job.calib)

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        return _sample_pairs(batch_size, seed, with_targets=True)


class MonocularDepthTask(Task):
    """Depth of one view, trained self-supervised on stereo pairs (Godard et al.); AbsRel."""

    name = "monocular_depth"
    inputs = "pair"
    target_keys: ClassVar[dict[str, str]] = {}  # self-supervised: the right view is the training signal
    prediction_keys = {"disparity": "float[B, 1, H, W] px (the left / only view)"}
    num_classes_rule = "no classes"
    headline = Headline("abs_rel", False, "AbsRel (absolute relative depth error)")

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics.depth import DepthMetric

        return DepthMetric

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        _check_disparity_predictions(self.name, predictions, batch_size)

    def predict_files(self, model: nn.Module, job: PredictJob) -> Path:
        """Each image file alone -> its disparity (and depth with ``job.calib``)."""
        from .depth_predict import predict_depth_files

        return predict_depth_files(model, job, pairs=False, calib=job.calib)

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        return _sample_pairs(batch_size, seed, with_targets=True)


register_task(StereoDisparityTask())
register_task(MonocularDepthTask())
