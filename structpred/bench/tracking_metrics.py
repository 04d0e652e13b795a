"""Tracking metrics benchmark: :func:`structpred.metrics.mot.mot_metrics` against motmetrics, and
:func:`structpred.metrics.hota.hota_metrics` against trackeval's ``HOTA``, one run.

Cases: motmetrics' TUD-Campus (71 frames, 359 gt boxes) and TUD-Stadtmitte (179 frames, 1,156),
and synthetic sequences: *long* (1,000 frames x 50 objects) and *crowded* (200 frames x 150
objects in the same area), a tracker's output made of jittered, dropped, identity-swapped boxes
and clutter (:func:`synthetic_sequence`). Both sides get the rows already parsed: ours
:class:`MotRows`, motmetrics the DataFrames its loader makes (its ``compare_to_groundtruth``
with ``distth=0.5`` then ``compute`` of the MOTChallenge metrics), trackeval the per-frame data
dict its MOTChallenge dataset builds (similarities computed beforehand, so its side times
``eval_sequence`` only, ours times HOTA's similarities too). Our ``mot_metrics`` row computes
HOTA as well, which motmetrics does not. Every case's numbers are checked to agree first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..data.formats.mot import MotRows, read_mot
from ..metrics.hota import hota_metrics, similarity_xywh
from ..metrics.mot import mot_metrics
from .timing import Comparison, bench_main, compare

_CHECKED = ("mota", "motp", "idf1", "num_switches", "num_fragmentations", "mostly_tracked")


def synthetic_sequence(frames: int, objects: int, area: float, seed: int) -> tuple[MotRows, MotRows]:
    """Ground truth and a tracker's output: ``objects`` boxes drifting in ``area`` x ``area`` px
    over ``frames`` frames (each visible 85 % of frames); the tracker reports 85 % of them
    jittered, swaps two identities in 10 % of frames, re-births one in 5 %, adds 0-2 clutter boxes.
    """
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, area, (objects, 2))
    velocity = rng.uniform(-2, 2, (objects, 2))
    size = rng.uniform(15, 60, (objects, 2))
    f = np.repeat(np.arange(frames), objects)  # (F*O,) frame of each (frame, object)
    k = np.tile(np.arange(objects), frames)  # (F*O,) object of each
    boxes = np.c_[(start[k] + f[:, None] * velocity[k]) % area, size[k]]  # (F*O, 4)
    seen = rng.random(len(f)) < 0.85
    gt = np.c_[f + 1, k + 1, boxes][seen]
    hyp_ids = np.empty((frames, objects), dtype=np.int64)
    ids = np.arange(objects) + 10_000
    for t in range(frames):
        if rng.random() < 0.10:
            a, b = rng.choice(objects, 2, replace=False)
            ids[[a, b]] = ids[[b, a]]
        if rng.random() < 0.05:
            ids[rng.integers(objects)] = 100_000 + t
        hyp_ids[t] = ids
    reported = seen & (rng.random(len(f)) < 0.85)
    noisy = boxes + rng.normal(0, 3.0, boxes.shape) * [1, 1, 0.5, 0.5]
    noisy[:, 2:] = np.abs(noisy[:, 2:]) + 1
    hyp = np.c_[f + 1, hyp_ids.ravel(), noisy][reported]
    n_clutter = rng.integers(0, 3, frames)
    cf = np.repeat(np.arange(frames), n_clutter)
    clutter = np.c_[
        cf + 1,
        900_000 + np.arange(len(cf)),
        rng.uniform(0, area, (len(cf), 2)),
        rng.uniform(15, 60, (len(cf), 2)),
    ]
    return read_mot(gt), read_mot(np.concatenate([hyp, clutter]))


def _numpy2_shim() -> None:
    """motmetrics 1.4 calls ``np.asfarray``, gone in NumPy 2: give it back before importing it."""
    if not hasattr(np, "asfarray"):
        np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]


def _motmetrics(gt: MotRows, hyp: MotRows) -> Callable[[], dict[str, float]]:
    _numpy2_shim()
    import motmetrics as mm  # type: ignore[import-untyped]  # the peer, only to be measured against
    import pandas as pd  # type: ignore[import-untyped]

    def frame(rows: MotRows) -> Any:
        index = pd.MultiIndex.from_arrays([rows.frames, rows.ids], names=["FrameId", "Id"])
        x, y, w, h = rows.boxes.T
        return pd.DataFrame({"X": x - 1, "Y": y - 1, "Width": w, "Height": h}, index=index)

    gt_df, hyp_df = frame(gt), frame(hyp)
    names = mm.metrics.motchallenge_metrics

    def run() -> dict[str, float]:
        acc = mm.utils.compare_to_groundtruth(gt_df, hyp_df, "iou", distth=0.5)
        summary = mm.metrics.create().compute(acc, metrics=names, name="seq")
        return {k: float(summary[k].iloc[0]) for k in summary.columns}

    return run


def _trackeval(gt: MotRows, hyp: MotRows) -> Callable[[], dict[str, float]]:
    from trackeval.metrics import HOTA  # type: ignore[import-untyped]  # the peer, measured against

    frames = np.union1d(gt.frames, hyp.frames)
    _, g_idx = np.unique(gt.ids, return_inverse=True)
    _, t_idx = np.unique(hyp.ids, return_inverse=True)
    data: dict[str, Any] = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for f in frames:
        gi, ti = np.flatnonzero(gt.frames == f), np.flatnonzero(hyp.frames == f)
        data["gt_ids"].append(g_idx[gi])
        data["tracker_ids"].append(t_idx[ti])
        data["similarity_scores"].append(similarity_xywh(gt.boxes[gi], hyp.boxes[ti]))
    data.update(
        num_gt_dets=len(gt), num_tracker_dets=len(hyp), num_gt_ids=int(g_idx.max()) + 1,
        num_tracker_ids=int(t_idx.max()) + 1, num_timesteps=len(frames),
    )  # fmt: skip
    metric = HOTA()

    def run() -> dict[str, float]:
        res = metric.eval_sequence(data)
        return {"hota": float(np.mean(res["HOTA"])), "assa": float(np.mean(res["AssA"]))}

    return run


def cases(quick: bool) -> list[tuple[str, MotRows, MotRows]]:
    """(name, gt, hyp) of every row: the TUD files and the synthetic sequences."""
    from pathlib import Path

    _numpy2_shim()
    import motmetrics as mm  # its data folder holds the TUD sequences

    data = Path(mm.__file__).parent / "data"
    out = [
        (seq, read_mot(data / seq / "gt.txt"), read_mot(data / seq / "test.txt"))
        for seq in ("TUD-Campus", "TUD-Stadtmitte")
    ]
    sizes = (
        [("long", 40, 8, 400.0), ("crowded", 20, 20, 150.0)]
        if quick
        else [("long", 1000, 50, 800.0), ("crowded", 200, 150, 300.0)]
    )
    for name, frames, objects, area in sizes:
        gt, hyp = synthetic_sequence(frames, objects, area, seed=0)
        out.append((f"{name} ({frames} frames x {objects} objects)", gt, hyp))
    return out


def comparisons(repeats: int, quick: bool) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """(row name, ours, peer) after checking that both sides give the same numbers."""
    rows: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []
    for name, gt, hyp in cases(quick):
        ours = lambda gt=gt, hyp=hyp: mot_metrics(gt, hyp)  # noqa: E731
        peer = _motmetrics(gt, hyp)
        a, b = ours(), peer()
        for key in _CHECKED:
            if not np.isclose(a[key], b[key], rtol=0, atol=1e-9):
                raise AssertionError(f"{name}: {key} ours {a[key]} != motmetrics {b[key]}")
        rows.append((f"mot_metrics vs motmetrics: {name}", ours, peer))
        ours_hota = lambda gt=gt, hyp=hyp: hota_metrics(gt, hyp)  # noqa: E731
        peer_hota = _trackeval(gt, hyp)
        a, b = ours_hota(), peer_hota()
        if not np.isclose(a["hota"], b["hota"], rtol=0, atol=1e-9):
            raise AssertionError(f"{name}: hota ours {a['hota']} != trackeval {b['hota']}")
        rows.append((f"hota_metrics vs trackeval: {name}", ours_hota, peer_hota))
    return rows


def run(repeats: int, threads: int, quick: bool) -> list[Comparison]:
    """Every row timed alternately (``repeats`` medians), target ratio 1.0."""
    return [
        compare(name, ours, peer, repeats=repeats, warmup=1, target=1.0)
        for name, ours, peer in comparisons(repeats, quick)
    ]


def main(argv: list[str] | None = None) -> str:
    """``structpred bench tracking_metrics [--repeats N] [--quick]``."""
    return bench_main("tracking_metrics", __doc__, run, "peer", default_repeats=3, argv=argv)
