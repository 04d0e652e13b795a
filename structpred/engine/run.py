"""From names to a run: the model from the registry, the data from a spec, the right metric.

The CLI's ``train`` and ``eval`` are thin wrappers over :func:`train`, :func:`resume` and
:func:`evaluate`.

Image size (``image_size=N``, ``--image-size N``): one rule, "the longer side of every image
becomes N, aspect kept", applied where the model resizes:

- a model whose builder takes ``min_size`` / ``max_size`` (the detectors) is built with
  ``min_size=max_size=N``; it resizes internally and maps its boxes back to the input's pixels;
- a model whose builder takes ``input_size`` (the image classifiers) is built with
  ``input_size=N`` (it resamples every image to N x N itself);
- any other image model (the segmenters label the pixels they are given) gets its data
  resampled: each item's images and targets (label maps nearest) to a longer side of N.

``N`` is recorded in the config (``image_size``); ``eval`` uses the recorded size unless given
another. A sequence model has no image size (``ValueError``).

Augmentation (``config.augment``, ``--augment SPEC``; :mod:`structpred.data.augment`): the
training items only, item ``i`` of epoch ``e`` drawn from ``(seed, e, i)`` (the trainer tells
the data its epoch), so a resumed run is exact. Validation and evaluation are never augmented.

Weight EMA (``config.ema``, ``--ema DECAY[,tau=N]``; :mod:`.ema`): validation and the best
checkpoint use the average; :func:`load_model` (eval, predict, export) loads it when the
checkpoint holds one, the raw weights with ``raw=True``.

Resume (:func:`resume`): the whole config comes from the run's newest checkpoint. Settings
that change the run (``RUN_CHANGING``) are compared with the checkpoint's and refused unless
``override``; harmless ones (``HARMLESS``: device, workers, progress...) apply freely.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.augment import augmented
from ..data.registry import build_dataset
from ..data.transforms import resize
from ..models import get_model, model_info
from ..tasks import Task, task_of
from . import checkpoint as ckpt
from .ema import canonical_ema, choose_weights
from .trainer import TrainConfig, Trainer, seed_everything

log = logging.getLogger(__name__)

Report = Callable[[str], None]

#: Config fields a resumed run may change without ``override`` (they do not change the weights).
HARMLESS = ("device", "num_workers", "progress", "keep_last", "checkpoint_every", "eval_every", "log_every")
#: Config fields compared on resume (with ``model_args`` / ``data_kwargs`` key by key).
RUN_CHANGING = (
    "model_name", "data", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
    "schedule", "warmup_steps", "milestones", "gamma", "clip_grad_norm", "amp", "seed", "weights",
    "freeze", "num_classes", "image_size", "augment", "ema", "model_args", "data_kwargs",
)  # fmt: skip


class ResumeMismatch(ValueError):
    """The resumed run's settings differ from its checkpoint's; ``differences`` lists them as
    ``(name, checkpoint value, given value)`` (``model_args.width`` for a builder argument)."""

    def __init__(self, run_dir: Path, differences: list[tuple[str, Any, Any]]) -> None:
        self.differences = differences
        lines = "; ".join(f"{name}: checkpoint {old!r}, given {new!r}" for name, old, new in differences)
        super().__init__(
            f"{run_dir}: the settings differ from the checkpoint's ({lines}); pass override=True"
        )


# ---------------------------------------------------------------------------------- image size
class _LongerSide(Dataset):
    """``dataset`` with each item resampled to a longer side of ``size`` (see the module doc)."""

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        images, target = self.dataset[index]
        H, W = images.shape[-2:]
        scale = self.size / max(H, W)
        return resize(images, target, (max(1, round(H * scale)), max(1, round(W * scale))))

    def __getattr__(self, name: str) -> Any:  # categories, label_map_classes... of the dataset
        if name in ("dataset", "size"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def image_size_rule(
    model_name: str, kwargs: dict[str, Any], image_size: int | None, sample: Any = None
) -> tuple[dict[str, Any], bool]:
    """The builder kwargs for ``image_size`` and whether the data must be resampled instead.

    ``sample``: one item's input, if known; the size applies to images (``[..., 3, H, W]``) only.
    """
    if image_size is None:
        return dict(kwargs), False
    if image_size < 16:
        raise ValueError(f"--image-size {image_size}: too small (at least 16 pixels)")
    task = task_of(model_name)
    is_image = isinstance(sample, Tensor) and sample.dim() >= 3 and sample.shape[-3] == 3
    if task.inputs == "sequence" or (sample is not None and not is_image):
        raise ValueError(f"--image-size: {model_name} ({task.name}) reads sequences, not images")
    for sizes in ({"min_size": image_size, "max_size": image_size}, {"input_size": image_size}):
        if _accepts(model_name, {**kwargs, **sizes}, f"--image-size {image_size}"):
            return {**kwargs, **sizes}, False
    return dict(kwargs), True


# How builders refuse a keyword they do not have: the builder itself (TypeError), or the settings
# dataclass behind its ``**config`` (make_config / config_from: "unknown ... settings [...]").
_UNKNOWN_KEYWORD = re.compile(r"unexpected keyword argument|^unknown .* settings \[")


def _accepts(model_name: str, kwargs: dict[str, Any], where: str) -> bool:
    """Whether the builder has the keywords ``kwargs`` (built on the meta device: nothing
    allocated). A builder that has them but refuses their values raises a ``ValueError`` that
    names ``where`` (e.g. a grid that does not divide the size)."""
    try:
        with torch.device("meta"):
            get_model(model_name, **kwargs)
    except TypeError:  # an unknown keyword of the builder
        return False
    except ValueError as err:
        if _UNKNOWN_KEYWORD.search(str(err)):
            return False
        raise ValueError(f"{where}: {model_name} refuses it: {err}") from None
    return True


# ---------------------------------------------------------------------------------- train
def _num_classes(task: Task, model_name: str, data: Dataset, num_classes: int, where: str) -> None:
    params = inspect.signature(model_info(model_name).builder).parameters
    if "num_classes" not in params:
        raise ValueError(f"--num-classes: {model_name} takes no num_classes argument")
    needed = task.model_kwargs(data, {}).get("num_classes")
    if isinstance(needed, int) and num_classes < needed:
        raise ValueError(
            f"--num-classes {num_classes}: {where} needs at least {needed} ({task.num_classes_rule})"
        )


def _weights_in(model: nn.Module, weights: str | None, freeze: str | None, say: Report) -> None:
    """Load ``weights`` into the fresh model, then freeze ``freeze``; say what happened."""
    if weights:
        from ..models.weights import load_weights

        say(str(load_weights(model, weights)))
    if freeze:
        from ..models.weights import freeze as freeze_parts

        names = freeze_parts(model, freeze)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
        say(f"--freeze {freeze}: frozen {shown}; {trainable:,} of {total:,} parameters train")


def train(
    model_name: str,
    data: str,
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    data_kwargs: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    freeze: str | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    report: Report | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Train ``model_name`` on the ``data`` spec (see :func:`structpred.data.registry.build_dataset`).

    ``weights`` (a checkpoint of ours or a torchvision state dict) is loaded right after the
    model is built and ``freeze`` applied after it (:mod:`structpred.models.weights`);
    ``num_classes`` replaces the data's class count (at least the data's); ``image_size``: see
    the module docstring. All are recorded in the config. With ``resume`` the newest checkpoint
    in ``out_dir`` supersedes ``weights`` (not reloaded). ``report`` receives the lines a user
    reads (weights loaded, per-epoch figures); default the log.
    """
    say: Report = report or log.info
    if not resume and (previous := ckpt.latest_checkpoint(out_dir)) is not None:
        raise ValueError(
            f"{out_dir} already holds a run ({previous.name}): continue it with --resume {out_dir}, "
            "or give another --out (a new run never overwrites an old one)"
        )
    data_kwargs = dict(data_kwargs or {})
    user_args = dict(model_kwargs or {})
    seed_everything(config.seed)  # the model's initial weights depend on it
    task = task_of(model_name)
    read = {"task": task.name, **data_kwargs}  # data on disk gives the task's targets
    train_set = build_dataset(data, "train", **read)
    val_set = build_dataset(data, "val", **read)
    args = dict(user_args)
    if num_classes is not None:
        _num_classes(task, model_name, train_set, num_classes, f"--data {data}")
        args["num_classes"] = num_classes
    sample = train_set[0][0] if image_size is not None else None
    kwargs, resample = image_size_rule(model_name, task.model_kwargs(train_set, args), image_size, sample)
    task.check_dataset(train_set, kwargs, f"--data {data} (train)")  # before any training step
    task.check_dataset(val_set, kwargs, f"--data {data} (val)")
    if resample and image_size is not None:
        train_set, val_set = _LongerSide(train_set, image_size), _LongerSide(val_set, image_size)
    # training items only, never validation (refused here if the data cannot be augmented)
    if config.augment and task.inputs == "sequence":
        raise ValueError(f"--augment: {model_name} ({task.name}) reads sequences; augmentation is for images")
    train_set = augmented(train_set, config.augment, config.seed, int(kwargs.get("ignore_index", 255)))
    model = get_model(model_name, **kwargs)
    if resume and ckpt.latest_checkpoint(out_dir) is not None:
        _weights_in(model, None, freeze, say)  # the checkpoint holds the weights
    else:
        _weights_in(model, str(weights) if weights else None, freeze, say)
    config.model_name, config.model_kwargs, config.data = model_name, kwargs, data
    config.model_args, config.data_kwargs = user_args, data_kwargs
    config.weights = str(weights) if weights else config.weights if resume else None
    config.freeze, config.num_classes, config.image_size = freeze, num_classes, image_size
    categories = getattr(train_set, "categories", None)
    if categories is not None and hasattr(categories, "names"):
        config.class_names = list(categories.names)
        config.category_ids = [
            int(i) for i in getattr(categories, "ids", range(1, len(categories.names) + 1))
        ]
    trainer = Trainer(
        model, train_set, val_set, config, out_dir, task.metric(model, train_set), task=task, report=say
    )
    return trainer, trainer.fit(resume=resume)


