"""HOTA (Luiten et al., IJCV 2021) exactly as trackeval's ``HOTA.eval_sequence`` computes it.

Shape shorthand: A alpha thresholds (19), Ng / Nt gt / tracker boxes in one frame, P (gt id,
tracker id) pairs that share a frame, Q matches over the sequence.

Similarity is the IoU of x, y, w, h boxes (trackeval's ``_calculate_box_ious``: 0 for empty
boxes or unions). Per frame the boxes are matched by one linear assignment maximising
``similarity x global alignment score`` (the Jaccard of two identities' soft co-occurrence over
the whole sequence), then for each alpha in 0.05, 0.10, .., 0.95 a match counts when its IoU >=
alpha. DetA = TP / (TP + FN + FP); AssA = mean over true positives of the Jaccard of their two
identities' match counts; HOTA = sqrt(DetA AssA); LocA = mean IoU of the true positives. The
reported numbers are the means over alpha, as trackeval summarises them. Rows are taken as
given: trackeval's MOTChallenge preprocessing (dropping distractor classes and ``conf = 0``
ground truth, and the tracker boxes matched to them) is the reader's choice (``min_confidence``).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.formats.mot import MotRows, frame_groups

__all__ = ["HOTA_ALPHAS", "HotaFrames", "box_overlaps_xywh", "hota_metrics", "similarity_xywh"]

HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)  # (A,) trackeval's array_labels, float rounding included
_EPS = np.finfo("float").eps


def box_overlaps_xywh(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Intersection float64[Ng, Nt], union [Ng, Nt] and areas [Ng], [Nt] of x, y, w, h boxes.

    The arithmetic motmetrics' ``boxiou`` and trackeval's ``_calculate_box_ious`` share (areas
    from the corners, ``(x + w) - x``), so either's IoU rule can be applied to one computation."""
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None, :]) - np.maximum(a[:, None, 0], b[None, :, 0])  # (Ng, Nt)
    ih = np.minimum(ay2[:, None], by2[None, :]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a, area_b = (ax2 - a[:, 0]) * (ay2 - a[:, 1]), (bx2 - b[:, 0]) * (by2 - b[:, 1])  # (Ng,), (Nt,)
    return inter, area_a[:, None] + area_b[None, :] - inter, area_a, area_b


def similarity_from_overlaps(
    inter: np.ndarray, union: np.ndarray, area_a: np.ndarray, area_b: np.ndarray
) -> np.ndarray:
    """trackeval's IoU from :func:`box_overlaps_xywh`: 0 for empty boxes or unions (<= eps)."""
    inter = inter.copy()
    inter[area_a <= _EPS, :] = 0
    inter[:, area_b <= _EPS] = 0
    empty = union <= _EPS
    inter[empty] = 0
    return inter / np.where(empty, 1.0, union)


def similarity_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a float[Ng, 4] and b float[Nt, 4] (x, y, w, h) -> float64[Ng, Nt], trackeval's rules."""
    return similarity_from_overlaps(*box_overlaps_xywh(a, b))


class HotaFrames:
    """Per-frame input of HOTA, collected frame by frame (:meth:`add`), scored once (:meth:`score`).

    Only the non-zero similarities are kept: a zero adds nothing to the global alignment and
    scores 0 in the assignment, so the sums and the assignments equal trackeval's dense ones."""

    def __init__(self, gt_idx: np.ndarray, hyp_idx: np.ndarray) -> None:
        # contiguous identity indices of every gt / hyp row (trackeval relabels ids to 0..K-1)
        self.gt_idx, self.hyp_idx = gt_idx, hyp_idx
        self.num_gt_ids = int(gt_idx.max(initial=-1)) + 1
        self.num_hyp_ids = int(hyp_idx.max(initial=-1)) + 1
        self.frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.soft: list[np.ndarray] = []

    def add(self, g_rows: np.ndarray, h_rows: np.ndarray, sim: np.ndarray | None) -> None:
        """One frame: its gt and hyp rows and their similarity [Ng, Nt] (None when one side is empty)."""
        g, t = self.gt_idx[g_rows], self.hyp_idx[h_rows]
        if sim is None or sim.size == 0:
            empty = np.zeros(0, np.int64)
            self.frames.append((g, t, empty, empty, np.zeros(0)))
            return
        # trackeval's soft co-occurrence sim / (row sum + column sum - sim), from the dense sums
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        i, j = np.nonzero(sim)
        s, d = sim[i, j], denom[i, j]
        self.frames.append((g, t, i, j, s))
        self.soft.append(np.where(d > _EPS, s / np.where(d > _EPS, d, 1.0), 0.0))

    def score(self) -> dict[str, float]:
        """The HOTA family (means over alpha) and the alpha-averaged TP / FN / FP counts."""
        num_gt, num_hyp = len(self.gt_idx), len(self.hyp_idx)
        if num_hyp == 0 or num_gt == 0:
            return _empty(num_gt, num_hyp)
        Nt_all = self.num_hyp_ids
        gt_count = np.bincount(self.gt_idx, minlength=self.num_gt_ids).astype(float)  # boxes per identity
        tr_count = np.bincount(self.hyp_idx, minlength=Nt_all).astype(float)
        codes = [g[i] * Nt_all + t[j] for g, t, i, j, _ in self.frames if len(i)]  # pair code per entry
        all_codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        pair_code, pair_of = np.unique(all_codes, return_inverse=True)  # (P,), (entries,)
        soft = np.concatenate(self.soft) if self.soft else np.zeros(0)
        potential = np.bincount(pair_of, weights=soft, minlength=len(pair_code))  # frame order, as trackeval
        pg, pt = pair_code // Nt_all, pair_code % Nt_all
        alignment = potential / (gt_count[pg] + tr_count[pt] - potential)  # (P,) global alignment score

        # per frame: one assignment on alignment x similarity; keep every match's IoU and pair
        A = len(HOTA_ALPHAS)
        tp, fn, fp, loc = np.zeros(A), np.zeros(A), np.zeros(A), np.zeros(A)
        match_pair, match_sim = [], []
        offset = 0
        for g, t, i, j, s in self.frames:
            if len(g) == 0 or len(t) == 0:
                fp += len(t)
                fn += len(g)
                continue
            score = np.zeros((len(g), len(t)))  # (Ng, Nt)
            sim = np.zeros((len(g), len(t)))
            score[i, j] = alignment[pair_of[offset : offset + len(i)]] * s
            sim[i, j] = s
            offset += len(i)
            rows, cols = linear_sum_assignment(-score)
            matched = sim[rows, cols]  # (K,) IoU of the K assigned pairs
            hit = matched[None, :] >= HOTA_ALPHAS[:, None] - _EPS  # (A, K)
            k = hit.sum(1)
            tp += k
            fn += len(g) - k
            fp += len(t) - k
            loc += (hit * matched[None, :]).sum(1)
            keep = matched > 0  # a zero-IoU assignment never passes alpha >= 0.05
            match_pair.append(g[rows[keep]] * Nt_all + t[cols[keep]])
            match_sim.append(matched[keep])
        return _finish(tp, fn, fp, loc, match_pair, match_sim, gt_count, tr_count, Nt_all)


def _finish(
    tp: np.ndarray,
    fn: np.ndarray,
    fp: np.ndarray,
    loc: np.ndarray,
    match_pair: list[np.ndarray],
    match_sim: list[np.ndarray],
    gt_count: np.ndarray,
    tr_count: np.ndarray,
    Nt_all: int,
) -> dict[str, float]:
    """AssA / AssRe / AssPr per alpha from the matches, then the final fields, means over alpha."""
    A = len(HOTA_ALPHAS)
    q_pair = np.concatenate(match_pair) if match_pair else np.zeros(0, np.int64)  # (Q,)
    q_sim = np.concatenate(match_sim) if match_sim else np.zeros(0)
    ass_a, ass_re, ass_pr = np.zeros(A), np.zeros(A), np.zeros(A)
    for a, alpha in enumerate(HOTA_ALPHAS):
        pairs, count = np.unique(q_pair[q_sim >= alpha - _EPS], return_counts=True)
        gc, tc = gt_count[pairs // Nt_all], tr_count[pairs % Nt_all]
        count = count.astype(float)
        denom = max(1.0, tp[a])
        ass_a[a] = np.sum(count * (count / np.maximum(1, gc + tc - count))) / denom
        ass_re[a] = np.sum(count * (count / np.maximum(1, gc))) / denom
        ass_pr[a] = np.sum(count * (count / np.maximum(1, tc))) / denom
    loca = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    det_re = tp / np.maximum(1, tp + fn)
    det_pr = tp / np.maximum(1, tp + fp)
    det_a = tp / np.maximum(1, tp + fn + fp)
    return {
        "hota": float(np.mean(np.sqrt(det_a * ass_a))),
        "deta": float(np.mean(det_a)),
        "assa": float(np.mean(ass_a)),
        "loca": float(np.mean(loca)),
        "detre": float(np.mean(det_re)),
        "detpr": float(np.mean(det_pr)),
        "assre": float(np.mean(ass_re)),
        "asspr": float(np.mean(ass_pr)),
        "hota_tp": float(tp.sum() / A),
        "hota_fn": float(fn.sum() / A),
        "hota_fp": float(fp.sum() / A),
    }


def _empty(num_gt: int, num_tracker: int) -> dict[str, float]:
    """trackeval's early return: nothing matches, every box is a miss (or, without gt, a false
    positive), LocA is 1 by convention."""
    out = dict.fromkeys(("hota", "deta", "assa", "detre", "detpr", "assre", "asspr", "hota_tp"), 0.0)
    out["loca"] = 1.0
    out["hota_fn"] = float(num_gt) if num_tracker == 0 else 0.0
    out["hota_fp"] = float(num_tracker) if num_tracker and not num_gt else 0.0
    return out


def identity_indices(gt: MotRows, hyp: MotRows) -> tuple[np.ndarray, np.ndarray]:
    """Every row's identity as an index 0..K-1 (sorted ids), for gt and hyp."""
    return np.unique(gt.ids, return_inverse=True)[1].reshape(-1), np.unique(hyp.ids, return_inverse=True)[
        1
    ].reshape(-1)


def hota_metrics(gt: MotRows, hyp: MotRows) -> dict[str, float]:
    """HOTA, DetA, AssA, LocA, DetRe, DetPr, AssRe, AssPr (means over :data:`HOTA_ALPHAS`) of ``hyp``
    against ``gt``, and the alpha-averaged counts ``hota_tp``, ``hota_fn``, ``hota_fp``."""
    collector = HotaFrames(*identity_indices(gt, hyp))
    frames, g_order, g_bounds, t_order, t_bounds = frame_groups(gt, hyp)
    for f in range(len(frames)):
        g_rows = g_order[g_bounds[f] : g_bounds[f + 1]]
        t_rows = t_order[t_bounds[f] : t_bounds[f + 1]]
        both = len(g_rows) and len(t_rows)
        collector.add(g_rows, t_rows, similarity_xywh(gt.boxes[g_rows], hyp.boxes[t_rows]) if both else None)
    return collector.score()
