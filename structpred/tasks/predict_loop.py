"""The one loop behind ``structpred predict``: inputs in, a task's outputs out, for every task.

Inputs are image files and video files (decoded frame by frame, :mod:`.video_frames`); each
image or frame is an *item*. Items are read lazily and batched (``job.batch_size``), so neither
a long video nor a large folder is held in memory; progress over the items is shown by
:mod:`structpred.progress` (a bar on a terminal, a few lines in a log).

Per item the task's :meth:`~structpred.tasks.base.Task.predict_batch` gives an
:class:`~structpred.tasks.base.ItemOutput`, written here:

* ``<stem>.png`` (the drawing), ``<stem><suffix>.png`` per extra (e.g. ``_labels``: 8-bit grey,
  colour or 16-bit grey) and ``<stem><suffix>.npy`` per array (e.g. ``_disparity``), where
  the stem mirrors the input below ``--out`` (:mod:`.outputs`); a video's frames go to
  ``<video stem>/frame_000123.png``, and with ``job.video_out`` the drawings are also encoded
  as ``<video stem>_annotated.mp4``.
* ``predictions.json``: the task's rows, each prefixed with its item's ``image_id`` and
  ``file_name`` (and ``frame``, ``time`` in seconds for a video frame); for detection this is a
  COCO results list. Each row also names the item's extra files (``<suffix>_png``,
  ``<suffix>_npy``: ``labels_png``...).
* ``images.json``: one entry per item (``id``, ``file_name``, ``height``, ``width``, the files
  written, ``frame``/``time``), so items without a prediction row are listed too.

An input that fails while reading (a truncated video...) stops the run with a ``ValueError``
saying what had been written: both json files are then written for the items done before it
(as they are when anything else stops the run).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..data.images import image_size, read_image
from ..progress import Progress, progress
from ..viz import save_png
from .base import ItemOutput, PredictJob
from .outputs import write_json
from .video_frames import VideoWriter, is_video, iter_frames, probe_video

if TYPE_CHECKING:
    from .base import Task

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PredictItem:
    """One image or video frame to predict on."""

    image: Tensor  # float32 [3, H, W] in [0, 1]
    stem: Path  # its outputs' path below ``job.out``, without suffix
    info: dict[str, Any]  # image_id, file_name (and frame, time): the head of its json rows
    video: Path | None = None  # the video it comes from


def probe_inputs(paths: Iterable[Path]) -> int:
    """Check every input's header (no pixels decoded); returns the items expected (images plus
    the videos' declared frames, or duration x rate). ``ValueError`` naming a bad file."""
    total = 0
    for path in paths:
        if is_video(path):
            info = probe_video(path)
            total += info.frames or round(info.duration * info.fps)
        else:
            image_size(path)
            total += 1
    return total


