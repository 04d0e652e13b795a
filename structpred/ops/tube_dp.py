"""The dynamic program of Gkioxari & Malik (CVPR 2015, "Finding action tubes"): the best chain of
detections through a clip, by Viterbi.

A *chain* takes one detection in each of frames ``t_1 < t_2 < ... < t_L``, consecutive frames
unless ``max_gap > 0`` lets it skip up to ``max_gap`` frames between two of its boxes
(``t_{k+1} - t_k <= max_gap + 1``). Its energy is::

    E = sum_k s_{t_k}(i_k)  +  lam * sum_k IoU(b_{t_k}(i_k), b_{t_{k+1}}(i_{k+1}))

The paper links over the whole clip, frame by frame (``max_gap = 0``); here a chain may also start
and end in any frame (it is the paper's path whenever every frame has a detection and the scores are
not negative: extending a chain never lowers its energy then). Recurrence, with ``V_t(i)`` the best
energy of a chain ending at detection ``i`` of frame ``t``::

    V_t(i) = s_t(i) + max(0, max_{1 <= g <= G} max_{j: IoU_g(j, i) >= gate} [V_{t-g}(j) + lam * IoU_g(j, i)])

with ``G = max_gap + 1`` and ``IoU_g(j, i) = IoU(b_{t-g}(j), b_t(i))``.

``max(0, .)`` is the choice between starting a new chain at ``(t, i)`` and extending the best
one; the answer is ``max_{t, i} V_t(i)``, traced back through the stored arg-maxes. Skipping a
frame costs nothing but loses that frame's score, so with positive scores a chain skips only
frames it has no box in (or whose boxes fit worse).

Rules:
    * a chain cannot cross more than ``max_gap`` frames in a row without a (remaining) detection of
      it: with ``max_gap = 0`` (the paper) a frame with no detection ends every chain;
    * a link needs ``IoU >= gate`` (``gate = 0``, the paper: any two boxes may be linked);
    * ties: the nearest predecessor frame, then the lowest index; extending beats starting anew on
      equal value; of equal-energy chain ends, the earliest frame, then the lowest index.

Shape shorthand:
    T: frames; N_t: detections of frame t; G: ``max_gap + 1``, the longest step of a chain.

:class:`ChainSearch` is the DP itself (float64 numpy on precomputed IoUs, updated incrementally as
chains are removed); :func:`link_tubes_dp` is the public entry point (validation, classes,
repeated extraction into :class:`~structpred.ops.linking.Tube`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .linking import Tube, check_frames, make_tube, pairwise_iou

logger = logging.getLogger(__name__)


class ChainSearch:
    """The Viterbi tables of the recurrence above, kept across extractions.

    :meth:`best` reads the best chain; :meth:`remove` kills its detections and recomputes only
    the frames whose values can change: from the chain's first frame until ``max_gap + 1``
    frames in a row past its last frame come out unchanged (a frame's values depend only on the
    ``max_gap + 1`` frames before it), so the tables always equal a full recomputation.

    Args:
        scores: per frame ``float64[N_t]``.
        ious: ``ious[(s, t)]`` ``float64[N_s, N_t]``, IoU of frame s's boxes with frame t's, for
            every ``0 < t - s <= max_gap + 1``.
        lam: weight of the IoU term.
        gate: a link needs ``IoU >= gate``.
        max_gap: frames a link may skip.
    """

    def __init__(
        self,
        scores: Sequence[np.ndarray],
        ious: Mapping[tuple[int, int], np.ndarray],
        lam: float,
        gate: float = 0.0,
        max_gap: int = 0,
    ) -> None:
        self.scores, self.ious, self.lam, self.gate, self.max_gap = scores, ious, lam, gate, max_gap
        num_frames = len(scores)
        self.alive = [np.ones(len(s), dtype=bool) for s in scores]
        self.values: list[np.ndarray] = [np.empty(0)] * num_frames  # V_t, -inf where dead
        self.pred_t: list[np.ndarray] = [np.empty(0, np.int64)] * num_frames  # predecessor frame, -1 = start
        self.pred_i: list[np.ndarray] = [np.empty(0, np.int64)] * num_frames  # predecessor index
        self.frame_best = np.full(num_frames, -np.inf)  # max_i V_t(i)
        for t in range(num_frames):
            self._update(t)

    def _update(self, t: int) -> bool:
        """Recompute frame ``t``'s tables from the frames before it; True when its values changed."""
        v = np.where(self.alive[t], self.scores[t], -np.inf)  # (N_t,)
        cont = np.full(v.shape, -np.inf)  # best V_{t-g}(j) + lam * IoU over g and j
        pred_t, pred_i = np.full(v.shape, -1, dtype=np.int64), np.zeros(v.shape, dtype=np.int64)
        for g in range(1, min(self.max_gap + 1, t) + 1):
            prev = self.values[t - g]
            if not v.size or not prev.size:
                continue
            iou = self.ious[(t - g, t)]  # (N_{t-g}, N_t)
            link = np.where(iou >= self.gate, prev[:, None] + self.lam * iou, -np.inf)
            j = np.argmax(link, axis=0)  # (N_t,); the lowest index among equal maxima
            c = link[j, np.arange(v.size)]  # (N_t,)
            better = c > cont  # strict: on a tie the nearer frame (smaller g) keeps it
            cont = np.where(better, c, cont)
            pred_t, pred_i = np.where(better, t - g, pred_t), np.where(better, j, pred_i)
        extend = np.isfinite(cont) & (cont >= 0.0) & self.alive[t]
        v = np.where(extend, v + np.where(extend, cont, 0.0), v)
        changed = not np.array_equal(v, self.values[t])
        self.values[t], self.pred_t[t], self.pred_i[t] = v, np.where(extend, pred_t, -1), pred_i
        self.frame_best[t] = v.max() if v.size else -np.inf
        return changed

    def best(self) -> tuple[float, list[int], list[int]] | None:
        """``(energy, frames, detection index per frame)`` of the best chain, or ``None`` when no
        detection is alive. Ties: the earliest end frame, then the lowest index."""
        if not self.frame_best.size or not np.isfinite(self.frame_best).any():
            return None
        t = int(np.argmax(self.frame_best))
        i = int(np.argmax(self.values[t]))
        energy = float(self.values[t][i])
        frames, path = [t], [i]
        while self.pred_t[t][i] >= 0:
            t, i = int(self.pred_t[t][i]), int(self.pred_i[t][i])
            frames.append(t)
            path.append(i)
        return energy, frames[::-1], path[::-1]

    def remove(self, frames: Sequence[int], path: Sequence[int]) -> None:
        """Kill detection ``path[k]`` of frame ``frames[k]`` and bring the tables up to date."""
        for t, i in zip(frames, path, strict=True):
            self.alive[t][i] = False
        steady = 0
        for t in range(min(frames), len(self.scores)):
            changed = self._update(t)
            steady = 0 if changed or t <= max(frames) else steady + 1
            if steady > self.max_gap:
                break


