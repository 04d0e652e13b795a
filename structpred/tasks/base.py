"""What a task is: the contract between a family of models, its data, its metric and its outputs.

A model names its task when it is registered (``@register_model(task="detection")``); the
engine and the CLI look the task up here and dispatch through it, never on the name:

* ``inputs``: what one item's input is: ``"image"`` (``[3, H, W]``), ``"pair"``
  (``[2, 3, H, W]``), ``"clip"`` (``[T, 3, H, W]``) or ``"sequence"`` (``[T, ...]``).
* ``target_keys`` / ``prediction_keys``: each key with its one meaning and shape. Predictions
  are the same in train and eval mode (:mod:`structpred.models.contract`).
* :meth:`Task.model_kwargs`: the builder arguments a dataset decides (the ``num_classes``
  convention of the task, a vocabulary...).
* :meth:`Task.check_dataset`: the dataset's items carry the task's targets; run before the
  first training step, so a wrong ``--data`` fails at once, not in the middle of an epoch.
* :meth:`Task.metric`: the field's standard metric (a fresh one per evaluation).
* :meth:`Task.check_predictions`: the prediction contract, asserted by the registry-wide test.
* :meth:`Task.sample_batch`: a small valid batch for a built model (registry-wide test, docs).
* :meth:`Task.predict_batch`: ``structpred predict``'s writer for this task's outputs (run over
  images and video frames by :mod:`structpred.tasks.predict_loop`, through :meth:`Task.predict_files`).

A new task is a new file in this package that subclasses :class:`Task` and registers an
instance with :func:`register_task`; nothing in ``engine/`` changes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

Targets = list[dict[str, Any]]
# Runs the model on one batch (the engine moves it to the device, under autocast, no grad).
RunBatch = Callable[[Any, Targets], tuple[Any, dict[str, Tensor]]]


class Metric(Protocol):
    """What the engine needs of a metric (``structpred.metrics`` classes have it)."""

    def update(self, preds: Any, targets: list[dict[str, Tensor]]) -> None: ...

    def compute(self) -> dict[str, Any]: ...


class Headline(NamedTuple):
    """A task's headline figure: its key in the metric's results, its direction, what it is
    (the console's per-epoch line and table header; the best checkpoint is chosen by it)."""

    key: str
    higher_is_better: bool
    kind: str


@dataclass(frozen=True)
class PredictJob:
    """What ``structpred predict`` asks of a task's writer (see :mod:`structpred.tasks.predict_loop`)."""

    paths: Sequence[Path]  # input files: images and videos (tasks.video_frames.VIDEO_SUFFIXES)
    out: Path  # the output directory (exists)
    class_names: Sequence[str] = ()  # names of labels 1..K (detection) or 0..K-1 (classification)
    category_ids: Sequence[int] = ()  # the data's own id of each label (COCO results)
    score_threshold: float = 0.5  # draw detections at or above this score
    batch_size: int = 4
    stems: Sequence[Path] = ()  # per input, its output path below ``out``, no suffix (tasks.outputs)
    image_ids: Sequence[int] = ()  # per input image, the data's own image id (default: its index)
    video_out: bool = False  # also encode each video's drawn frames as ``<stem>_annotated.mp4``
    progress: bool = True  # progress on stderr (structpred.progress: a bar on a terminal, lines in a log)
    total: int = 0  # images + video frames expected (the progress bar's length; 0: unknown)
    input_size: int | None = None  # the model sees images resampled to this longer side (model_view)
    amp: str | None = None  # "bf16" / "fp16": run the model under autocast, as the run evaluated it
    calib: tuple[float, float, float] | None = None  # (focal px, baseline m, doffs px): depth in metres

    def model_view(self, image: Tensor) -> Tensor:
        """``image`` as the model was trained to see it: resampled to a longer side of
        ``input_size`` (the recorded ``--image-size`` of a model that does not resize itself, as
        ``structpred eval`` resamples its data), else unchanged. Outputs go back to ``image``'s pixels."""
        if self.input_size is None:
            return image
        from ..data.transforms import resize

        H, W = image.shape[-2:]
        scale = self.input_size / max(H, W)
        return resize(image, {}, (max(1, round(H * scale)), max(1, round(W * scale))))[0]


@dataclass
class ItemOutput:
    """A task's prediction for one image or frame, as the predict loop writes it."""

    rows: list[dict[str, Any]]  # its rows of predictions.json (the loop adds image_id, file_name...)
    picture: Tensor | None = None  # uint8 [3, H, W] drawing, saved as <stem>.png (and a video frame)
    # suffix -> <stem><suffix>.png: uint8 [H, W] grey, uint8 [3, H, W] colour or uint16 [H, W] 16-bit grey
    extras: dict[str, Tensor] = field(default_factory=dict)
    arrays: dict[str, Tensor] = field(default_factory=dict)  # suffix -> <stem><suffix>.npy, as it is


class Task(abc.ABC):
    """Base class of the tasks; subclasses fill the class attributes and override what differs."""

    name: ClassVar[str] = ""
    inputs: ClassVar[str] = "image"
    target_keys: ClassVar[dict[str, str]] = {}
    prediction_keys: ClassVar[dict[str, str]] = {}
    num_classes_rule: ClassVar[str] = "the model has no classes"
    headline: ClassVar[Headline] = Headline("loss", False, "validation loss")

    # ---------------------------------------------------------------- data -> builder, checks
    def model_kwargs(self, dataset: Dataset | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The builder's keyword arguments: the user's ``kwargs`` plus what ``dataset`` decides."""
        return dict(kwargs)

    def required_target_keys(self, model_kwargs: dict[str, Any]) -> list[str]:
        """Keys every target must have for a model built with ``model_kwargs``."""
        return list(self.target_keys)

    def check_dataset(self, dataset: Dataset, model_kwargs: dict[str, Any], where: str) -> None:
        """Raise a ``ValueError`` unless ``dataset``'s first item carries this task's targets."""
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{where}: the dataset is empty")
        item = dataset[0]
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], dict)):
            raise ValueError(f"{where}: items must be (input, target dict) pairs, got {type(item).__name__}")
        missing = [k for k in self.required_target_keys(model_kwargs) if k not in item[1]]
        if missing:
            raise ValueError(
                f"{where}: item 0 has no {missing} in its target (it has {sorted(item[1])}); the "
                f"{self.name} task needs {sorted(self.required_target_keys(model_kwargs))}"
            )
        check_input(item[0], self.inputs, f"{where}: item 0")

    # ---------------------------------------------------------------- evaluation
    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric] | None:
        """A factory of the task's standard metric for ``model`` (None: validation loss only)."""
        return None

    def evaluate(
        self, run: RunBatch, batches: Iterable[tuple[Any, Targets]], metric: Metric | None
    ) -> tuple[dict[str, float], int]:
        """The evaluation loop: every batch through ``run``, predictions into ``metric``.

        Returns each loss term summed over items, and the item count. Items are images, pairs
        or sequences alike; a task whose evaluation needs state across batches (a tracker over
        a video's frames) overrides this.
        """
        return evaluation_loop(run, batches, metric)

    # ---------------------------------------------------------------- contract
    @abc.abstractmethod
    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        """Raise an ``AssertionError`` naming the key unless ``predictions`` keep the contract."""

    @abc.abstractmethod
    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        """A small valid ``(inputs, targets)`` batch for ``model`` (random, seeded)."""

    # ---------------------------------------------------------------- outputs
    def predict_batch(self, model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
        """``structpred predict``'s writer: the model on a batch of images (``[3, H, W]`` each, on
        the model's device, under ``no_grad``) -> one :class:`ItemOutput` per image.

        A task whose inputs are not images keeps this default, which refuses."""
        raise ValueError(
            f"the {self.name} task reads {self.inputs}s, not image files: `structpred predict` has "
            "nothing to run it on (use `structpred eval` on a dataset)"
        )

    def finish_video(self, rows: list[dict[str, Any]], stem: Path, job: PredictJob) -> list[str]:
        """After a video's last frame in ``structpred predict``: its prediction ``rows`` (every
        frame's, in order; changed in place) and its output ``stem`` below ``job.out``. A task may
        add to the rows and write files about the whole video (detection links its boxes into
        tubes); returns the files written. The default does nothing."""
        return []

    def predict_files(self, model: nn.Module, job: PredictJob) -> Path:
        """Run ``model`` on ``job.paths`` (images, video frames), write the task's outputs under
        ``job.out``; returns the path of ``predictions.json``."""
        if type(self).predict_batch is Task.predict_batch:
            self.predict_batch(model, [], job)  # the refusal, before any file is read
        from .predict_loop import run_predict  # the loop imports this module

        return run_predict(self, model, job)

    def describe(self) -> str:
        """One paragraph for docs and ``--help``: inputs, targets, predictions, classes."""
        targets = ", ".join(f"{k} {v}" for k, v in self.target_keys.items())
        preds = ", ".join(f"{k} {v}" for k, v in self.prediction_keys.items())
        return (
            f"{self.name}: inputs {self.inputs}; targets {targets or '-'}; predictions {preds}; "
            f"num_classes: {self.num_classes_rule}"
        )


def evaluation_loop(
    run: RunBatch, batches: Iterable[tuple[Any, Targets]], metric: Metric | None
) -> tuple[dict[str, float], int]:
    """:meth:`Task.evaluate`'s default: per batch of items, losses summed and the metric updated."""
    sums: dict[str, float] = {}
    count = 0
    for inputs, targets in batches:
        preds, losses = run(inputs, targets)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(inputs)
        count += len(inputs)
        if metric is not None:
            metric.update(preds, targets)
    return sums, count


def check_input(x: Any, kind: str, where: str) -> None:
    """Raise a ``ValueError`` unless ``x`` is one item's input of ``kind`` (see the module doc)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{where}: the input must be a Tensor, got {type(x).__name__}")
    rank = {"image": 3, "pair": 4, "clip": 4}.get(kind)
    if rank is None:  # sequences: any [T, ...]
        return
    if x.dim() != rank or x.shape[-3] != 3 or not x.is_floating_point():
        shape = {"image": "[3, H, W]", "pair": "[2, 3, H, W]", "clip": "[T, 3, H, W]"}[kind]
        raise ValueError(f"{where}: a {kind} input must be float {shape}, got {x.dtype} {tuple(x.shape)}")
    if kind == "pair" and x.shape[0] != 2:
        raise ValueError(f"{where}: a pair input must hold 2 views, got {x.shape[0]}")


def expect(condition: bool, message: str) -> None:
    """``AssertionError(message)`` unless ``condition`` (contract checks, not input validation)."""
    if not condition:
        raise AssertionError(message)


def expect_tensor(value: Any, where: str, shape: Sequence[int | None], dtype: str) -> None:
    """Assert ``value`` is a Tensor of ``shape`` (None: any size) and kind ``dtype`` ("float"/"int")."""
    expect(isinstance(value, Tensor), f"{where} must be a Tensor, got {type(value).__name__}")
    assert isinstance(value, Tensor)
    sizes = zip(shape, value.shape, strict=False)  # compared only when the ranks agree
    ok = len(shape) == value.dim() and all(s is None or s == d for s, d in sizes)
    expect(ok, f"{where} must have shape {list(shape)} (None: any), got {tuple(value.shape)}")
    if dtype == "float":
        expect(value.is_floating_point(), f"{where} must be floating point, got {value.dtype}")
    else:
        expect(value.dtype == torch.int64, f"{where} must be int64, got {value.dtype}")


def expect_items(
    predictions: Any, batch_size: int, keys: Sequence[str], task: str
) -> list[dict[str, Tensor]]:
    """Assert ``predictions`` is a list of ``batch_size`` dicts with exactly ``keys``; return it."""
    expect(isinstance(predictions, list), f"{task}: predictions must be a list of per-item dicts")
    expect(len(predictions) == batch_size, f"{task}: {len(predictions)} predictions for {batch_size} items")
    for i, p in enumerate(predictions):
        expect(
            isinstance(p, dict) and sorted(p) == sorted(keys),
            f"{task}: predictions[{i}] keys "
            f"{sorted(p) if isinstance(p, dict) else type(p).__name__} != {sorted(keys)}",
        )
    return predictions


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to the registry under ``task.name`` (unique)."""
    if not task.name or task.name in _TASKS:
        raise ValueError(f"task name {task.name!r} is empty or already registered")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name`` (``ValueError`` listing the known ones)."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_TASKS)
