"""Detection tubes: per-frame detections linked over time.

Two linkers share one input form and one output form (:class:`Tube`):

* :func:`structpred.ops.tube_dp.link_tubes_dp` — offline, Gkioxari & Malik (CVPR 2015, "Finding
  action tubes"): the chain of one detection per frame that maximises
  ``sum_t s(b_t) + lam * sum_t IoU(b_t, b_{t+1})``, found by Viterbi dynamic programming; its
  detections are removed and the search repeated to extract several tubes (per class when labels
  are given). It lives in :mod:`structpred.ops.tube_dp` with its recurrence and rules (also
  ``docs/tubes.md``).
* :class:`OnlineLinker` — online tracking-by-detection (SORT-like, no motion model): per frame a
  Hungarian matching on IoU between the active tracks' last boxes and the new detections with an
  IoU gate, births of unmatched detections, deaths after ``max_age`` unmatched frames.

Linear assignment uses ``scipy.optimize.linear_sum_assignment`` (the generic Hungarian /
Jonker-Volgenant solver; structpred does not re-implement it).

Shape shorthand:
    T: frames; N_t: detections of frame t; L: frames of a tube; R: MOTChallenge rows.

Convention: boxes are xyxy absolute pixels; frames are 0-based indices into the clip; rows are
MOTChallenge's ``(frame, id, x, y, w, h, score)`` with ``frame = index + first_frame`` (1-based by
default) and ``(x, y, w, h)`` the box's left, top, width, height. Track ids start at 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .boxes import box_iou

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tube:
    """One linked object: a box in each of its frames.

    Attributes:
        frames (int64[L]): frame indices, increasing (consecutive for the DP linker unless its
            ``max_gap`` > 0; the online linker leaves out the frames a track was not matched in).
        boxes (float32[L, 4]): xyxy boxes, one per frame.
        scores (float32[L]): the detections' scores.
        detections (int64[L]): index of each box among its frame's detections.
        label: the class (0 when the linker was given no labels).
        track_id: 1-based identity, unique among the tubes of one call.
        score: the tube's objective (DP: the path energy; online: the mean detection score).
    """

    frames: Tensor
    boxes: Tensor
    scores: Tensor
    detections: Tensor
    label: int
    track_id: int
    score: float

    def __len__(self) -> int:
        return int(self.frames.numel())


def check_frames(
    boxes_per_frame: Sequence[Tensor],
    scores_per_frame: Sequence[Tensor],
    labels_per_frame: Sequence[Tensor] | None = None,
) -> None:
    """Validate per-frame detections: ``boxes_per_frame[t]`` ``[N_t, 4]`` float xyxy (finite,
    ``x2 >= x1``, ``y2 >= y1``), ``scores_per_frame[t]`` ``[N_t]`` finite, ``labels_per_frame[t]``
    ``int[N_t]``; one entry per frame in each. Raises a one-line ``ValueError`` naming the frame."""
    if isinstance(boxes_per_frame, Tensor) or isinstance(scores_per_frame, Tensor):
        raise ValueError("boxes_per_frame and scores_per_frame must be sequences with one Tensor per frame")
    if len(boxes_per_frame) != len(scores_per_frame):
        n, m = len(boxes_per_frame), len(scores_per_frame)
        raise ValueError(f"boxes_per_frame has {n} frames but scores_per_frame has {m}")
    if labels_per_frame is not None and len(labels_per_frame) != len(boxes_per_frame):
        n, m = len(labels_per_frame), len(boxes_per_frame)
        raise ValueError(f"labels_per_frame has {n} frames but boxes_per_frame has {m}")
    for t, (boxes, scores) in enumerate(zip(boxes_per_frame, scores_per_frame, strict=True)):
        labels = None if labels_per_frame is None else labels_per_frame[t]
        check_detections(boxes, scores, labels, where=f"frame {t}")


def check_detections(boxes: Tensor, scores: Tensor, labels: Tensor | None = None, *, where: str = "") -> None:
    """Validate one frame's detections (see :func:`check_frames`); ``where`` prefixes the error."""
    at = f"{where}: " if where else ""
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{at}boxes must be a Tensor[N, 4] (x1, y1, x2, y2), got {shape}")
    if not boxes.is_floating_point():
        raise ValueError(f"{at}boxes must be floating point, got {boxes.dtype}")
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"{at}scores must be a Tensor[N] with N = {boxes.shape[0]} (one per box), got {shape}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"{at}scores must be floating point, got {scores.dtype}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{at}boxes contain NaN or infinite values")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{at}scores contain NaN or infinite values")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{at}box {i} has a negative width or height (xyxy expected): {boxes[i].tolist()}")
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.shape != (boxes.shape[0],):
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"{at}labels must be a Tensor[N] with N = {boxes.shape[0]}, got {shape}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"{at}labels must be an integer tensor, got {labels.dtype}")


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> np.ndarray:
    """IoU ``float64[N, M]`` of xyxy boxes ``[N, 4]`` x ``[M, 4]``; 0 (not NaN) between two empty boxes."""
    iou = box_iou(boxes1.detach().double().cpu(), boxes2.detach().double().cpu())  # (N, M)
    return iou.nan_to_num(0.0).numpy()


