"""A video detector: any registered detector run frame by frame, its detections linked into tubes.

The detector sees the clip's frames as a batch of images (in chunks of ``batch_size``); a
*linker* turns the per-frame detections into tubes (:class:`~structpred.ops.linking.Tube`):
Gkioxari & Malik's dynamic programming (:func:`~structpred.ops.tube_dp.link_tubes_dp`, offline,
the default) or the online Hungarian linker (:func:`~structpred.ops.linking.link_online`).

Shape shorthand:
    T: frames of the clip; H, W: frame size; M: ground-truth tracks; R: (frame, track) rows.

Contract (DESIGN.md §3, the forward of every model; the task is ``multi_object_tracking``,
:mod:`structpred.tasks.multi_object_tracking`, input clips): ``model(clips, targets=None) ->
(predictions, losses)`` with ``clips`` a list of ``[T, 3, H, W]`` or a ``[B, T, 3, H, W]`` batch.

* predictions — a list with one dict per clip, one row per (frame, tube) pair, sorted by frame
  then track id: ``frames`` int64 ``[R]`` (0-based), ``track_ids`` int64 ``[R]`` (1-based),
  ``boxes`` float32 ``[R, 4]`` xyxy pixels of the clip, ``scores`` float32 ``[R]``, ``labels``
  int64 ``[R]``. :meth:`VideoDetector.tubes` returns the same as tubes.
* targets — a list of one dict per clip, as :class:`~structpred.data.shapes_views.ShapesVideo`
  gives them: ``tracks`` float ``[M, T, 4]`` xyxy, NaN where the object is not visible,
  ``labels`` int64 ``[M]`` (``visible`` bool ``[M, T]`` is optional: ``tracks`` not NaN
  otherwise). The losses are the detector's on the frames' visible boxes (averaged over the
  chunks, weighted by their frames, and over the clips): a video detector trains as its detector
  does, linking has no parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..ops.linking import Tube, link_online
from ..ops.tube_dp import link_tubes_dp
from .contract import check_request
from .registry import get_model, model_info, register_model


class Linker(Protocol):
    """``(boxes_per_frame, scores_per_frame, labels_per_frame=...) -> list[Tube]``."""

    def __call__(
        self,
        boxes_per_frame: Sequence[Tensor],
        scores_per_frame: Sequence[Tensor],
        labels_per_frame: Sequence[Tensor] | None = ...,
    ) -> list[Tube]: ...


LINKERS: dict[str, Callable[..., Linker]] = {
    "dp": lambda **kw: functools.partial(link_tubes_dp, **kw),
    "online": lambda **kw: functools.partial(link_online, **kw),
}


def make_linker(name: str, **kwargs: Any) -> Linker:
    """``"dp"`` (:func:`link_tubes_dp`) or ``"online"`` (:func:`link_online`) with keyword settings."""
    if name not in LINKERS:
        raise ValueError(f"unknown linker {name!r}; expected one of {sorted(LINKERS)}")
    return LINKERS[name](**kwargs)


def frame_targets(target: dict[str, Tensor], num_frames: int) -> list[dict[str, Tensor]]:
    """Per-frame detection targets (``boxes [N_t, 4]``, ``labels [N_t]``) of a clip target with
    ``tracks [M, T, 4]`` (NaN where not visible), ``labels [M]`` and optional ``visible [M, T]``."""
    if not isinstance(target, dict) or "tracks" not in target or "labels" not in target:
        raise ValueError("targets must be a dict with 'tracks' [M, T, 4] and 'labels' [M]")
    tracks, labels = target["tracks"], target["labels"]
    if not isinstance(tracks, Tensor) or tracks.dim() != 3 or tracks.shape[1:] != (num_frames, 4):
        shape = tuple(tracks.shape) if isinstance(tracks, Tensor) else type(tracks).__name__
        raise ValueError(f"targets['tracks'] must be a float Tensor[M, {num_frames}, 4], got {shape}")
    if not tracks.is_floating_point():
        raise ValueError(f"targets['tracks'] must be floating point, got {tracks.dtype}")
    if not isinstance(labels, Tensor) or labels.shape != (tracks.shape[0],) or labels.is_floating_point():
        raise ValueError(f"targets['labels'] must be an int Tensor[{tracks.shape[0]}]")
    visible = target.get("visible")
    if visible is None:
        visible = ~torch.isnan(tracks).any(dim=2)  # (M, T)
    elif not isinstance(visible, Tensor) or visible.shape != tracks.shape[:2] or visible.dtype != torch.bool:
        raise ValueError(f"targets['visible'] must be a bool Tensor[{tracks.shape[0]}, {num_frames}]")
    if bool(torch.isnan(tracks[visible]).any()):
        raise ValueError("targets['tracks'] has NaN boxes where 'visible' is True")
    return [{"boxes": tracks[visible[:, t], t], "labels": labels[visible[:, t]]} for t in range(num_frames)]


class VideoDetector(nn.Module):
    """A per-frame detector + a linker (see the module docstring).

    Args:
        detector: any detection model of the registry's contract (None: ``fasterrcnn_narrow_fpn``).
        linker: a :class:`Linker` (None: ``link_tubes_dp`` with ``lam = 1``, the paper's).
        min_score: detections scoring below it are dropped before linking.
        batch_size: frames per detector call.
        per_class: link each class on its own (pass labels to the linker).
    """

    def __init__(
        self,
        detector: nn.Module | None = None,
        linker: Linker | None = None,
        *,
        min_score: float = 0.3,
        batch_size: int = 8,
        per_class: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"VideoDetector: batch_size must be a positive int, got {batch_size!r}")
        if linker is not None and not callable(linker):
            raise ValueError(
                "VideoDetector: linker must be a callable (boxes, scores, labels_per_frame=) -> tubes"
            )
        self.detector = detector if detector is not None else get_model("fasterrcnn_narrow_fpn")
        self.linker: Linker = linker if linker is not None else make_linker("dp", lam=1.0)
        self.min_score, self.batch_size, self.per_class = float(min_score), batch_size, per_class

    @property
    def class_dependent_tensors(self) -> tuple[str, ...]:
        """The detector's class-dependent tensors (to fine-tune to another class count), prefixed."""
        from .weights.class_dependent import class_dependent_patterns

        return tuple(rf"detector\.{p}" for p in class_dependent_patterns(self.detector))

    def _check_clip(self, clip: Tensor) -> None:
        if not isinstance(clip, Tensor) or clip.dim() != 4 or clip.shape[1] != 3 or clip.shape[0] < 1:
            shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
            raise ValueError(f"VideoDetector: clip must be a Tensor[T, 3, H, W] with T >= 1, got {shape}")
        if not clip.is_floating_point():
            raise ValueError(f"VideoDetector: clip must be float in [0, 1], got {clip.dtype}")

    def detect_frames(
        self, clip: Tensor, targets: dict[str, Tensor] | None = None, predict: bool = True
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        """The detector's predictions per frame (None unless ``predict``) and its losses (with
        ``targets``, a clip target), running ``batch_size`` frames at a time."""
        self._check_clip(clip)
        num_frames = clip.shape[0]
        per_frame = None if targets is None else frame_targets(targets, num_frames)
        detections: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        for start in range(0, num_frames, self.batch_size):
            chunk = clip[start : start + self.batch_size]  # (Tc, 3, H, W)
            chunk_targets = None if per_frame is None else per_frame[start : start + self.batch_size]
            preds, chunk_losses = self.detector(chunk, chunk_targets, predict=predict)
            if preds is not None:
                detections.extend(preds)
            weight = chunk.shape[0] / num_frames
            for key, value in chunk_losses.items():
                losses[key] = losses[key] + weight * value if key in losses else weight * value
        return (detections if predict else None), losses

    def link(self, detections: Sequence[dict[str, Tensor]]) -> list[Tube]:
        """Tubes of per-frame detections (dicts with ``boxes``, ``scores``, ``labels``)."""
        keep = [d["scores"] >= self.min_score for d in detections]
        boxes = [d["boxes"].detach()[k] for d, k in zip(detections, keep, strict=True)]
        scores = [d["scores"].detach()[k] for d, k in zip(detections, keep, strict=True)]
        labels = (
            [d["labels"].detach()[k] for d, k in zip(detections, keep, strict=True)]
            if self.per_class
            else None
        )
        return self.linker(boxes, scores, labels_per_frame=labels)

    @torch.no_grad()
    def tubes(self, clip: Tensor) -> list[Tube]:
        """The tubes of ``clip [T, 3, H, W]``."""
        detections, _ = self.detect_frames(clip)
        assert detections is not None
        return self.link(detections)

    def forward(
        self,
        clips: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        """One prediction dict of tube rows per clip (None with ``predict=False``) and the
        detector's losses averaged over the clips (with ``targets``, one dict per clip); ``clips``
        is a list of ``[T, 3, H, W]`` or a ``[B, T, 3, H, W]`` batch. See the module docstring."""
        check_request(targets is not None, predict, type(self).__name__)
        if isinstance(clips, Tensor):
            if clips.dim() != 5:
                raise ValueError(
                    "VideoDetector: clips must be a list of Tensor[T, 3, H, W] or a Tensor[B, T, 3, H, W], "
                    f"got shape {tuple(clips.shape)} (one clip: model([clip]) or model.tubes(clip))"
                )
            clips = list(clips.unbind(0))  # (B, T, 3, H, W) -> B x (T, 3, H, W)
        if targets is not None and (isinstance(targets, dict) or len(targets) != len(clips)):
            raise ValueError(
                f"VideoDetector: targets must be a list of one dict per clip ({len(clips)} clips)"
            )
        predictions: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        for k, clip in enumerate(clips):
            detections, clip_losses = self.detect_frames(
                clip, None if targets is None else targets[k], predict
            )
            for key, value in clip_losses.items():
                losses[key] = losses[key] + value / len(clips) if key in losses else value / len(clips)
            if detections is not None:
                predictions.append(tube_rows(self.link(detections)))
        return (predictions if predict else None), losses


def tube_rows(tubes: Sequence[Tube]) -> dict[str, Tensor]:
    """The prediction dict (``frames``, ``track_ids``, ``boxes``, ``scores``, ``labels``, one
    entry per (frame, tube), sorted by frame then track id) of ``tubes``."""
    frames = torch.cat([t.frames for t in tubes]) if tubes else torch.zeros(0, dtype=torch.int64)  # (R,)
    ids = torch.cat([torch.full((len(t),), t.track_id) for t in tubes]) if tubes else frames.clone()
    boxes = torch.cat([t.boxes for t in tubes]) if tubes else torch.zeros(0, 4)  # (R, 4)
    scores = torch.cat([t.scores for t in tubes]) if tubes else torch.zeros(0)
    labels = torch.cat([torch.full((len(t),), t.label) for t in tubes]) if tubes else frames.clone()
    order = torch.argsort(frames * (int(ids.max()) + 1 if len(ids) else 1) + ids)  # frame, then id
    return {
        "frames": frames[order],
        "track_ids": ids[order],
        "boxes": boxes[order],
        "scores": scores[order],
        "labels": labels[order],
    }


@register_model(task="multi_object_tracking")
def video_detector(
    detector: str | nn.Module = "fasterrcnn_narrow_fpn",
    linker: str | Linker = "dp",
    *,
    linker_kwargs: dict[str, Any] | None = None,
    min_score: float = 0.3,
    batch_size: int = 8,
    num_classes: int | None = None,
    **detector_kwargs: Any,
) -> VideoDetector:
    """A :class:`VideoDetector` of a registered detector (by name, with ``detector_kwargs``) and a
    linker by name (``"dp"``, ``"online"``, with ``linker_kwargs``) or a callable."""
    if isinstance(detector, str) and model_info(detector).task != "detection":
        raise ValueError(
            f"video_detector: {detector!r} is a {model_info(detector).task} model, not a detector"
        )
    if num_classes is not None:  # the detector's object classes (the task's num_classes rule)
        detector_kwargs["num_classes"] = num_classes
    model = get_model(detector, **detector_kwargs) if isinstance(detector, str) else detector
    link = make_linker(linker, **(linker_kwargs or {})) if isinstance(linker, str) else linker
    return VideoDetector(model, link, min_score=min_score, batch_size=batch_size)
