"""Classification: one class per item (an image, or a sequence); accuracy.

Shape shorthand: B items, K classes.

Targets: ``labels`` int64 scalar in ``0..K-1``. Predictions: a list of B dicts,
``class_logits`` float ``[K]``, ``scores`` float scalar (the largest softmax probability) and
``labels`` int64 scalar (its class). ``num_classes`` counts every class (there is no background):
``dataset.num_classes`` or ``len(dataset.categories)``.

``structpred predict`` (image classifiers) writes ``predictions.json``: per image or frame its
file, the predicted class (index and name) and its score (:mod:`structpred.tasks.predict_loop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .base import (
    Headline,
    ItemOutput,
    Metric,
    PredictJob,
    Targets,
    Task,
    expect_items,
    expect_tensor,
    register_task,
)

logger = logging.getLogger(__name__)


def _num_classes(model: nn.Module) -> int:
    k = getattr(getattr(model, "config", None), "num_classes", None)
    if not isinstance(k, int):
        raise ValueError(f"{type(model).__name__} has no config.num_classes; cannot choose its metric")
    return k


def _reads_sequences(model: nn.Module) -> bool:
    """A sequence classifier (its config has a recurrent ``hidden_size``) reads ``[T, F]`` items."""
    return hasattr(getattr(model, "config", None), "hidden_size")


class ClassificationTask(Task):
    """A class per item; top-1 accuracy (and per-class recall)."""

    name = "classification"
    inputs = "image"
    target_keys = {"labels": "int64[] in 0..K-1"}
    prediction_keys = {"class_logits": "float[K]", "scores": "float[]", "labels": "int64[]"}
    num_classes_rule = "every class, no background (dataset.num_classes or len(dataset.categories))"
    headline = Headline("accuracy", True, "top-1 accuracy")

    def model_kwargs(self, dataset: Dataset | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        count = getattr(dataset, "num_classes", None)
        categories = getattr(dataset, "categories", None)
        if isinstance(count, int):
            out.setdefault("num_classes", count)
        elif categories is not None:
            out.setdefault("num_classes", len(categories))
        return out

    def check_dataset(self, dataset: Dataset, model_kwargs: dict[str, Any], where: str) -> None:
        # Inputs are images or sequences (a sequence classifier): only the targets are checked.
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{where}: the dataset is empty")
        _, target = dataset[0]
        if "labels" not in target:
            raise ValueError(f"{where}: item 0 has no 'labels' in its target (it has {sorted(target)})")

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics.classification import Accuracy

        num_classes = _num_classes(model)
        return lambda: Accuracy(num_classes)

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        for i, p in enumerate(expect_items(predictions, batch_size, list(self.prediction_keys), self.name)):
            expect_tensor(p["class_logits"], f"predictions[{i}]['class_logits']", [None], "float")
            expect_tensor(p["scores"], f"predictions[{i}]['scores']", [], "float")
            expect_tensor(p["labels"], f"predictions[{i}]['labels']", [], "int")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        K = _num_classes(model)
        input_size = getattr(model.config, "input_size", None)
        if _reads_sequences(model):  # a sequence classifier: [T_b, F] per item
            inputs = [torch.randn(5 + 2 * b, int(input_size or 1), generator=g) for b in range(batch_size)]
        else:
            inputs = [torch.rand(3, 28 + 4 * b, 30, generator=g) for b in range(batch_size)]
        targets: Targets = [{"labels": torch.randint(0, K, (), generator=g)} for _ in range(batch_size)]
        return inputs, targets

    def predict_files(self, model: nn.Module, job: PredictJob) -> Path:
        if _reads_sequences(model):  # before any file is read or written
            raise ValueError(
                f"{type(model).__name__} classifies sequences, not image files: `structpred predict` has "
                "nothing to run it on (use `structpred eval` on a dataset)"
            )
        return super().predict_files(model, job)

    def predict_batch(self, model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
        preds, _ = model([job.model_view(image) for image in images])
        outputs = []
        for p in preds:
            label = int(p["labels"])
            name = job.class_names[label] if label < len(job.class_names) else str(label)
            outputs.append(ItemOutput([{"label": label, "name": name, "score": float(p["scores"])}]))
        return outputs


register_task(ClassificationTask())
