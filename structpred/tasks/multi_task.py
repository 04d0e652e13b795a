"""Multi-task: one network, several structured heads, every head measured by its own task's metric.

Shape shorthand: B images (one size per batch), H x W pixels.

Models: :mod:`structpred.models.multitask` (``multitask_narrow``, ``multitask_fpn``). Inputs are
images. Targets: each head's own keys (:func:`~structpred.models.multitask.head_target_keys`):
``boxes`` + ``labels`` (detection), ``semantic``, ``parts`` (label maps), ``depth`` or
``disparity`` (``[1, H, W]``); an item may lack some heads' keys (that head's loss skips it).
Predictions: one dict ``{head: predictions}``, each under its head's task's contract (detection:
a list of B dicts; ``semantic`` / ``parts``: ``logits`` / ``label_map``; ``depth``: ``disparity``).

Metric :class:`MultiTaskMetric`: every head's task metric in one pass, its results prefixed
``<head>/`` (``detection/map``, ``semantic/miou``, ``parts/miou``, ``depth/abs_rel``, ...), and
``score``: the mean of the heads' headline figures, a lower-is-better one counted as ``1 - x``
(the best checkpoint is chosen by it).

``num_classes``: per head, from the dataset: ``num_classes`` = ``len(dataset.categories)``
(detection), ``semantic_classes`` / ``part_classes`` = ``dataset.label_map_classes[...]``; the
depth head takes ``focal`` / ``baseline`` from the dataset's attributes of those names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..models.multitask import HEAD_KINDS, HEAD_TASKS, check_head_names, head_target_keys
from .base import (
    Headline,
    ItemOutput,
    Metric,
    PredictJob,
    Targets,
    Task,
    check_input,
    expect,
    get_task,
    register_task,
)

SCAN_ITEMS = 16  # check_dataset looks at this many items, spread over the dataset


def _heads_of(model: nn.Module) -> dict[str, Any]:
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict) or not heads:
        raise ValueError(f"{type(model).__name__} has no heads: not a multi-task model")
    return dict(heads.items())


def _select(predictions: Any, index: list[int]) -> Any:
    """The predictions of the items ``index``: a list's entries or a dict's batched rows."""
    if isinstance(predictions, list):
        return [predictions[i] for i in index]
    rows = torch.tensor(index, device=next(iter(predictions.values())).device)
    return {k: v.index_select(0, rows) for k, v in predictions.items()}


class MultiTaskMetric:
    """Every head's metric, each fed the items that carry that head's targets."""

    def __init__(self, metrics: dict[str, tuple[Metric, Any]]) -> None:
        self.metrics = metrics  # head -> (its task's metric, the head)
        self.seen = dict.fromkeys(metrics, 0)

    def update(self, preds: dict[str, Any], targets: list[dict[str, Tensor]]) -> None:
        for name, (metric, head) in self.metrics.items():
            have = [i for i, t in enumerate(targets) if all(k in t for k in head.target_keys)]
            if have:
                sub = head.metric_targets([targets[i] for i in have])
                metric.update(_select(preds[name], have), sub)
                self.seen[name] += len(have)

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        figures = []
        for name, (metric, head) in self.metrics.items():
            if not self.seen[name]:  # no item had this head's targets: no figures
                continue
            results = metric.compute()
            out.update({f"{name}/{k}": v for k, v in results.items()})
            headline = get_task(head.task).headline
            value = float(results[headline.key])
            figures.append(value if headline.higher_is_better else 1.0 - value)
        out["score"] = sum(figures) / len(figures) if figures else float("nan")
        return out


class MultiTaskTask(Task):
    """Several structured heads on one backbone; every head's own metric, and their mean score."""

    name = "multi_task"
    target_keys = {
        "boxes": "float[N, 4] xyxy pixels (detection head)",
        "labels": "int64[N] in 1..K (detection head)",
        "semantic": "int64[H, W] (semantic head)",
        "parts": "int64[H, W] (parts head)",
        "depth": "float[1, H, W] metres, or disparity float[1, H, W] px (depth head)",
    }
    prediction_keys = {name: f"the {task} task's predictions" for name, task in HEAD_TASKS.items()}
    num_classes_rule = (
        "per head: num_classes = len(dataset.categories) (detection), semantic_classes / part_classes "
        "= dataset.label_map_classes['semantic' / 'parts']"
    )
    headline = Headline("score", True, "mean of the heads' headlines (AbsRel as 1 - AbsRel)")

    def model_kwargs(self, dataset: Dataset | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        heads = check_head_names(out.get("heads", HEAD_KINDS))
        categories = getattr(dataset, "categories", None)
        counts = getattr(dataset, "label_map_classes", None) or {}
        if "detection" in heads and categories is not None:
            out.setdefault("num_classes", len(categories))
        for head, key in (("semantic", "semantic_classes"), ("parts", "part_classes")):
            if head in heads and head in counts:
                out.setdefault(key, int(counts[head]))
        if "depth" in heads and out.get("depth_target", "depth") == "depth":
            for key in ("focal", "baseline"):
                if isinstance(getattr(dataset, key, None), int | float):
                    out.setdefault(key, float(getattr(dataset, key)))
        return out

    def required_target_keys(self, model_kwargs: dict[str, Any]) -> list[str]:
        heads = check_head_names(model_kwargs.get("heads", HEAD_KINDS))
        target = str(model_kwargs.get("depth_target", "depth"))
        return sorted({k for h in heads for k in head_target_keys(h, target)})

    def check_dataset(self, dataset: Dataset, model_kwargs: dict[str, Any], where: str) -> None:
        """Every head's targets are on some item (``SCAN_ITEMS`` spread over the dataset): a head
        asked for a target the data does not have is a ``ValueError`` naming the head and the key."""
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(f"{where}: the dataset is empty")
        scanned = sorted({i * n // min(n, SCAN_ITEMS) for i in range(min(n, SCAN_ITEMS))})
        items = [dataset[i] for i in scanned]
        for i, item in zip(scanned, items, strict=True):
            if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], dict)):
                raise ValueError(f"{where}: item {i} is not an (image, target dict) pair")
        heads = check_head_names(model_kwargs.get("heads", HEAD_KINDS))
        target = str(model_kwargs.get("depth_target", "depth"))
        for head in heads:
            for key in head_target_keys(head, target):
                if not any(key in item[1] for item in items):
                    raise ValueError(
                        f"{where}: head {head!r} needs the target {key!r}, which the dataset's items do "
                        f"not have (item 0 has {sorted(items[0][1])}); drop the head (heads=...) or use "
                        "data that has it"
                    )
        check_input(items[0][0], self.inputs, f"{where}: item {scanned[0]}")

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        factories = {
            name: (get_task(head.task).metric(head, dataset), head) for name, head in _heads_of(model).items()
        }
        missing = [name for name, (f, _) in factories.items() if f is None]
        if missing:
            raise ValueError(f"heads {missing} have no metric")
        return lambda: MultiTaskMetric({name: (f(), head) for name, (f, head) in factories.items()})  # type: ignore[misc]

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        expect(
            isinstance(predictions, dict) and bool(predictions),
            f"{self.name}: predictions must be a non-empty dict of heads",
        )
        for name, preds in predictions.items():
            expect(name in HEAD_TASKS, f"{self.name}: unknown head {name!r} in the predictions")
            get_task(HEAD_TASKS[name]).check_predictions(preds, batch_size)

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        H = W = 64
        images = [torch.rand(3, H, W, generator=g) for _ in range(batch_size)]
        targets: Targets = [{"image_id": torch.tensor(b)} for b in range(batch_size)]
        for name, head in _heads_of(model).items():
            for t in targets:
                if name == "detection":
                    xy = torch.rand(3, 2, generator=g) * (W / 2)  # (N, 2) top-left corners
                    t["boxes"] = torch.cat([xy, xy + 8 + torch.rand(3, 2, generator=g) * (W / 3)], 1)
                    t["labels"] = torch.randint(1, head.num_classes + 1, (3,), generator=g)
                elif name in ("semantic", "parts"):
                    labels = torch.randint(0, head.config.num_classes, (H, W), generator=g)
                    labels[:4] = head.config.ignore_index  # an ignored band
                    t[name] = labels
                else:
                    t[head.target_key] = 0.5 + 10 * torch.rand(1, H, W, generator=g)  # m or px, positive
        return images, targets

    def predict_batch(self, model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
        from .multi_task_predict import predict_multi_task_batch

        return predict_multi_task_batch(model, images, job)


register_task(MultiTaskTask())