def best_chain(
    scores: Sequence[np.ndarray],
    ious: Mapping[tuple[int, int], np.ndarray],
    lam: float,
    gate: float = 0.0,
    max_gap: int = 0,
) -> tuple[float, list[int], list[int]] | None:
    """The best chain over all detections (one :class:`ChainSearch` pass): ``(energy, frames,
    detection index per frame)``, or ``None`` without detections."""
    return ChainSearch(scores, ious, lam, gate, max_gap).best()


def link_tubes_dp(
    boxes_per_frame: Sequence[Tensor],
    scores_per_frame: Sequence[Tensor],
    lam: float = 1.0,
    labels_per_frame: Sequence[Tensor] | None = None,
    *,
    gate: float = 0.0,
    max_tubes: int | None = None,
    min_length: int = 1,
    max_gap: int = 0,
) -> list[Tube]:
    """Gkioxari & Malik (2015) tubes: repeated Viterbi chains of ``score + lam * IoU``.

    The best chain (:class:`ChainSearch`: one detection per frame over a run of frames, maximising the
    sum of its scores plus ``lam`` times the IoU of each two consecutive boxes) is extracted, its
    detections removed, and the search repeated until no detection is left or ``max_tubes`` tubes
    were found (per class). A chain cannot cross more than ``max_gap`` frames in a row without a
    remaining detection (0: the paper; a frame with none ends every chain), and a link needs
    ``IoU >= gate`` (0: the paper, any link).

    Args:
        boxes_per_frame: ``T`` tensors ``[N_t, 4]`` xyxy.
        scores_per_frame: ``T`` tensors ``[N_t]`` (any real numbers; the paper uses class scores).
        lam: weight of the IoU term (>= 0).
        labels_per_frame: optional ``T`` integer tensors ``[N_t]``; each class is linked on its own.
        gate: smallest IoU of a link, in [0, 1].
        max_tubes: at most this many tubes per class (``None``: until every detection is used).
        min_length: tubes of fewer frames are dropped (their detections are still used up).
        max_gap: frames a tube may skip between two of its boxes (an occlusion or a missed detection).

    Returns:
        The tubes, per class in increasing label order, each class's in extraction order (best
        first); ``track_id`` 1, 2, ... in that order; ``score`` is the chain's energy.
    """
    check_frames(boxes_per_frame, scores_per_frame, labels_per_frame)
    if not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"link_tubes_dp: lam must be a finite number >= 0, got {lam!r}")
    if not isinstance(gate, (int, float)) or not 0.0 <= gate <= 1.0:
        raise ValueError(f"link_tubes_dp: gate must be in [0, 1], got {gate!r}")
    if max_tubes is not None and (
        not isinstance(max_tubes, int) or isinstance(max_tubes, bool) or max_tubes < 1
    ):
        raise ValueError(f"link_tubes_dp: max_tubes must be None or a positive int, got {max_tubes!r}")
    if not isinstance(min_length, int) or isinstance(min_length, bool) or min_length < 1:
        raise ValueError(f"link_tubes_dp: min_length must be a positive int, got {min_length!r}")
    if not isinstance(max_gap, int) or isinstance(max_gap, bool) or max_gap < 0:
        raise ValueError(f"link_tubes_dp: max_gap must be an int >= 0, got {max_gap!r}")
    num_frames = len(boxes_per_frame)
    if labels_per_frame is None:
        classes = [0]
    else:
        classes = sorted({int(c) for labels in labels_per_frame for c in labels.tolist()})
    tubes: list[Tube] = []
    for c in classes:
        # index[t]: the frame-t detections of class c (all of them without labels).
        if labels_per_frame is None:
            index = [np.arange(b.shape[0]) for b in boxes_per_frame]
        else:
            index = [(labels == c).nonzero().flatten().cpu().numpy() for labels in labels_per_frame]
        boxes = [boxes_per_frame[t].detach().cpu()[torch.from_numpy(index[t])] for t in range(num_frames)]
        scores = [
            scores_per_frame[t].detach().cpu().double()[torch.from_numpy(index[t])].numpy()
            for t in range(num_frames)
        ]
        steps = [(t - g, t) for t in range(num_frames) for g in range(1, min(max_gap + 1, t) + 1)]
        ious = {(a, b): pairwise_iou(boxes[a], boxes[b]) for a, b in steps}  # (N_a, N_b)
        search = ChainSearch(scores, ious, float(lam), float(gate), max_gap)
        found = 0
        while max_tubes is None or found < max_tubes:
            chain = search.best()
            if chain is None:
                break
            energy, frames, path = chain
            search.remove(frames, path)
            if len(path) < min_length:
                continue
            found += 1
            detections = [int(index[t][i]) for t, i in zip(frames, path, strict=True)]
            tubes.append(
                make_tube(frames, detections, boxes_per_frame, scores_per_frame, c, len(tubes) + 1, energy)
            )
    logger.debug("link_tubes_dp: %d tubes over %d frames", len(tubes), num_frames)
    return tubes
