"""Multi-object tracking metrics: CLEAR MOT (MOTA, MOTP), identity metrics (IDF1) and HOTA.

Shape shorthand: N gt rows, M hypothesis rows, No / Nh objects / hypotheses in one frame,
P (object, hypothesis) pairs within the threshold over the sequence.

Inputs are MOTChallenge rows (:func:`structpred.data.formats.mot.read_mot`: a file, an array
``[N, 6..10]`` of frame, id, x, y, w, h, ... or :class:`MotRows`). Results match the references
(tests compare on motmetrics' TUD-Campus / TUD-Stadtmitte data and random sequences):

* **CLEAR MOT** exactly as ``motmetrics.MOTAccumulator.update`` with ``max_switch_time = inf``
  (what ``motmetrics.utils.compare_to_groundtruth(gt, hyp, "iou", distth=1 - iou_threshold)``
  builds): distance ``1 - IoU``, pairs farther than ``1 - iou_threshold`` cannot match. Per frame
  (frames = every frame of gt or hyp, in order): (1) an object keeps its last matched hypothesis
  when that hypothesis is present and within the threshold; (2) the rest are matched by one
  linear assignment (scipy's ``linear_sum_assignment``, on the full No x Nh matrix with forbidden
  pairs made expensive as motmetrics does, so ties resolve alike); a match to a hypothesis other
  than the object's last one is a *switch*; (3) unmatched objects are misses, unmatched
  hypotheses false positives. ``mota = 1 - (misses + switches + fp) / num_objects``,
  ``motp`` = mean ``1 - IoU`` of matches and switches (motmetrics' definition: lower is better).
  A *fragmentation* is an object going from tracked to missed between its first and last
  tracked frame; mostly tracked / partially tracked / mostly lost: tracked in >= 80 %,
  [20 %, 80 %), < 20 % of its frames.
* **IDF1** (Ristani et al. 2016): one global bipartite matching of gt and hypothesis
  trajectories maximising the frames where a pair is within the threshold (IDTP); ``idp =
  IDTP / num_predictions``, ``idr = IDTP / num_objects``, ``idf1 = 2 IDTP / (num_objects +
  num_predictions)``.
* **HOTA** (Luiten et al. 2021) as trackeval's ``HOTA`` metric: :mod:`structpred.metrics.hota`.

Ratios over zero counts are NaN / inf as motmetrics' ``quiet_divide`` gives them.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.formats.mot import MotRows, frame_groups, read_mot
from .hota import HotaFrames, box_overlaps_xywh, identity_indices, similarity_from_overlaps

__all__ = ["box_iou_xywh", "clear_mot", "identity_metrics", "mot_metrics"]

MotInput = str | os.PathLike[str] | MotRows | np.ndarray | list[list[float]]
_MISS, _TRACKED = 1, 0


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` float[No, 4] and ``b`` float[Nh, 4] (x, y, w, h) -> float64[No, Nh].

    0 where the boxes do not overlap (also for empty boxes), as motmetrics' ``boxiou``."""
    return _motmetrics_iou(*box_overlaps_xywh(a, b)[:2])


def _motmetrics_iou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter == 0, 0.0, inter / union)


def _expensive(costs: np.ndarray) -> np.ndarray:
    """Forbidden (NaN) pairs -> a cost no optimum takes (motmetrics' ``add_expensive_edges``)."""
    valid = np.isfinite(costs)
    if valid.all():
        return costs
    if not valid.any():
        return np.zeros_like(costs)
    c = np.abs(costs[valid]).max() + 1
    return np.where(valid, costs, 2 * min(costs.shape) * c + 1)


def _divide(a: float, b: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.true_divide(a, b))