def tubes_to_mot_rows(tubes: Sequence[Tube], first_frame: int = 1) -> Tensor:
    """MOTChallenge rows ``float64[R, 7]`` ``(frame, id, x, y, w, h, score)`` of ``tubes``,
    sorted by frame then id; ``frame = index + first_frame``."""
    if not all(isinstance(t, Tube) for t in tubes):
        raise ValueError("tubes must be a sequence of Tube")
    parts = []
    for tube in tubes:
        b = tube.boxes.double()  # (L, 4) xyxy -> xywh
        xywh = torch.stack((b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), dim=1)
        frame = tube.frames.double()[:, None] + first_frame  # (L, 1)
        ids = torch.full_like(frame, float(tube.track_id))
        parts.append(torch.cat((frame, ids, xywh, tube.scores.double()[:, None]), dim=1))  # (L, 7)
    if not parts:
        return torch.zeros(0, 7, dtype=torch.float64)
    rows = torch.cat(parts)  # (R, 7)
    order = np.lexsort((rows[:, 1].numpy(), rows[:, 0].numpy()))  # frame, then id
    return rows[torch.from_numpy(order)]


def make_tube(
    frames: Sequence[int],
    detections: Sequence[int],
    boxes_per_frame: Sequence[Tensor],
    scores_per_frame: Sequence[Tensor],
    label: int,
    track_id: int,
    score: float,
) -> Tube:
    """Gather a :class:`Tube` from per-frame detections: ``detections[k]`` of frame ``frames[k]``."""
    if frames:
        boxes = torch.stack([boxes_per_frame[t][i] for t, i in zip(frames, detections, strict=True)])
        scores = torch.stack([scores_per_frame[t][i] for t, i in zip(frames, detections, strict=True)])
    else:
        boxes, scores = torch.zeros(0, 4), torch.zeros(0)
    return Tube(
        frames=torch.tensor(list(frames), dtype=torch.int64),
        boxes=boxes.detach().float().cpu(),
        scores=scores.detach().float().cpu(),
        detections=torch.tensor(list(detections), dtype=torch.int64),
        label=int(label),
        track_id=int(track_id),
        score=float(score),
    )


@dataclass
class _Track:
    """One track of the online linker (mutable state)."""

    label: int
    frames: list[int] = field(default_factory=list)
    detections: list[int] = field(default_factory=list)
    boxes: list[Tensor] = field(default_factory=list)
    scores: list[Tensor] = field(default_factory=list)
    misses: int = 0
    track_id: int = 0  # 0 while tentative

    @property
    def hits(self) -> int:
        return len(self.frames)


