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

from ..data.formats.mot import MotRows

__all__ = ["HOTA_ALPHAS", "hota_metrics", "similarity_xywh"]

HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)  # (A,) trackeval's array_labels, float rounding included
_EPS = np.finfo("float").eps


def similarity_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a float[Ng, 4] and b float[Nt, 4] (x, y, w, h) -> float64[Ng, Nt], trackeval's rules."""
    a_max, b_max = a[:, :2] + a[:, 2:], b[:, :2] + b[:, 2:]  # (Ng, 2), (Nt, 2) bottom-right corners
    lo = np.maximum(a[:, None, :2], b[None, :, :2])  # (Ng, Nt, 2)
    hi = np.minimum(a_max[:, None], b_max[None, :])  # (Ng, Nt, 2)
    inter = np.maximum(hi[..., 0] - lo[..., 0], 0) * np.maximum(hi[..., 1] - lo[..., 1], 0)
    area_a = (a_max[:, 0] - a[:, 0]) * (a_max[:, 1] - a[:, 1])  # (Ng,)
    area_b = (b_max[:, 0] - b[:, 0]) * (b_max[:, 1] - b[:, 1])  # (Nt,)
    union = area_a[:, None] + area_b[None, :] - inter
    inter[area_a <= _EPS, :] = 0
    inter[:, area_b <= _EPS] = 0
    inter[union <= _EPS] = 0
    union[union <= _EPS] = 1
    return inter / union


def _empty(num_gt: int, num_tracker: int) -> dict[str, float]:
    """trackeval's early return: nothing matches, every box is a miss (or, without gt, a false
    positive), LocA is 1 by convention."""
    out = dict.fromkeys(("hota", "deta", "assa", "detre", "detpr", "assre", "asspr", "hota_tp"), 0.0)
    out["loca"] = 1.0
    out["hota_fn"] = float(num_gt) if num_tracker == 0 else 0.0
    out["hota_fp"] = float(num_tracker) if num_tracker and not num_gt else 0.0
    return out


def hota_metrics(gt: MotRows, hyp: MotRows) -> dict[str, float]:
    """HOTA, DetA, AssA, LocA, DetRe, DetPr, AssRe, AssPr (means over :data:`HOTA_ALPHAS`) of ``hyp``
    against ``gt``, and the alpha-summed counts ``hota_tp``, ``hota_fn``, ``hota_fp`` / A."""
    if len(hyp) == 0 or len(gt) == 0:
        return _empty(len(gt), len(hyp))
    g_ids, g_idx = np.unique(gt.ids, return_inverse=True)  # contiguous ids, as trackeval relabels
    t_ids, t_idx = np.unique(hyp.ids, return_inverse=True)
    Nt_all = len(t_ids)
    gt_count = np.bincount(g_idx, minlength=len(g_ids)).astype(float)  # boxes per gt identity
    tr_count = np.bincount(t_idx, minlength=Nt_all).astype(float)
    frames = np.union1d(gt.frames, hyp.frames)
    g_order, t_order = np.argsort(gt.frames, kind="stable"), np.argsort(hyp.frames, kind="stable")
    g_bounds = np.append(np.searchsorted(gt.frames[g_order], frames), len(g_order))
    t_bounds = np.append(np.searchsorted(hyp.frames[t_order], frames), len(t_order))

    # pass 1: per frame similarity and its soft co-occurrence, keyed by pair code g * Nt_all + t
    sims, codes, soft = [], [], []
    per_frame: list[tuple[np.ndarray, np.ndarray]] = []
    for f in range(len(frames)):
        g_rows = g_order[g_bounds[f] : g_bounds[f + 1]]
        t_rows = t_order[t_bounds[f] : t_bounds[f + 1]]
        g, t = g_idx[g_rows], t_idx[t_rows]
        per_frame.append((g, t))
        if len(g) == 0 or len(t) == 0:
            sims.append(np.zeros((len(g), len(t))))
            continue
        sim = similarity_xywh(gt.boxes[g_rows], hyp.boxes[t_rows])  # (Ng, Nt)
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        sim_iou = np.zeros_like(sim)
        ok = denom > _EPS
        sim_iou[ok] = sim[ok] / denom[ok]
        sims.append(sim)
        codes.append((g[:, None] * Nt_all + t[None, :]).ravel())  # (Ng*Nt,)
        soft.append(sim_iou.ravel())
    all_codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    pair_code, pair_of = np.unique(all_codes, return_inverse=True)  # (P,), (sum Ng*Nt,)
    potential = np.bincount(pair_of, weights=np.concatenate(soft) if soft else None, minlength=len(pair_code))
    pg, pt = pair_code // Nt_all, pair_code % Nt_all
    alignment = potential / (gt_count[pg] + tr_count[pt] - potential)  # (P,) global alignment score

    # pass 2: per frame assignment on alignment x similarity; keep every match's IoU and pair
    A = len(HOTA_ALPHAS)
    tp, fn, fp, loc = np.zeros(A), np.zeros(A), np.zeros(A), np.zeros(A)
    match_pair, match_sim = [], []
    offset = 0
    for (g, t), sim in zip(per_frame, sims, strict=True):
        if len(g) == 0 or len(t) == 0:
            fp += len(t)
            fn += len(g)
            continue
        n = len(g) * len(t)
        score = alignment[pair_of[offset : offset + n]].reshape(len(g), len(t)) * sim  # (Ng, Nt)
        offset += n
        rows, cols = linear_sum_assignment(-score)
        s = sim[rows, cols]  # (K,) IoU of the K assigned pairs
        hit = s[None, :] >= HOTA_ALPHAS[:, None] - _EPS  # (A, K)
        k = hit.sum(1)
        tp += k
        fn += len(g) - k
        fp += len(t) - k
        loc += (hit * s[None, :]).sum(1)
        match_pair.append(g[rows] * Nt_all + t[cols])
        match_sim.append(s)
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