def clear_mot(
    gt: MotRows, hyp: MotRows, iou_threshold: float = 0.5, hota: HotaFrames | None = None
) -> dict[str, float]:
    """CLEAR MOT counts and scores, and the per-pair counts IDF1 needs (see the module docstring).

    Returns the motmetrics-named keys (``mota``, ``motp``, ``num_switches``, ...) and
    ``_pairs`` (int64[P, 3]: object, hypothesis index, frames within the threshold), for
    :func:`identity_metrics`.
    ``hota``: also hand every frame's similarities to this collector (one IoU computation for both).
    """
    max_dist = 1.0 - iou_threshold
    frames, gt_order, gt_bounds, hyp_order, hyp_bounds = frame_groups(gt, hyp)
    g_idx, h_idx = identity_indices(gt, hyp)  # (N,), (M,) identities as indices 0..K-1
    Ko, Kh = int(g_idx.max(initial=-1)) + 1, int(h_idx.max(initial=-1)) + 1
    last_hyp = np.full(Ko, -1)  # object -> the hypothesis it was last matched to (-1: none yet)
    last_obj = np.full(Kh, -1)  # hypothesis -> the object step 2 last gave it (transfers)
    obj_matched = np.zeros(Ko, bool)  # matched at least once (migrations)
    hyp_matched = np.zeros(Kh, bool)  # matched at least once (ascends)
    column_of = np.full(Kh + 1, -1)  # scratch: hypothesis -> its column in the frame; [-1] stays -1
    obj_events: list[np.ndarray] = []  # per frame: (No,) object indices
    obj_status: list[np.ndarray] = []  # per frame: (No,) _MISS or _TRACKED
    pair_codes: list[np.ndarray] = []  # per frame: object * Kh + hypothesis of pairs within the threshold
    n_match = n_switch = n_fp = n_transfer = n_ascend = n_migrate = 0
    dist_sum = 0.0
    for f in range(len(frames)):
        g_rows = gt_order[gt_bounds[f] : gt_bounds[f + 1]]
        h_rows = hyp_order[hyp_bounds[f] : hyp_bounds[f + 1]]
        o, h = g_idx[g_rows], h_idx[h_rows]  # (No,), (Nh,) in file order
        No, Nh = len(o), len(h)
        status = np.full(No, _MISS, dtype=np.int8)
        h_used = np.zeros(Nh, dtype=bool)
        overlaps = box_overlaps_xywh(gt.boxes[g_rows], hyp.boxes[h_rows]) if No and Nh else None
        if hota is not None:
            hota.add(g_rows, h_rows, similarity_from_overlaps(*overlaps) if overlaps else None)
        if overlaps:
            dists = 1.0 - _motmetrics_iou(*overlaps[:2])  # (No, Nh)
            dists[dists > max_dist] = np.nan
            i_ok, j_ok = np.nonzero(np.isfinite(dists))
            pair_codes.append(o[i_ok] * Kh + h[j_ok])
            # 1. keep last frame's correspondences still within the threshold; objects in file
            # order, so of two objects last matched to one hypothesis the first in the file keeps it
            column_of[h] = np.arange(Nh)
            j_prev = column_of[last_hyp[o]]  # (No,) column of the object's last hypothesis, or -1
            column_of[h] = -1
            cand = np.flatnonzero(j_prev >= 0)
            cand = cand[np.isfinite(dists[cand, j_prev[cand]])]
            _, first = np.unique(j_prev[cand], return_index=True)
            kept = cand[first]
            status[kept], h_used[j_prev[kept]] = _TRACKED, True
            n_match += len(kept)
            dist_sum += float(dists[kept, j_prev[kept]].sum())
            obj_matched[o[kept]], hyp_matched[h[j_prev[kept]]] = True, True
            # 2. one assignment over the rest (kept rows / columns forbidden, as motmetrics)
            dists[kept, :] = np.nan
            dists[:, h_used] = np.nan
            if np.isfinite(dists).any():
                rows, cols = linear_sum_assignment(_expensive(dists))
                for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
                    if not np.isfinite(dists[i, j]):
                        continue
                    oi, hj = int(o[i]), int(h[j])
                    if last_hyp[oi] >= 0 and last_hyp[oi] != hj:
                        n_switch += 1
                        n_ascend += not hyp_matched[hj]  # a switch to a hypothesis never matched
                    else:
                        n_match += 1
                    if last_obj[hj] >= 0 and last_obj[hj] != oi:  # the hypothesis changes object
                        n_transfer += 1
                        n_migrate += not obj_matched[oi]  # ... to an object never matched
                    last_obj[hj] = oi
                    obj_matched[oi] = hyp_matched[hj] = True
                    dist_sum += dists[i, j]
                    status[i], h_used[j] = _TRACKED, True
                    last_hyp[oi] = hj
        n_fp += int(Nh - h_used.sum())
        obj_events.append(o)
        obj_status.append(status)

    # per-object event sequences in frame order -> tracked ratios and fragmentations
    objs = np.concatenate(obj_events) if obj_events else np.zeros(0, np.int64)
    miss = np.concatenate(obj_status).astype(bool) if obj_status else np.zeros(0, bool)
    by_obj = np.argsort(objs, kind="stable")  # (E,) events grouped by object, frames in order
    objs, miss = objs[by_obj], miss[by_obj]
    uniq, start, count = np.unique(objs, return_index=True, return_counts=True)
    tracked = np.add.reduceat(~miss, start) if len(objs) else np.zeros(0, np.int64)
    ratio = tracked / np.maximum(count, 1)
    # a fragmentation: tracked -> missed inside the object's span of tracked frames
    same_obj = np.zeros(len(objs), bool)
    same_obj[1:] = objs[1:] == objs[:-1]
    begins_miss = same_obj & miss & np.roll(~miss, 1)
    # a miss-run counts only when the object is tracked again later (inside its tracked span)
    last_tracked = (
        np.maximum.reduceat(np.where(miss, -1, np.arange(len(objs))), start) if len(objs) else start
    )
    tracked_after = np.arange(len(objs)) < np.repeat(last_tracked, count)
    num_frag = int((begins_miss & tracked_after).sum())

    num_objects, num_predictions = len(gt), len(hyp)
    num_misses = int(miss.sum())
    num_detections = n_match + n_switch
    codes = np.concatenate(pair_codes) if pair_codes else np.zeros(0, np.int64)
    pair_code, pair_counts = np.unique(codes, return_counts=True)  # (P,)
    return {
        "num_frames": len(frames),
        "num_objects": num_objects,
        "num_predictions": num_predictions,
        "num_unique_objects": len(uniq),
        "num_matches": n_match,
        "num_switches": n_switch,
        "num_false_positives": n_fp,
        "num_misses": num_misses,
        "num_detections": num_detections,
        "num_fragmentations": num_frag,
        "num_transfer": n_transfer,
        "num_ascend": n_ascend,
        "num_migrate": n_migrate,
        "mostly_tracked": int((ratio >= 0.8).sum()),
        "partially_tracked": int(((ratio >= 0.2) & (ratio < 0.8)).sum()),
        "mostly_lost": int((ratio < 0.2).sum()),
        "mota": 1.0 - _divide(num_misses + n_switch + n_fp, num_objects),
        "motp": _divide(dist_sum, num_detections),
        "precision": _divide(num_detections, n_fp + num_detections),
        "recall": _divide(num_detections, num_objects),
        "_pairs": np.stack([pair_code // max(Kh, 1), pair_code % max(Kh, 1), pair_counts], axis=1),  # type: ignore[dict-item]
    }


def identity_metrics(pairs: np.ndarray, num_objects: int, num_predictions: int) -> dict[str, float]:
    """IDF1, IDP, IDR from ``pairs`` int64[P, 3] (gt, hyp identity, frames within the threshold).

    The global matching maximises the summed frames (one ``linear_sum_assignment``); every
    optimum of motmetrics' (No + Nh)^2 cost formulation has this IDTP.
    """
    idtp = 0.0
    if len(pairs):
        o_ids, o_idx = np.unique(pairs[:, 0], return_inverse=True)
        h_ids, h_idx = np.unique(pairs[:, 1], return_inverse=True)
        weight = np.zeros((len(o_ids), len(h_ids)))  # (objects with a pair, hypotheses with a pair)
        weight[o_idx, h_idx] = pairs[:, 2]
        rows, cols = linear_sum_assignment(weight, maximize=True)
        idtp = float(weight[rows, cols].sum())
    idfn, idfp = num_objects - idtp, num_predictions - idtp
    return {
        "idtp": idtp,
        "idfn": idfn,
        "idfp": idfp,
        "idp": _divide(idtp, idtp + idfp),
        "idr": _divide(idtp, idtp + idfn),
        "idf1": _divide(2 * idtp, num_objects + num_predictions),
    }


def mot_metrics(gt: MotInput, hyp: MotInput, iou_threshold: float = 0.5) -> dict[str, float]:
    """CLEAR MOT, identity and HOTA metrics of a tracker's rows ``hyp`` against ``gt``.

    gt, hyp: MOTChallenge rows (a file path, an array [N, 6..10] of frame, id, x, y, w, h, ...,
    or :class:`MotRows`). iou_threshold: a gt box and a hypothesis can match when IoU >=
    ``iou_threshold`` (CLEAR MOT, IDF1; HOTA averages its own thresholds 0.05..0.95).

    Keys as motmetrics names them: ``mota``, ``motp`` (mean 1 - IoU of matches), ``idf1``,
    ``idp``, ``idr``, ``num_switches``, ``num_false_positives``, ``num_misses``,
    ``num_fragmentations``, ``num_objects``, ``num_predictions``, ``num_matches``,
    ``mostly_tracked``, ``partially_tracked``, ``mostly_lost``, ``num_frames``, ...; and trackeval's
    ``hota``, ``deta``, ``assa``, ``loca`` (means over alpha), ``detre``, ``detpr``, ``assre``, ``asspr``.
    """
    if (
        isinstance(iou_threshold, bool)
        or not isinstance(iou_threshold, int | float)
        or not 0 < iou_threshold <= 1
    ):
        raise ValueError(f"iou_threshold must be a number in (0, 1], got {iou_threshold!r}")
    gt_rows, hyp_rows = read_mot(gt), read_mot(hyp)
    hota = HotaFrames(*identity_indices(gt_rows, hyp_rows))
    out = clear_mot(gt_rows, hyp_rows, float(iou_threshold), hota=hota)
    pairs = out.pop("_pairs")
    out.update(identity_metrics(pairs, out["num_objects"], out["num_predictions"]))  # type: ignore[arg-type]
    out.update(hota.score())
    return out
