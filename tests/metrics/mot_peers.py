"""The reference implementations the MOT tests compare with: motmetrics (CLEAR MOT, IDF1) and
trackeval (HOTA), fed the same rows as :func:`structpred.metrics.mot_metrics`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

if not hasattr(np, "asfarray"):  # motmetrics 1.4 still calls np.asfarray, gone in NumPy 2
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]

import motmetrics as mm  # noqa: E402
from trackeval.datasets._base_dataset import _BaseDataset  # noqa: E402
from trackeval.metrics import HOTA  # noqa: E402

from structpred.data.formats.mot import MotRows, read_mot  # noqa: E402

MM_DATA = Path(mm.__file__).parent / "data"
MM_KEYS = mm.metrics.motchallenge_metrics + [
    "num_objects", "num_predictions", "num_matches", "num_frames", "idtp", "idfn", "idfp", "num_detections",
]  # fmt: skip


def _frame(rows: MotRows) -> pd.DataFrame:
    """Rows as motmetrics' loader gives them (x, y shifted by -1 as its MOT loader does)."""
    index = pd.MultiIndex.from_arrays([rows.frames, rows.ids], names=["FrameId", "Id"])
    return pd.DataFrame(
        {"X": rows.boxes[:, 0] - 1, "Y": rows.boxes[:, 1] - 1, "Width": rows.boxes[:, 2], "Height": rows.boxes[:, 3]},
        index=index,
    )


def motmetrics_summary(gt: object, hyp: object, iou_threshold: float = 0.5) -> dict[str, float]:
    """motmetrics' numbers: ``compare_to_groundtruth`` + ``compute`` (files via its own loader)."""
    if isinstance(gt, str | Path) and isinstance(hyp, str | Path):
        gt_df, hyp_df = mm.io.loadtxt(str(gt), fmt="mot15-2D"), mm.io.loadtxt(str(hyp), fmt="mot15-2D")
    else:
        gt_df, hyp_df = _frame(read_mot(gt)), _frame(read_mot(hyp))  # type: ignore[arg-type]
    acc = mm.utils.compare_to_groundtruth(gt_df, hyp_df, "iou", distth=1 - iou_threshold)
    summary = mm.metrics.create().compute(acc, metrics=MM_KEYS, name="seq")
    return {k: float(summary[k].iloc[0]) for k in summary.columns}


def trackeval_hota(gt: object, hyp: object) -> dict[str, float]:
    """trackeval's ``HOTA().eval_sequence`` on the data dict its MOTChallenge dataset builds
    (ids relabelled 0..K-1, one entry per frame, similarity = box IoU), means over alpha."""
    g, t = read_mot(gt), read_mot(hyp)  # type: ignore[arg-type]
    frames = np.union1d(g.frames, t.frames)
    _, g_idx = np.unique(g.ids, return_inverse=True)
    _, t_idx = np.unique(t.ids, return_inverse=True)
    data: dict[str, object] = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for f in frames:
        gi = np.flatnonzero(g.frames == f)
        ti = np.flatnonzero(t.frames == f)
        data["gt_ids"].append(g_idx[gi])  # type: ignore[attr-defined]
        data["tracker_ids"].append(t_idx[ti])  # type: ignore[attr-defined]
        sim = _BaseDataset._calculate_box_ious(g.boxes[gi].copy(), t.boxes[ti].copy(), box_format="xywh")
        data["similarity_scores"].append(sim)  # type: ignore[attr-defined]
    data.update(
        num_gt_dets=len(g), num_tracker_dets=len(t), num_gt_ids=int(g_idx.max(initial=-1)) + 1,
        num_tracker_ids=int(t_idx.max(initial=-1)) + 1, num_timesteps=len(frames),
    )  # fmt: skip
    res = HOTA().eval_sequence(data)
    return {k.lower(): float(np.mean(res[k])) for k in ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")}
