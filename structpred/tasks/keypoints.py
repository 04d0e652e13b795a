"""Keypoint detection ("human pose" in Mask R-CNN's words): boxes plus K named points per object, OKS AP.

Shape shorthand: B images, N objects or detections of an image, K keypoints per object.

Targets (torchvision's keys): ``boxes`` float ``[N, 4]`` xyxy pixels, ``labels`` int64 ``[N]``
in ``1..C``, ``keypoints`` float ``[N, K, 3]`` = (x, y, visibility) in pixels; visibility 0 =
not labelled (ignored by the loss and the metric), 1 = labelled but hidden, 2 = visible (COCO's).
Predictions: ``boxes``, ``scores``, ``labels`` as detection, plus ``keypoints`` float ``[N, K, 3]``
= (x, y, 1) in the input image's pixels and ``keypoints_scores`` float ``[N, K]`` (the heatmap
logit at the chosen point), as torchvision's Keypoint R-CNN.

``num_classes`` counts object classes, background excluded; ``num_keypoints`` is the dataset's
K (``len(dataset.keypoint_names)``). The metric is pycocotools' keypoint AP by OKS with the
dataset's ``keypoint_sigmas`` (:mod:`structpred.metrics.keypoints`): its 10 numbers, ``map``
(OKS AP) the headline, plus the box AP of the same predictions as ``box_map``, ``box_map_50``...

``structpred predict`` writes detection's outputs; each row of ``predictions.json`` gains
``keypoints``, COCO's flat ``[x1, y1, v1, x2, ...]`` (v = 1, as COCO results), and
``keypoints_scores``; the picture draws the keypoints of the detections it draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..viz import draw_keypoints
from .base import (
    Headline,
    ItemOutput,
    Metric,
    PredictJob,
    Targets,
    expect_items,
    expect_tensor,
    register_task,
)
from .detection import DetectionTask

# OKS sigma of a keypoint when the data name none (a dataset that is not COCO's 17 person points):
# between COCO's face points (0.025) and its limbs (0.07-0.1).
DEFAULT_SIGMA = 0.05


def _num_keypoints(model: nn.Module) -> int:
    k = getattr(model, "num_keypoints", None)
    if not isinstance(k, int):
        raise ValueError(f"{type(model).__name__} has no int num_keypoints (keypoints per object)")
    return k


def keypoint_sigmas(dataset: Dataset | None, num_keypoints: int) -> list[float]:
    """The dataset's OKS sigmas (``keypoint_sigmas``); else COCO's for 17 points, else 0.05 each."""
    sigmas = getattr(dataset, "keypoint_sigmas", None)
    if sigmas is not None:
        out = [float(s) for s in sigmas]
        if len(out) != num_keypoints:
            raise ValueError(
                f"the dataset has {len(out)} keypoint_sigmas but the model predicts {num_keypoints} keypoints"
            )
        return out
    if num_keypoints == 17:
        from ..metrics.keypoints import coco_person_sigmas

        return coco_person_sigmas().tolist()
    return [DEFAULT_SIGMA] * num_keypoints


class KeypointMetric:
    """OKS AP (pycocotools' 10 keypoint numbers) and the box AP of the same predictions (``box_*``)."""

    def __init__(self, sigmas: Sequence[float]) -> None:
        from ..metrics import MeanAveragePrecision

        self.keypoints = MeanAveragePrecision(iou_type="keypoints", keypoint_sigmas=sigmas)
        self.boxes = MeanAveragePrecision(iou_type="bbox")

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Add a batch (see :meth:`MeanAveragePrecision.update`)."""
        self.keypoints.update(preds, targets)
        self.boxes.update(preds, targets)

    def compute(self) -> dict[str, Tensor]:
        """Keypoint stats under their names, box stats prefixed ``box_``."""
        out = self.keypoints.compute()
        for name, value in self.boxes.compute().items():
            if name != "classes":
                out[f"box_{name}"] = value
        return out

    def pr_curve(self, *args: Any, **kwargs: Any) -> dict[int, tuple[Tensor, Tensor]]:
        """The OKS precision-recall curves (see :meth:`MeanAveragePrecision.pr_curve`)."""
        return self.keypoints.pr_curve(*args, **kwargs)


class _Replay(nn.Module):
    """Hands out predictions already made, so detection's writer does not run the model twice."""

    def __init__(self, preds: list[dict[str, Tensor]]) -> None:
        super().__init__()
        self.preds = preds

    def forward(self, images: list[Tensor]) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        return self.preds, {}


class KeypointTask(DetectionTask):
    """Boxes, labels and K keypoints per object; keypoint AP by OKS."""

    name = "keypoints"
    target_keys = {**DetectionTask.target_keys, "keypoints": "float[N, K, 3] (x, y, visibility) pixels"}
    prediction_keys = {
        **DetectionTask.prediction_keys,
        "keypoints": "float[N, K, 3] (x, y, 1) pixels of the input image",
        "keypoints_scores": "float[N, K] heatmap logits",
    }
    num_classes_rule = (
        "object classes, background excluded (len(dataset.categories)); num_keypoints = "
        "len(dataset.keypoint_names)"
    )
    iou_type = "keypoints"
    headline = Headline("map", True, "keypoint AP (OKS)")

    def model_kwargs(self, dataset: Dataset | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = super().model_kwargs(dataset, kwargs)
        names = getattr(dataset, "keypoint_names", None)
        if names is not None:
            out.setdefault("num_keypoints", len(names))
        return out

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        sigmas = keypoint_sigmas(dataset, _num_keypoints(model))
        return lambda: KeypointMetric(sigmas)

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        items = expect_items(predictions, batch_size, list(self.prediction_keys), self.name)
        for i, p in enumerate(items):
            n = p["boxes"].shape[0] if isinstance(p["boxes"], Tensor) else -1
            k = (
                p["keypoints"].shape[1]
                if isinstance(p["keypoints"], Tensor) and p["keypoints"].dim() == 3
                else -1
            )
            expect_tensor(p["boxes"], f"predictions[{i}]['boxes']", [n, 4], "float")
            expect_tensor(p["scores"], f"predictions[{i}]['scores']", [n], "float")
            expect_tensor(p["labels"], f"predictions[{i}]['labels']", [n], "int")
            expect_tensor(p["keypoints"], f"predictions[{i}]['keypoints']", [n, k, 3], "float")
            expect_tensor(p["keypoints_scores"], f"predictions[{i}]['keypoints_scores']", [n, k], "float")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        images, targets = super().sample_batch(model, batch_size, seed)
        K = _num_keypoints(model)
        g = torch.Generator().manual_seed(seed + 1)
        for target in targets:
            boxes = target["boxes"]  # (N, 4)
            N = boxes.shape[0]
            frac = torch.rand(N, K, 2, generator=g)  # (N, K, 2) points inside each box
            xy = boxes[:, None, :2] + frac * (boxes[:, None, 2:] - boxes[:, None, :2])
            vis = torch.randint(0, 3, (N, K, 1), generator=g).float()
            vis[:, 0] = 2.0  # every object has a labelled point
            target["keypoints"] = torch.cat([xy, vis], 2) * (vis > 0)  # unlabelled: (0, 0, 0)
        return images, targets

    def predict_batch(self, model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
        preds, _ = model(images)
        outputs = super().predict_batch(_Replay(preds), images, job)
        for out, pred in zip(outputs, preds, strict=True):
            kp, kp_scores = pred["keypoints"].cpu(), pred["keypoints_scores"].cpu()
            flat = torch.cat([kp[..., :2], torch.ones_like(kp[..., :1])], -1).flatten(
                1
            )  # (N, K, 3) -> (N, 3K)
            for row, points, point_scores in zip(out.rows, flat.tolist(), kp_scores.tolist(), strict=True):
                row["keypoints"] = points
                row["keypoints_scores"] = point_scores
            shown = pred["scores"].cpu() >= job.score_threshold
            if out.picture is not None and bool(shown.any()):
                out.picture = draw_keypoints(out.picture, kp[shown], labels=pred["labels"].cpu()[shown])
        return outputs


register_task(KeypointTask())