# ---------------------------------------------------------------------------------- resume
def recorded_config(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The config of ``run_dir``'s newest checkpoint (old checkpoints: missing fields default)
    and the checkpoint's state."""
    _, meta = ckpt.load_checkpoint(run_dir)
    cfg = dict(meta.get("config", {}))
    if not cfg.get("model_name") or not cfg.get("data"):
        raise ValueError(f"{run_dir}: the checkpoint records no model name or data spec; cannot resume")
    config = TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})
    if not config.model_args:  # checkpoints before model_args was recorded
        config.model_args = dict(config.model_kwargs)
    if isinstance(config.milestones, list):
        config.milestones = tuple(config.milestones)
    return config, meta


def config_differences(config: TrainConfig, changes: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(name, recorded, given)`` for each setting of ``changes`` that differs from ``config``.

    ``model_args`` and ``data_kwargs`` are compared key by key (given keys only); a builder
    argument is compared with the value the model was built with.
    """
    out: list[tuple[str, Any, Any]] = []
    for name, given in changes.items():
        if name not in RUN_CHANGING:
            raise ValueError(f"{name!r} is not a run setting (known: {', '.join(RUN_CHANGING)})")
        if name in ("model_args", "data_kwargs"):
            built = config.model_kwargs if name == "model_args" else config.data_kwargs
            for key, value in dict(given).items():
                old = built.get(key, getattr(config, name).get(key))
                if _differ(old, value):
                    out.append((f"{name}.{key}", old, value))
        elif name == "ema" and _differ(config.ema, given := canonical_ema(given, "ema")):
            out.append((name, config.ema, given))
        elif name != "ema" and _differ(getattr(config, name), given):
            out.append((name, getattr(config, name), given))
    return out


def _differ(old: Any, new: Any) -> bool:
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) != list(new)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return float(old) != float(new)
    return bool(old != new)


def resume(
    run_dir: str | Path,
    changes: dict[str, Any] | None = None,
    override: bool = False,
    settings: dict[str, Any] | None = None,
    report: Report | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Continue the run in ``run_dir`` from its newest checkpoint, with its recorded config.

    Args:
        changes: run-changing settings (``RUN_CHANGING`` names) the caller gives; any that
            differs from the checkpoint's raises :class:`ResumeMismatch` unless ``override``,
            which applies it and appends it to ``config.overrides`` (saved in every checkpoint).
        settings: harmless settings (``HARMLESS``), applied as given.
    """
    run_dir = Path(run_dir)
    say: Report = report or log.info
    config, meta = recorded_config(run_dir)
    differences = config_differences(config, changes or {})
    if differences and not override:
        raise ResumeMismatch(run_dir, differences)
    if any(name == "weights" for name, _, _ in differences):
        raise ValueError(
            f"{run_dir}: a resumed run does not load another weights file (its checkpoint holds the "
            "weights); start a new run with --weights instead"
        )
    for name, old, new in differences:
        if "." in name:
            field, key = name.split(".", 1)
            getattr(config, field)[key] = new
        else:
            setattr(config, name, new)
        say(f"override: {name} {old!r} -> {new!r}")
    if differences:
        changed = {name: [old, new] for name, old, new in differences}
        record = {"step": int(meta["step"]), "epoch": int(meta["epoch"]), "changes": changed}
        config.overrides = [*config.overrides, record]
    for name, value in (settings or {}).items():
        if name not in HARMLESS:
            raise ValueError(f"{name!r} is not a harmless setting (those are {', '.join(HARMLESS)})")
        setattr(config, name, value)
    user_args = dict(config.model_args)
    return train(
        config.model_name,
        config.data,
        config,
        run_dir,
        resume=True,
        model_kwargs=user_args,
        data_kwargs=dict(config.data_kwargs),
        freeze=config.freeze,
        num_classes=config.num_classes,
        image_size=config.image_size,
        report=say,
    )


# ---------------------------------------------------------------------------------- evaluate
def evaluation_data(
    config: TrainConfig, data: str | None, split: str, data_kwargs: dict[str, Any] | None = None
) -> tuple[str, Dataset]:
    """``(spec, dataset)`` a checkpoint's model is evaluated on, read as ``evaluate`` reads it.

    ``data`` defaults to the recorded spec, and then its recorded data arguments are updated by
    ``data_kwargs``; data on disk is read for the model's task; the dataset is checked against
    the task and resampled to the recorded ``--image-size`` when the model does not resize.
    """
    task = task_of(config.model_name)
    kwargs = {**config.data_kwargs, **(data_kwargs or {})} if not data else dict(data_kwargs or {})
    kwargs.setdefault("task", task.name)  # boxes, instance masks or label maps from data on disk
    spec = data or config.data
    dataset = build_dataset(spec, split, **kwargs)
    task.check_dataset(dataset, config.model_kwargs, f"--data {spec} ({split})")
    _, resample = image_size_rule(config.model_name, config.model_kwargs, config.image_size)
    if resample and config.image_size is not None:
        dataset = _LongerSide(dataset, config.image_size)
    return spec, dataset


def evaluate(
    checkpoint: str | Path,
    data: str | None = None,
    split: str = "val",
    batch_size: int | None = None,
    device: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    pr_plot: str | Path | None = None,
    best: bool = False,
    image_size: int | None = None,
    progress: bool = False,
    raw: bool = False,
) -> dict[str, Any]:
    """Rebuild the checkpoint's model, load its weights and evaluate on ``data``'s ``split``.

    ``checkpoint``: a run directory (its newest checkpoint, or the best with ``best``) or a
    checkpoint file. ``data`` defaults to the spec the run was trained on (and then its data
    arguments, updated by ``data_kwargs``). ``image_size`` defaults to the recorded one. For
    detection, ``pr_plot`` is where the per-class precision-recall curves (IoU 0.5) are drawn.
    ``progress``: show the evaluation's progress (:mod:`structpred.progress`). ``raw``: the raw
    weights even when the checkpoint holds an EMA of them.
    """
    model, config = load_model(checkpoint, best=best, image_size=image_size, raw=raw)
    if not data and not config.data:
        raise ValueError(f"{checkpoint}: no data spec recorded; pass one (e.g. --data shapes)")
    data, dataset = evaluation_data(config, data, split, data_kwargs)
    config.progress, config.ema = progress, None  # the weights chosen are the ones evaluated
    if batch_size:
        config.batch_size = batch_size
    if device:
        config.device = device
    task = task_of(config.model_name)
    metric = task.metric(model, dataset)
    run_dir = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    trainer = Trainer(model, dataset, dataset, config, run_dir, metric=metric, task=task)
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


def load_model(
    checkpoint: str | Path, best: bool = False, image_size: int | None = None, raw: bool = False
) -> tuple[nn.Module, TrainConfig]:
    """The checkpoint's model, rebuilt from its recorded builder and weights, in eval mode.

    ``image_size`` rebuilds it for another input size (the recorded one by default). The
    weights are the checkpoint's EMA when it holds one (logged), the raw ones with ``raw``.
    """
    tensors, meta = ckpt.load_checkpoint(checkpoint, best=best)
    tensors, which = choose_weights(tensors, meta, raw)
    if which is not None:
        log.info("%s: %s", checkpoint, which)
    cfg = dict(meta["config"])
    if not cfg.get("model_name"):
        raise ValueError(f"{checkpoint}: the checkpoint records no model name")
    config = TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})
    kwargs = dict(cfg.get("model_kwargs", {}))
    if image_size is not None and image_size != config.image_size:
        kwargs, _ = image_size_rule(config.model_name, kwargs, image_size)
        config.model_kwargs, config.image_size = kwargs, image_size
    model = get_model(cfg["model_name"], **kwargs)
    ckpt.restore(tensors, meta, model, rng=False)
    return model.eval(), config
