"""CLEAR MOT and identity metrics against motmetrics: its TUD sequences, hand-made cases, random
sequences; bad input. The peers (motmetrics; trackeval for test_hota.py) are fed the same rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

if not hasattr(np, "asfarray"):  # motmetrics 1.4 still calls np.asfarray, gone in NumPy 2
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]

import motmetrics as mm  # type: ignore[import-untyped]  # noqa: E402
from trackeval.datasets._base_dataset import _BaseDataset  # type: ignore[import-untyped]  # noqa: E402
from trackeval.metrics import HOTA  # type: ignore[import-untyped]  # noqa: E402

from structpred.data.formats.mot import MotRows, read_mot  # noqa: E402
from structpred.metrics.mot import box_iou_xywh, mot_metrics  # noqa: E402

MM_DATA = Path(mm.__file__).parent / "data"
MM_KEYS = mm.metrics.motchallenge_metrics + [
    "num_objects", "num_predictions", "num_matches", "num_frames", "idtp", "idfn", "idfp", "num_detections",
]  # fmt: skip


def _frame(rows: MotRows) -> pd.DataFrame:
    """Rows as motmetrics' loader gives them (x, y shifted by -1 as its MOT loader does)."""
    index = pd.MultiIndex.from_arrays([rows.frames, rows.ids], names=["FrameId", "Id"])
    return pd.DataFrame(
        {
            "X": rows.boxes[:, 0] - 1,
            "Y": rows.boxes[:, 1] - 1,
            "Width": rows.boxes[:, 2],
            "Height": rows.boxes[:, 3],
        },
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
    return {
        k.lower(): float(np.mean(res[k]))
        for k in ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")
    }


SEQUENCES = ["TUD-Campus", "TUD-Stadtmitte"]
# the values motmetrics' own tests state (test_metrics.py::test_motchallenge_files)
STATED = {
    "TUD-Campus": {"mota": 0.5265, "idf1": 0.5577, "motp": 0.2772},
    "TUD-Stadtmitte": {"mota": 0.5640, "idf1": 0.6446},
}


def _same(ours: dict, ref: dict, keys: list[str] | None = None) -> None:
    for key in keys or list(ref):
        a, b = float(ours[key]), float(ref[key])
        if math.isnan(b):
            assert math.isnan(a), key
        else:
            assert a == pytest.approx(b, abs=1e-6), key


@pytest.mark.parametrize("seq", SEQUENCES)
def test_tud_equals_motmetrics(seq: str) -> None:
    gt, hyp = MM_DATA / seq / "gt.txt", MM_DATA / seq / "test.txt"
    ours = mot_metrics(gt, hyp)
    ref = motmetrics_summary(gt, hyp)  # motmetrics' own loader on the files
    assert len(ref) >= 25
    _same(ours, ref)
    for key, value in STATED[seq].items():
        assert round(ours[key], 4) == value, key


def test_tud_file_array_and_rows_agree() -> None:
    gt, hyp = MM_DATA / "TUD-Campus" / "gt.txt", MM_DATA / "TUD-Campus" / "test.txt"
    from_files = mot_metrics(str(gt), hyp)
    rows = read_mot(gt)
    array = np.concatenate([rows.frames[:, None], rows.ids[:, None], rows.boxes], axis=1)
    assert mot_metrics(array, read_mot(hyp)) == from_files


def _rows(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, dtype=float).reshape(-1, 6)


BOX = (10.0, 10.0, 20.0, 40.0)
FAR = (200.0, 200.0, 20.0, 40.0)
HANDMADE = {
    "empty_gt": (_rows(), _rows((1, 1, *BOX), (2, 1, *BOX))),
    "empty_hyp": (_rows((1, 1, *BOX), (2, 1, *BOX)), _rows()),
    "both_empty_frames": (_rows((1, 1, *BOX)), _rows((3, 5, *FAR))),
    "one_frame": (_rows((1, 1, *BOX), (1, 2, *FAR)), _rows((1, 7, 11, 10, 20, 40), (1, 8, 300, 300, 5, 5))),
    # id switch: hypothesis 5 follows object 1, then hypothesis 6 takes over
    "switch": (
        _rows(*[(f, 1, *BOX) for f in range(1, 6)]),
        _rows((1, 5, *BOX), (2, 5, *BOX), (3, 6, *BOX), (4, 6, *BOX), (5, 5, *BOX)),
    ),
    # fragmentation: tracked, missed twice, tracked again; then missed at the end (no fragment)
    "fragmentation": (
        _rows(*[(f, 1, *BOX) for f in range(1, 8)]),
        _rows((1, 5, *BOX), (2, 5, *BOX), (5, 5, *BOX), (6, 5, *BOX)),
    ),
    # ties: two identical gt boxes, two identical hypotheses (the assignment's tie-break decides)
    "ties": (
        _rows((1, 1, *BOX), (1, 2, *BOX), (2, 1, *BOX), (2, 2, *BOX)),
        _rows((1, 3, *BOX), (1, 4, *BOX), (2, 4, *BOX), (2, 3, *BOX)),
    ),
    # a hypothesis kept from the previous frame although another one overlaps better now
    "keep_previous": (
        _rows((1, 1, *BOX), (2, 1, *BOX)),
        _rows((1, 5, 10, 10, 20, 40), (2, 5, 14, 10, 20, 40), (2, 6, *BOX)),
    ),
    # transfer: one hypothesis jumps from object 1 to object 2
    "transfer": (
        _rows((1, 1, *BOX), (1, 2, *FAR), (2, 1, *BOX), (2, 2, *FAR)),
        _rows((1, 5, *BOX), (2, 5, *FAR), (2, 6, *BOX)),
    ),
    # crowded ties: 6 objects on one spot, 6 hypotheses on it too, identities reshuffled per frame
    "crowded_ties": (
        _rows(*[(f, k, *BOX) for f in range(1, 5) for k in range(6)]),
        _rows(*[(f, 10 + (k * (f + 1)) % 7, *BOX) for f in range(1, 5) for k in range(6)]),
    ),
    "zero_size_boxes": (_rows((1, 1, 10, 10, 0, 0), (1, 2, *BOX)), _rows((1, 1, 10, 10, 0, 0), (1, 2, *BOX))),
}


@pytest.mark.parametrize("case", sorted(HANDMADE))
def test_handmade_equals_motmetrics(case: str) -> None:
    gt, hyp = HANDMADE[case]
    _same(mot_metrics(gt, hyp), motmetrics_summary(gt, hyp))


def test_handmade_values() -> None:
    """The counts the cases were built for (so the peer is not the only judge)."""
    ours = mot_metrics(*HANDMADE["switch"])
    assert (ours["num_switches"], ours["num_matches"], ours["mota"]) == (2, 3, 0.6)
    ours = mot_metrics(*HANDMADE["fragmentation"])
    assert (ours["num_fragmentations"], ours["num_misses"], ours["partially_tracked"]) == (1, 3, 1)
    ours = mot_metrics(*HANDMADE["keep_previous"])
    assert (ours["num_matches"], ours["num_switches"], ours["num_false_positives"]) == (2, 0, 1)
    assert ours["motp"] == pytest.approx((0 + (1 - 16 * 40 / (24 * 40))) / 2)
    ours = mot_metrics(*HANDMADE["empty_hyp"])
    assert (ours["mota"], ours["num_misses"], ours["idf1"], ours["hota"]) == (0.0, 2, 0.0, 0.0)


def _crowded(
    rng: np.random.Generator, frames: int, objects: int, grid: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Objects drifting on a plane; the tracker jitters them, drops some, swaps ids, adds clutter.
    ``grid`` puts boxes on an integer grid (many exact IoU ties)."""
    start = rng.uniform(0, 200, (objects, 2))
    velocity = rng.uniform(-3, 3, (objects, 2))
    size = rng.uniform(10, 40, (objects, 2))
    gt, hyp = [], []
    alive = rng.random((frames, objects)) < 0.85
    hyp_id = np.arange(objects) + 100
    for f in range(frames):
        if rng.random() < 0.1:  # two tracks exchange identities
            a, b = rng.choice(objects, 2, replace=False)
            hyp_id[[a, b]] = hyp_id[[b, a]]
        if rng.random() < 0.05:  # a track is re-born with a new identity
            hyp_id[rng.integers(objects)] = 1000 + f
        for k in range(objects):
            if not alive[f, k]:
                continue
            box = np.r_[start[k] + f * velocity[k], size[k]]
            if grid:
                box = np.round(box / 4) * 4 + np.r_[0, 0, 4, 4]
            gt.append((f + 1, k + 1, *box))
            if rng.random() < 0.85:
                noisy = box + rng.normal(0, 2.5, 4) * np.r_[1, 1, 0.5, 0.5]
                noisy[2:] = np.abs(noisy[2:])
                if grid:
                    noisy = np.round(noisy / 4) * 4
                gt_id = hyp_id[k]
                hyp.append((f + 1, gt_id, *noisy))
        for c in range(rng.integers(0, 3)):
            hyp.append((f + 1, 5000 + c, *rng.uniform(0, 200, 2), *rng.uniform(10, 40, 2)))
    return _rows(*gt), _rows(*hyp)


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_equal_motmetrics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt, hyp = _crowded(rng, frames=25, objects=int(rng.integers(2, 12)), grid=seed % 2 == 1)
    threshold = (0.5, 0.3, 0.7)[seed % 3]
    _same(mot_metrics(gt, hyp, iou_threshold=threshold), motmetrics_summary(gt, hyp, threshold))


def test_row_order_inside_a_frame_is_kept() -> None:
    """motmetrics processes a frame's objects in file order (ties and kept matches depend on it)."""
    gt, hyp = HANDMADE["ties"]
    flipped = gt[[1, 0, 3, 2]]
    _same(mot_metrics(flipped, hyp), motmetrics_summary(flipped, hyp))


def test_box_iou_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    a = np.c_[rng.uniform(0, 50, (7, 2)), rng.uniform(0, 30, (7, 2))]
    b = np.c_[rng.uniform(0, 50, (5, 2)), rng.uniform(0, 30, (5, 2))]
    b[0, 2] = 0.0  # an empty box
    iou = box_iou_xywh(a, b)
    for i in range(7):
        for j in range(5):
            w = max(0.0, min(a[i, 0] + a[i, 2], b[j, 0] + b[j, 2]) - max(a[i, 0], b[j, 0]))
            h = max(0.0, min(a[i, 1] + a[i, 3], b[j, 1] + b[j, 3]) - max(a[i, 1], b[j, 1]))
            union = a[i, 2] * a[i, 3] + b[j, 2] * b[j, 3] - w * h
            assert iou[i, j] == pytest.approx(w * h / union if w * h else 0.0, abs=1e-12)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, float("nan"), "0.5", True])
