"""The dynamic program of Gkioxari & Malik (CVPR 2015, "Finding action tubes"): the best chain of
detections through a clip, by Viterbi.

A *chain* takes one detection in each frame of a run of consecutive frames ``t0 .. t1``. Its energy
is::

    E = sum_{t=t0..t1} s_t(i_t)  +  lam * sum_{t=t0..t1-1} IoU(b_t(i_t), b_{t+1}(i_{t+1}))

The paper links over the whole clip; here the chain may start and end in any frame (it is the
paper's path whenever every frame has a detection and the scores are not negative: extending a
chain never lowers its energy then). Recurrence, with ``V_t(i)`` the best energy of a chain
ending at detection ``i`` of frame ``t``::

    V_t0(i) = s_t0(i)                  (first frame)
    V_t(i)  = s_t(i) + max(0, max_{j: IoU(j, i) >= gate} [V_{t-1}(j) + lam * IoU(j, i)])

``max(0, .)`` is the choice between starting a new chain at ``(t, i)`` and extending the best
one; the answer is ``max_{t, i} V_t(i)``, traced back through the stored arg-maxes.

Rules:
    * a frame with no (remaining) detection cannot be crossed: every chain ends before it;
    * a link needs ``IoU >= gate`` (``gate = 0``, the paper: any two boxes may be linked);
    * ties: the predecessor with the lowest index; extending beats starting anew on equal value;
      of equal-energy chain ends, the earliest frame, then the lowest index.

Shape shorthand:
    T: frames; N_t: detections of frame t.

:func:`best_chain` is the DP itself (float64 numpy on precomputed IoUs); :func:`link_tubes_dp` is
the public entry point (validation, classes, repeated extraction into :class:`~structpred.ops.linking.Tube`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .linking import Tube, check_frames, make_tube, pairwise_iou

logger = logging.getLogger(__name__)


def best_chain(
    scores: Sequence[np.ndarray],
    ious: Sequence[np.ndarray],
    alive: Sequence[np.ndarray],
    lam: float,
    gate: float = 0.0,
) -> tuple[float, int, list[int]] | None:
    """The best chain over the detections still ``alive``.

    Args:
        scores: per frame ``float64[N_t]``.
        ious: per link ``float64[N_t, N_{t+1}]`` (``T - 1`` of them), IoU of frame t's boxes
            with frame t+1's.
        alive: per frame ``bool[N_t]``; dead detections are not used.
        lam: weight of the IoU term.
        gate: a link needs ``IoU >= gate``.

    Returns:
        ``(energy, first_frame, detection index per frame from first_frame)``, or ``None`` when
        no detection is alive.
    """
    num_frames = len(scores)
    assert len(ious) == max(num_frames - 1, 0) and len(alive) == num_frames
    values: list[np.ndarray] = []  # V_t, -inf where dead
    preds: list[np.ndarray] = []  # arg-max predecessor in frame t-1, -1 = chain starts here
    best: tuple[float, int, int] | None = None
    for t in range(num_frames):
        v = np.where(alive[t], scores[t], -np.inf)  # (N_t,)
        pred = np.full(v.shape, -1, dtype=np.int64)
        if t > 0 and v.size and values[t - 1].size:
            link = values[t - 1][:, None] + lam * ious[t - 1]  # (N_{t-1}, N_t)
            link = np.where(ious[t - 1] >= gate, link, -np.inf)
            j = np.argmax(link, axis=0)  # (N_t,); the first (lowest) index among equal maxima
            cont = link[j, np.arange(v.size)]  # (N_t,)
            extend = np.isfinite(cont) & (cont >= 0.0) & alive[t]
            v = np.where(extend, v + np.where(extend, cont, 0.0), v)
            pred = np.where(extend, j, -1)
        values.append(v)
        preds.append(pred)
        if v.size and np.isfinite(v).any():
            i = int(np.argmax(v))
            if best is None or v[i] > best[0]:
                best = (float(v[i]), t, i)
    if best is None:
        return None
    energy, t, i = best
    path = [i]
    while preds[t][i] >= 0:
        i = int(preds[t][i])
        t -= 1
        path.append(i)
    path.reverse()
    return energy, t, path


def link_tubes_dp(
    boxes_per_frame: Sequence[Tensor],
    scores_per_frame: Sequence[Tensor],
    lam: float = 1.0,
    labels_per_frame: Sequence[Tensor] | None = None,
    *,
    gate: float = 0.0,
    max_tubes: int | None = None,
    min_length: int = 1,
) -> list[Tube]:
    """Gkioxari & Malik (2015) tubes: repeated Viterbi chains of ``score + lam * IoU``.

    The best chain (:func:`structpred.ops.tube_dp.best_chain`: one detection per frame over a run of
    consecutive frames, maximising the sum of its scores plus ``lam`` times the IoU of each two
    consecutive boxes) is extracted, its detections removed, and the search repeated until no
    detection is left or ``max_tubes`` tubes were found (per class). A chain cannot cross a frame
    with no remaining detection, and a link needs ``IoU >= gate`` (0: the paper, any link).

    Args:
        boxes_per_frame: ``T`` tensors ``[N_t, 4]`` xyxy.
        scores_per_frame: ``T`` tensors ``[N_t]`` (any real numbers; the paper uses class scores).
        lam: weight of the IoU term (>= 0).
        labels_per_frame: optional ``T`` integer tensors ``[N_t]``; each class is linked on its own.
        gate: smallest IoU of a link, in [0, 1].
        max_tubes: at most this many tubes per class (``None``: until every detection is used).
        min_length: tubes of fewer frames are dropped (their detections are still used up).

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
        ious = [pairwise_iou(boxes[t], boxes[t + 1]) for t in range(num_frames - 1)]  # (N_t, N_t+1)
        alive = [np.ones(len(i), dtype=bool) for i in index]
        found = 0
        while max_tubes is None or found < max_tubes:
            chain = best_chain(scores, ious, alive, float(lam), float(gate))
            if chain is None:
                break
            energy, first, path = chain
            frames = list(range(first, first + len(path)))
            for t, i in zip(frames, path, strict=True):
                alive[t][i] = False
            if len(path) < min_length:
                continue
            found += 1
            detections = [int(index[t][i]) for t, i in zip(frames, path, strict=True)]
            tubes.append(
                make_tube(frames, detections, boxes_per_frame, scores_per_frame, c, len(tubes) + 1, energy)
            )
    logger.debug("link_tubes_dp: %d tubes over %d frames", len(tubes), num_frames)
    return tubes