def iter_items(job: PredictJob) -> Iterator[PredictItem]:
    """``job``'s items in input order, read lazily (``ValueError`` naming a bad file)."""
    index = 0  # running item index: the image_id when the data gives none
    for k, path in enumerate(job.paths):
        stem = job.stems[k] if job.stems else Path(path.stem)
        if is_video(path):
            for frame, time, image in iter_frames(path):
                info = {"image_id": index, "file_name": str(path), "frame": frame, "time": round(time, 6)}
                yield PredictItem(image, stem / f"frame_{frame:06d}", info, path)
                index += 1
        else:
            image_id = int(job.image_ids[k]) if job.image_ids else index
            yield PredictItem(read_image(path), stem, {"image_id": image_id, "file_name": str(path)})
            index += 1


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to ``size`` consecutive items."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _save_extra(path: Path, pixels: Tensor) -> None:
    """An :class:`ItemOutput` extra as a PNG: uint8 ``[H, W]`` grey, uint8 ``[3, H, W]`` colour or
    uint16 ``[H, W]`` 16-bit grey."""
    if pixels.dim() == 3 and pixels.dtype == torch.uint8:
        save_png(path, pixels)
        return
    if pixels.dim() != 2 or pixels.dtype not in (torch.uint8, torch.uint16):
        raise ValueError(
            f"{path.name}: an extra picture must be uint8 [H, W], uint8 [3, H, W] or uint16 [H, W], "
            f"got {pixels.dtype} {tuple(pixels.shape)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.detach().cpu().numpy()).save(path, format="PNG")  # mode L or I;16


class _Sink:
    """Writes items' outputs under ``job.out`` and keeps their json rows."""

    def __init__(self, job: PredictJob, task: Task | None = None) -> None:
        self.job, self.task = job, task
        self.rows: list[dict[str, Any]] = []
        self._rows_of: tuple[Path, Path, int] | None = None  # the current video, its stem, its first row
        self.images: list[dict[str, Any]] = []
        self.files = 0
        self._video: Path | None = None
        self._writer: VideoWriter | None = None

    def add(self, item: PredictItem, output: ItemOutput) -> None:
        out = self.job.out
        _, H, W = item.image.shape
        entry: dict[str, Any] = {"id": item.info["image_id"], "file_name": item.info["file_name"]}
        entry.update({"height": H, "width": W})
        entry.update({k: v for k, v in item.info.items() if k in ("frame", "time")})
        files: dict[str, str] = {}
        if item.video is None or (self._rows_of is not None and item.video != self._rows_of[0]):
            self.finish_video()
        if item.video is not None and self._rows_of is None:
            self._rows_of = (item.video, item.stem.parent, len(self.rows))
        if output.picture is not None:
            save_png(out / f"{item.stem}.png", output.picture)
            entry["output"] = f"{item.stem}.png"
            self._video_frame(item, output.picture)
        for suffix, pixels in output.extras.items():
            _save_extra(out / f"{item.stem}{suffix}.png", pixels)
            files[f"{suffix.strip('_')}_png"] = entry[f"{suffix.strip('_')}_png"] = f"{item.stem}{suffix}.png"
        for suffix, array in output.arrays.items():
            path = out / f"{item.stem}{suffix}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:  # a file object: np.save would append ".npy" to a path
                np.save(f, array.detach().cpu().numpy())
            files[f"{suffix.strip('_')}_npy"] = entry[f"{suffix.strip('_')}_npy"] = f"{item.stem}{suffix}.npy"
        self.files += int(output.picture is not None) + len(output.extras) + len(output.arrays)
        self.rows.extend({**item.info, **files, **row} for row in output.rows)
        self.images.append(entry)

    def _video_frame(self, item: PredictItem, picture: Tensor) -> None:
        if not self.job.video_out or item.video is None:
            return
        if item.video != self._video:
            self.close_video()
            self._video = item.video
            path = self.job.out / f"{item.stem.parent}_annotated.mp4"
            self._writer = VideoWriter(path, probe_video(item.video).fps)
        assert self._writer is not None
        self._writer.write(picture)

    def close_video(self) -> None:
        if self._writer is not None:
            self._writer.close()
            logger.info("%d annotated frames -> %s", self._writer.frames, self._writer.path)
        self._writer, self._video = None, None

    def finish_video(self) -> None:
        """The task's whole-video outputs (:meth:`Task.finish_video`) once a video's frames end."""
        if self._rows_of is None:
            return
        _, stem, start = self._rows_of
        self._rows_of = None
        if self.task is not None:
            written = self.task.finish_video(self.rows[start:], stem, self.job)
            self.files += len(written)

    def finish(self) -> Path:
        self.close_video()
        self.finish_video()
        write_json(self.job.out / "images.json", self.images)
        path = self.job.out / "predictions.json"
        write_json(path, self.rows)
        return path


def _autocast(amp: str | None, device: torch.device) -> Any:
    """The run's mixed precision (``TrainConfig.amp``), as ``structpred eval`` uses it; fp16
    off CUDA runs in float32."""
    if amp is None or (amp == "fp16" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _readable(items: Iterator[PredictItem], failures: list[ValueError]) -> Iterator[PredictItem]:
    """``items`` until one cannot be read; that error goes to ``failures`` (so the items read
    before it are still predicted and written)."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except ValueError as err:
            failures.append(err)
            return
        yield item


def run_predict(task: Task, model: nn.Module, job: PredictJob) -> Path:
    """Run ``model`` over ``job``'s items and write its outputs; returns ``predictions.json``.

    Raises ``ValueError`` for an input that cannot be read, after predicting and writing every
    item read before it (the message says how many and where).
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    job.out.mkdir(parents=True, exist_ok=True)
    sink = _Sink(job, task)
    bar: Progress[Any] = progress(None, total=job.total or None, desc="predict", enabled=job.progress)
    failures: list[ValueError] = []
    try:
        for batch in batched(_readable(iter_items(job), failures), job.batch_size):
            with torch.no_grad(), _autocast(job.amp, device):
                outputs = task.predict_batch(model, [it.image.to(device) for it in batch], job)
            if len(outputs) != len(batch):
                raise RuntimeError(
                    f"{task.name}.predict_batch gave {len(outputs)} outputs for {len(batch)} images"
                )
            for item, output in zip(batch, outputs, strict=True):
                sink.add(item, output)
            bar.update(len(batch))  # counted when written, not when read
    except BaseException:  # a model error, Ctrl-C: the json files still list what is on disk
        sink.finish()
        raise
    finally:
        sink.close_video()
        bar.close()
    path = sink.finish()
    if failures:
        raise ValueError(
            f"{failures[0]} (stopped there: {len(sink.images)} images/frames done before it, their "
            f"{sink.files} pictures, predictions.json and images.json are in {job.out})"
        ) from failures[0]
    logger.info("%d images/frames, %d prediction rows -> %s", len(sink.images), len(sink.rows), job.out)
    return path