def test_bad_threshold(threshold: object) -> None:
    gt, hyp = HANDMADE["one_frame"]
    with pytest.raises(ValueError, match="iou_threshold"):
        mot_metrics(gt, hyp, iou_threshold=threshold)  # type: ignore[arg-type]


def test_bad_rows_name_the_input(tmp_path: Path) -> None:
    gt, hyp = HANDMADE["one_frame"]
    with pytest.raises(ValueError, match=r"rows row 0 column w: size must be >= 0"):
        mot_metrics(gt, _rows((1, 7, 11, 10, -20, 40)))
    bad = tmp_path / "hyp.txt"
    bad.write_text("1,1,10,10,20,40\n2,1,10,x,20,40\n")
    with pytest.raises(ValueError, match=r"hyp.txt line 2 column y: not a number"):
        mot_metrics(gt, bad)
    with pytest.raises(ValueError, match=r"missing.txt: MOT file not found"):
        mot_metrics(tmp_path / "missing.txt", hyp)


def test_bench_rows_agree_with_the_peers() -> None:
    """``structpred bench tracking_metrics --quick``'s rows: each case's numbers agree with
    motmetrics and trackeval before timing (``comparisons`` raises otherwise). No timing here."""
    from structpred.bench.tracking_metrics import comparisons, synthetic_sequence

    rows = comparisons(repeats=1, quick=True)
    names = [name for name, _, _ in rows]
    assert (
        len(names) == 8 and any("crowded" in n for n in names) and any("TUD-Stadtmitte" in n for n in names)
    )
    gt, hyp = synthetic_sequence(30, 6, 200.0, seed=1)
    _same(mot_metrics(gt, hyp), motmetrics_summary(gt, hyp))