class OnlineLinker:
    """Online tracking-by-detection: Hungarian matching on IoU, births and deaths.

    Per frame (:meth:`update`), in this order:

    1. detections scoring below ``min_score`` are dropped;
    2. a maximum-total-IoU assignment between the active tracks' last boxes and the detections,
       counting only pairs with ``IoU >= iou_threshold`` (and the same label, when labels are
       given); pairs below the gate are never matched;
    3. a matched track takes the detection (``misses = 0``); a confirmed track with no detection
       gains a miss and dies when ``misses > max_age`` (an occlusion of up to ``max_age`` frames is
       bridged); a tentative track dies at its first miss;
    4. an unmatched detection scoring at least ``birth_score`` starts a tentative track; a track is
       confirmed once matched in ``min_hits`` frames (consecutive, counting its birth), gets the
       next id (1, 2, ... in order of confirmation, then of detection index) and all its frames so
       far are reported.

    There is no motion model: a track is matched at its last box. The result is deterministic.
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_age: int = 1,
        min_hits: int = 1,
        min_score: float = 0.0,
        birth_score: float = 0.0,
    ) -> None:
        if not (isinstance(iou_threshold, (int, float)) and 0.0 < iou_threshold <= 1.0):
            raise ValueError(f"OnlineLinker: iou_threshold must be in (0, 1], got {iou_threshold!r}")
        for name, value, low in (("max_age", max_age, 0), ("min_hits", min_hits, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"OnlineLinker: {name} must be an int >= {low}, got {value!r}")
        for name, score in (("min_score", min_score), ("birth_score", birth_score)):
            if not isinstance(score, (int, float)) or not math.isfinite(score):
                raise ValueError(f"OnlineLinker: {name} must be a finite number, got {score!r}")
        self.iou_threshold: float = float(iou_threshold)
        self.max_age, self.min_hits = max_age, min_hits
        self.min_score, self.birth_score = float(min_score), float(birth_score)
        self.reset()

    def reset(self) -> None:
        """Forget every track; the next :meth:`update` is frame 0."""
        self._active: list[_Track] = []
        self._finished: list[_Track] = []
        self._frame = 0
        self._next_id = 1
        self._frames_boxes: list[Tensor] = []
        self._frames_scores: list[Tensor] = []

    def update(self, boxes: Tensor, scores: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Link one frame's detections (``boxes [N, 4]`` xyxy, ``scores [N]``, ``labels int[N]``).

        Returns ``(track_ids int64[K], boxes float32[K, 4])`` of the confirmed tracks matched in
        this frame, ordered by id.
        """
        t = self._frame
        check_detections(boxes, scores, labels, where=f"frame {t}")
        boxes, scores = boxes.detach().cpu(), scores.detach().cpu()
        self._frames_boxes.append(boxes)
        self._frames_scores.append(scores)
        keep = (scores >= self.min_score).nonzero().flatten().tolist()
        matches = self._match(boxes, labels, keep)
        matched_tracks = {k for k, _ in matches}
        matched_dets = {i for _, i in matches}
        for k, i in matches:
            self._extend(self._active[k], t, i, boxes, scores)
        survivors: list[_Track] = []
        for k, track in enumerate(self._active):
            if k not in matched_tracks:
                track.misses += 1
                if track.track_id == 0 or track.misses > self.max_age:
                    if track.track_id != 0:
                        self._finished.append(track)
                    continue
            survivors.append(track)
        for i in keep:
            if i not in matched_dets and float(scores[i]) >= self.birth_score:
                label = 0 if labels is None else int(labels[i])
                track = _Track(label)
                self._extend(track, t, i, boxes, scores)
                survivors.append(track)
        self._active = survivors
        self._frame += 1
        current = sorted(
            (tr.track_id, tr.detections[-1]) for tr in survivors if tr.track_id and tr.misses == 0
        )
        ids = torch.tensor([c[0] for c in current], dtype=torch.int64)
        out = boxes[[c[1] for c in current]].float() if current else torch.zeros(0, 4)
        return ids, out

    def _match(self, boxes: Tensor, labels: Tensor | None, keep: list[int]) -> list[tuple[int, int]]:
        """Pairs (track index, detection index) of the gated maximum-IoU assignment."""
        if not self._active or not keep:
            return []
        last = torch.stack([tr.boxes[-1] for tr in self._active])  # (K, 4)
        iou = pairwise_iou(last, boxes[keep])  # (K, N_kept)
        if labels is not None:
            same = np.array([tr.label for tr in self._active])[:, None] == labels[keep].numpy()[None, :]
            iou = np.where(same, iou, 0.0)
        # Gated pairs weigh 0, so a maximum-weight assignment never trades a valid pair for one.
        weight = np.where(iou >= self.iou_threshold, iou, 0.0)
        rows, cols = linear_sum_assignment(weight, maximize=True)
        return [(int(r), keep[int(c)]) for r, c in zip(rows, cols, strict=True) if weight[r, c] > 0.0]

    def _extend(self, track: _Track, t: int, i: int, boxes: Tensor, scores: Tensor) -> None:
        track.frames.append(t)
        track.detections.append(i)
        track.boxes.append(boxes[i].double())
        track.scores.append(scores[i])
        track.misses = 0
        if track.track_id == 0 and track.hits >= self.min_hits:
            track.track_id = self._next_id
            self._next_id += 1

    def tubes(self) -> list[Tube]:
        """Every confirmed track so far (finished and active) as a :class:`Tube`, ordered by id."""
        tracks = sorted(
            (tr for tr in self._finished + self._active if tr.track_id), key=lambda tr: tr.track_id
        )
        return [
            make_tube(
                tr.frames,
                tr.detections,
                self._frames_boxes,
                self._frames_scores,
                tr.label,
                tr.track_id,
                float(torch.stack(tr.scores).double().mean()),
            )
            for tr in tracks
        ]

    def rows(self, first_frame: int = 1) -> Tensor:
        """MOTChallenge rows ``float64[R, 7]`` of :meth:`tubes` (see :func:`tubes_to_mot_rows`)."""
        return tubes_to_mot_rows(self.tubes(), first_frame)


def link_online(
    boxes_per_frame: Sequence[Tensor],
    scores_per_frame: Sequence[Tensor],
    labels_per_frame: Sequence[Tensor] | None = None,
    *,
    iou_threshold: float = 0.3,
    max_age: int = 1,
    min_hits: int = 1,
    min_score: float = 0.0,
    birth_score: float = 0.0,
) -> list[Tube]:
    """Run an :class:`OnlineLinker` over a whole clip; the confirmed tracks as tubes."""
    check_frames(boxes_per_frame, scores_per_frame, labels_per_frame)
    linker = OnlineLinker(iou_threshold, max_age, min_hits, min_score, birth_score)
    for t, (boxes, scores) in enumerate(zip(boxes_per_frame, scores_per_frame, strict=True)):
        linker.update(boxes, scores, None if labels_per_frame is None else labels_per_frame[t])
    return linker.tubes()


__all__ = [
    "OnlineLinker",
    "Tube",
    "check_detections",
    "check_frames",
    "link_online",
    "make_tube",
    "pairwise_iou",
    "tubes_to_mot_rows",
]
