"""Semantic segmentation: a class for every pixel; mIoU (and boundary mIoU).

Shape shorthand: B images, K classes (background included), H x W pixels.

Targets: the label map under the model's ``target_key`` (default ``semantic``; the shapes
world also has ``parts``), int64 ``[H, W]`` in ``0..K-1`` or 255 (ignore). Predictions: one
dict of batched tensors, ``logits`` float ``[B, K, H, W]`` (the network's scores),
``label_map`` int64 ``[B, H, W]`` (arg-max of the refined scores: a dense CRF for DeepLab) and,
for nets with an auxiliary head, ``aux_logits`` float ``[B, K, H, W]``.

``num_classes`` counts every label of the map, background included, as torchvision's
segmenters do: ``dataset.label_map_classes[target_key]`` (or ``len(categories) + 1``).

``structpred predict`` writes per image or frame ``<stem>.png`` (the label map blended over the
image), ``<stem>_labels.png`` (the label map, one grey level per class) and ``predictions.json``
(per image its files and the pixel count of every class; :mod:`structpred.tasks.predict_loop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..viz import overlay_label_map
from .base import (
    Headline,
    ItemOutput,
    Metric,
    PredictJob,
    Targets,
    Task,
    expect,
    expect_tensor,
    register_task,
)

logger = logging.getLogger(__name__)

DEFAULT_TARGET_KEY = "semantic"
IGNORE_INDEX = 255


def _config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    for field in ("num_classes", "target_key", "ignore_index"):
        if not hasattr(config, field):
            raise ValueError(f"{type(model).__name__}.config has no {field}: not a semantic segmenter")
    return config


class SemanticSegmentationTask(Task):
    """Per-pixel classes; mIoU, pixel accuracy, boundary mIoU."""

    name = "semantic_segmentation"
    target_keys = {"semantic": "int64[H, W] in 0..K-1 or 255 (the model's target_key)"}
    prediction_keys = {
        "logits": "float[B, K, H, W]",
        "label_map": "int64[B, H, W] (refined where the model refines)",
        "aux_logits": "float[B, K, H, W] (models with an auxiliary head only)",
    }
    num_classes_rule = "labels of the map, background included (dataset.label_map_classes[target_key])"
    headline = Headline("miou", True, "mIoU")

    def model_kwargs(self, dataset: Dataset | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        key = out.setdefault("target_key", DEFAULT_TARGET_KEY)
        counts = getattr(dataset, "label_map_classes", None)
        categories = getattr(dataset, "categories", None)
        if counts is not None:
            if key not in counts:
                name = type(dataset).__name__
                raise ValueError(f"{name} has no {key!r} label map; it has {sorted(counts)}")
            out.setdefault("num_classes", int(counts[key]))
        elif categories is not None:
            out.setdefault("num_classes", len(categories) + 1)
        return out

    def required_target_keys(self, model_kwargs: dict[str, Any]) -> list[str]:
        return [str(model_kwargs.get("target_key", DEFAULT_TARGET_KEY))]

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics.segmentation import SegmentationMetric

        c = _config(model)
        num_classes, key, ignore = int(c.num_classes), str(c.target_key), int(c.ignore_index)
        return lambda: SegmentationMetric(num_classes, key, ignore)

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        expect(isinstance(predictions, dict), f"{self.name}: predictions must be one dict of batched tensors")
        keys = set(predictions)
        known = set(self.prediction_keys)
        expect({"logits", "label_map"} <= keys <= known, f"{self.name}: keys {sorted(keys)}")
        expect_tensor(predictions["logits"], "predictions['logits']", [batch_size, None, None, None], "float")
        B, K, H, W = predictions["logits"].shape
        expect_tensor(predictions["label_map"], "predictions['label_map']", [B, H, W], "int")
        lm = predictions["label_map"]
        expect(bool(((lm >= 0) & (lm < K)).all()), f"{self.name}: label_map outside 0..{K - 1}")
        if "aux_logits" in predictions:
            expect_tensor(predictions["aux_logits"], "predictions['aux_logits']", [B, K, H, W], "float")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        c = _config(model)
        size = max(64, int(getattr(model, "min_input_size", 0)))  # valid-mode U-Nets need more
        images = [torch.rand(3, size, size, generator=g) for _ in range(batch_size)]
        targets: Targets = []
        for b in range(batch_size):
            labels = torch.randint(0, int(c.num_classes), (size, size), generator=g)
            labels[:4] = int(c.ignore_index)  # an ignored band
            # One instance per foreground class (U-Net's border weights read instance masks).
            masks = torch.stack([labels == k for k in range(1, int(c.num_classes))]).to(torch.uint8)
            targets.append({str(c.target_key): labels, "masks": masks, "image_id": torch.tensor(b)})
        return images, targets

    def predict_batch(self, model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
        outputs = []
        for image in images:  # one at a time: sizes may differ and segmenters take one size
            preds, _ = model([job.model_view(image)])
            K = preds["logits"].shape[1]
            if K > 256:
                raise ValueError(f"{K} classes do not fit an 8-bit label PNG")
            labels = preds["label_map"][0].cpu()  # (h, w): the model's view
            if labels.shape != image.shape[-2:]:  # back to the image's pixels, nearest
                labels = F.interpolate(labels[None, None].float(), size=image.shape[-2:], mode="nearest")[
                    0, 0
                ]
                labels = labels.long()  # (1, 1, h, w) -> (H, W)
            counts = torch.bincount(labels.reshape(-1), minlength=K).tolist()  # (H*W,) -> (K,)
            picture = overlay_label_map(image.cpu(), labels)
            outputs.append(
                ItemOutput([{"class_pixels": counts}], picture, {"_labels": labels.to(torch.uint8)})
            )
        return outputs


register_task(SemanticSegmentationTask())
