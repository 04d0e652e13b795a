"""From names to a run: the model from the registry, the data from a spec, the right metric.

The CLI's ``train`` and ``eval`` are thin wrappers over :func:`train` and :func:`evaluate`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from ..data.registry import build_dataset
from ..models import get_model
from ..tasks import task_of
from . import checkpoint as ckpt
from .trainer import TrainConfig, Trainer, seed_everything

log = logging.getLogger(__name__)


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
    task = task_of(model_name)
    kwargs = task.model_kwargs(train_set, model_kwargs or {})
    task.check_dataset(train_set, kwargs, f"--data {data} (train)")  # before any training step
    task.check_dataset(val_set, kwargs, f"--data {data} (val)")
    model = get_model(model_name, **kwargs)
    config.model_name, config.model_kwargs, config.data = model_name, kwargs, data
    categories = getattr(train_set, "categories", None)
    if categories is not None and hasattr(categories, "names"):
        config.class_names = list(categories.names)
        config.category_ids = [
            int(i) for i in getattr(categories, "ids", range(1, len(categories.names) + 1))
        ]
    trainer = Trainer(
        model, train_set, val_set, config, out_dir, metric=task.metric(model, train_set), task=task
    )
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
    task = task_of(config.model_name)
    task.check_dataset(dataset, config.model_kwargs, f"--data {data} ({split})")
    metric = task.metric(model, dataset)
    trainer = Trainer(model, dataset, dataset, config, Path(checkpoint).parent, metric=metric, task=task)
    metrics = trainer.evaluate(dataset)
    last = trainer.last_metric
    if pr_plot is not None and last is not None and hasattr(last, "pr_curve"):
        from ..viz.plots import plot_pr_curves

        names = config.class_names or list(getattr(getattr(dataset, "categories", None), "names", []))
        curves = {
            (names[label - 1] if 0 < label <= len(names) else str(label)): (r.numpy(), p.numpy())
            for label, (r, p) in last.pr_curve(iou_threshold=0.5).items()
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
