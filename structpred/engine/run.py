"""From names to a run: the model from the registry, the data from a spec, the right metric.

The CLI's ``train`` and ``eval`` are thin wrappers over :func:`train` and :func:`evaluate`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ..data.registry import build_dataset
from ..models import get_model
from ..models.registry import _BUILDERS
from . import checkpoint as ckpt
from .trainer import Metric, TrainConfig, Trainer, seed_everything

log = logging.getLogger(__name__)


def _num_classes(model: nn.Module) -> int:
    """``model.config.num_classes`` (every classifier / segmenter config has it)."""
    config: Any = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_classes"):
        raise ValueError(f"{type(model).__name__} has no config.num_classes; cannot choose its metric")
    return int(config.num_classes)


def metric_for(model: nn.Module, dataset: Dataset) -> Callable[[], Metric] | None:
    """The field's standard metric for the model's task (None: loss only)."""
    task = getattr(model, "task", None)
    if task == "classification":
        from ..metrics.classification import Accuracy

        num_classes = _num_classes(model)
        return lambda: Accuracy(num_classes)
    if task == "detection":
        from ..metrics import MeanAveragePrecision

        return lambda: MeanAveragePrecision(iou_type="bbox")
    if task == "instance_segmentation":
        from ..metrics import MeanAveragePrecision

        return lambda: MeanAveragePrecision(iou_type="segm")
    if task == "semantic_segmentation":
        from ..metrics.segmentation import SegmentationMetric

        config: Any = model.config
        num_classes = _num_classes(model)
        key, ignore = str(config.target_key), int(config.ignore_index)
        return lambda: SegmentationMetric(num_classes, key, ignore)
    if task == "language_model":
        from ..metrics.sequence import BitsPerCharacter

        return BitsPerCharacter
    if task == "regression":
        from ..metrics.sequence import RegressionError

        scale = float(getattr(dataset, "target_scale", 1.0))
        return lambda: RegressionError(scale)
    return None


def model_kwargs_for(name: str, model_kwargs: dict[str, Any], dataset: Dataset | None) -> dict[str, Any]:
    """The builder's keyword arguments: the user's, plus the dataset's class count if it asks.

    Convention: a builder's ``num_classes`` counts object classes, background excluded
    (``len(dataset.categories)``); detection models add their background class themselves.
    Semantic segmenters (builders with a ``target_key`` argument) count background, as
    torchvision's do: they get ``dataset.label_map_classes[target_key]``.
    """
    if name not in _BUILDERS:
        get_model(name)  # raises the registry's ValueError listing the known names
    kwargs = dict(model_kwargs)
    params = inspect.signature(_BUILDERS[name]).parameters
    categories = getattr(dataset, "categories", None)
    if "target_key" in params and "num_classes" in params:
        # A semantic segmenter labels every pixel: its classes are the label map's, background
        # included (the dataset says how many each of its label maps has).
        key = kwargs.get("target_key", params["target_key"].default)
        counts = getattr(dataset, "label_map_classes", None)
        if counts is not None and key not in counts:
            raise ValueError(f"{type(dataset).__name__} has no {key!r} label map; it has {sorted(counts)}")
        if counts is not None:
            kwargs.setdefault("num_classes", int(counts[key]))
        elif categories is not None:
            kwargs.setdefault("num_classes", len(categories) + 1)
    elif categories is not None and "num_classes" in params:
        kwargs.setdefault("num_classes", len(categories))
    vocab = getattr(dataset, "vocab_chars", None)  # a character model's vocabulary (recorded with it)
    if vocab is not None and "vocab" in inspect.signature(_BUILDERS[name]).parameters:
        kwargs.setdefault("vocab", vocab)
    return kwargs


def train(
    model_name: str,
    data: str,
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    data_kwargs: dict[str, Any] | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Train ``model_name`` on the ``data`` spec (see :func:`structpred.data.registry.build_dataset`)."""
    data_kwargs = data_kwargs or {}
    seed_everything(config.seed)  # the model's initial weights depend on it
    train_set = build_dataset(data, "train", **data_kwargs)
    val_set = build_dataset(data, "val", **data_kwargs)
    kwargs = model_kwargs_for(model_name, model_kwargs or {}, train_set)
    model = get_model(model_name, **kwargs)
    config.model_name, config.model_kwargs, config.data = model_name, kwargs, data
    categories = getattr(train_set, "categories", None)
    if categories is not None and hasattr(categories, "names"):
        config.class_names = list(categories.names)
        config.category_ids = [
            int(i) for i in getattr(categories, "ids", range(1, len(categories.names) + 1))
        ]
    trainer = Trainer(model, train_set, val_set, config, out_dir, metric=metric_for(model, train_set))
    return trainer, trainer.fit(resume=resume)


def evaluate(
    checkpoint: str | Path,
    data: str | None = None,
    split: str = "val",
    batch_size: int | None = None,
    device: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    pr_plot: str | Path | None = None,
) -> dict[str, Any]:
    """Rebuild the checkpoint's model, load its weights and evaluate on ``data``'s ``split``.

    ``data`` defaults to the spec the run was trained on. For detection, ``pr_plot`` is where
    the per-class precision-recall curves (IoU 0.5) are drawn.
    """
    model, config = load_model(checkpoint)
    data = data or config.data
    if not data:
        raise ValueError(f"{checkpoint}: no data spec recorded; pass one (e.g. --data shapes)")
    dataset = build_dataset(data, split, **(data_kwargs or {}))
    config.progress = False
    if batch_size:
        config.batch_size = batch_size
    if device:
        config.device = device
    trainer = Trainer(
        model, dataset, dataset, config, Path(checkpoint).parent, metric=metric_for(model, dataset)
    )
    metrics = trainer.evaluate(dataset)
    metric = getattr(trainer, "last_metric", None)
    if pr_plot is not None and metric is not None and hasattr(metric, "pr_curve"):
        from ..viz.plots import plot_pr_curves

        names = config.class_names or list(getattr(getattr(dataset, "categories", None), "names", []))
        curves = {
            (names[label - 1] if 0 < label <= len(names) else str(label)): (r.numpy(), p.numpy())
            for label, (r, p) in metric.pr_curve(iou_threshold=0.5).items()
        }
        if curves:
            plot_pr_curves(curves, pr_plot, title=f"{config.model_name} on {data} {split}, IoU 0.5")
            metrics["pr_plot"] = str(pr_plot)
    return metrics


def load_model(checkpoint: str | Path) -> tuple[nn.Module, TrainConfig]:
    """The checkpoint's model, rebuilt from its recorded builder and weights, in eval mode."""
    tensors, meta = ckpt.load_checkpoint(checkpoint)
    cfg = dict(meta["config"])
    if not cfg.get("model_name"):
        raise ValueError(f"{checkpoint}: the checkpoint records no model name")
    model = get_model(cfg["model_name"], **cfg.get("model_kwargs", {}))
    ckpt.restore(tensors, meta, model, rng=False)
    config = TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})
    return model.eval(), config
