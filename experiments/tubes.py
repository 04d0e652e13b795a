"""Detection tubes (issue 20): our two linkers scored with MOTA / IDF1 / HOTA:
``OMP_NUM_THREADS=1 python experiments/tubes.py [--seeds 3] [--clips 20] [--quick] [--checkpoint CKPT]``.

Sequences (ground truth known):

* ``shapes``: ``ShapesVideo("val", size=128, length=24)`` clips (2-6 objects moving on smooth
  paths, crossing and occluding), ``--clips`` of them, scored on their concatenation (frames and ids
  offset, so the counts add up as motmetrics' "overall" does);
* ``TUD-Campus``, ``TUD-Stadtmitte``: the ground-truth boxes ``motmetrics`` ships (640 x 480).

Detections are the ground truth corrupted, at three noise levels (``NOISE``): every box is dropped
with probability ``drop``, its centre moved by N(0, ``jitter`` x its size) and its width and height
scaled by exp(N(0, ``jitter``)); ``fp`` false positives per frame (Poisson) of a random ground-truth
box's size at a uniform position; scores N(0.8, 0.1) for true and U(0.05, 0.6) for false boxes;
identities removed and each frame's order shuffled. ``--checkpoint``: also the shapes clips through a
trained ``fasterrcnn_fpn`` narrow detector (detections scoring >= 0.5, per class).

Linkers (``LINKERS``): Gkioxari & Malik's DP (:func:`structpred.ops.tube_dp.link_tubes_dp`) as the
paper sets it (lam = 1, any link, no frame skipped), gated (links need IoU >= 0.3, tubes >= 2
frames) and gated with gaps (a tube may skip up to 5 frames, as the online linker's memory), and the
online Hungarian linker (:func:`structpred.ops.linking.link_online`) plain and with an occlusion
memory + confirmation; and the DP's IoU weight ``lam`` in (0, 1, 5). Metrics:
:func:`structpred.metrics.mot.mot_metrics` (equal to motmetrics / trackeval, tested in
``tests/metrics``); one run is also cross-checked against motmetrics here.
Seeds fixed (``seed`` 0..``--seeds``-1); writes ``experiments/RESULTS_tubes.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from structpred.data.shapes_views import ShapesVideo
from structpred.metrics.mot import mot_metrics
from structpred.models.video_detector import VideoDetector
from structpred.ops.linking import Tube, link_online, tubes_to_mot_rows
from structpred.ops.tube_dp import link_tubes_dp

OUT = Path(__file__).parent / "RESULTS_tubes.md"
TUD = Path(__import__("motmetrics").__file__).parent / "data"


@dataclass(frozen=True)
class Noise:
    jitter: float
    drop: float
    fp: float


NOISE = {"low": Noise(0.03, 0.05, 0.1), "mid": Noise(0.08, 0.15, 0.5), "high": Noise(0.15, 0.3, 1.0)}
LAMBDAS = (0.0, 1.0, 5.0)
Linker = Callable[[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None], list[Tube]]
LINKERS: dict[str, Linker] = {
    "DP paper (lam 1, any link)": lambda b, s, lab: link_tubes_dp(b, s, 1.0, lab),
    "DP gated (IoU>=0.3, len>=2)": lambda b, s, lab: link_tubes_dp(b, s, 1.0, lab, gate=0.3, min_length=2),
    "DP gated + gaps (max_gap 5)": lambda b, s, lab: link_tubes_dp(
        b, s, 1.0, lab, gate=0.3, min_length=2, max_gap=5
    ),
    "online (age 1, hits 1)": lambda b, s, lab: link_online(
        b, s, lab, iou_threshold=0.3, max_age=1, min_hits=1
    ),
    "online (age 5, hits 2)": lambda b, s, lab: link_online(
        b, s, lab, iou_threshold=0.3, max_age=5, min_hits=2
    ),
}


@dataclass
class Sequence:
    """Ground truth of one sequence: rows [frame (1-based), id, x, y, w, h] and the image size."""

    name: str
    gt: np.ndarray
    num_frames: int
    width: float
    height: float


def tud(name: str) -> Sequence:
    rows = np.loadtxt(TUD / name / "gt.txt", delimiter=",")[:, :6]
    return Sequence(name, rows, int(rows[:, 0].max()), 640.0, 480.0)


def shapes(clips: int, length: int) -> tuple[Sequence, list[torch.Tensor]]:
    """The clips' ground truth concatenated (frames and ids offset) and the clips' frames."""
    data = ShapesVideo("val", size=128, num_images=clips, length=length)
    rows, frames = [], []
    next_id = 0
    for k in range(clips):
        clip, target = data[k]
        frames.append(clip)
        tracks, visible = target["tracks"].double().numpy(), target["visible"].numpy()  # (M, T, 4), (M, T)
        for m, t in zip(*np.nonzero(visible), strict=True):
            x1, y1, x2, y2 = tracks[m, t]
            rows.append([k * length + t + 1, next_id + m + 1, x1, y1, x2 - x1, y2 - y1])
        next_id += tracks.shape[0]
    gt = np.array(rows)
    return Sequence("shapes", gt[np.lexsort((gt[:, 1], gt[:, 0]))], clips * length, 128.0, 128.0), frames


def corrupt(seq: Sequence, noise: Noise, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-frame detections (xyxy boxes, scores) from the ground truth (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sizes = seq.gt[:, 4:6]
    boxes, scores = [], []
    for f in range(1, seq.num_frames + 1):
        gt = seq.gt[seq.gt[:, 0] == f]
        keep = gt[rng.random(len(gt)) >= noise.drop]
        w, h = keep[:, 4], keep[:, 5]
        cx = keep[:, 2] + w / 2 + rng.normal(0, noise.jitter, len(keep)) * w
        cy = keep[:, 3] + h / 2 + rng.normal(0, noise.jitter, len(keep)) * h
        w = w * np.exp(rng.normal(0, noise.jitter, len(keep)))
        h = h * np.exp(rng.normal(0, noise.jitter, len(keep)))
        true = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        num_fp = rng.poisson(noise.fp)
        fw, fh = sizes[rng.integers(0, len(sizes), num_fp)].T
        fx, fy = rng.uniform(0, seq.width - fw), rng.uniform(0, seq.height - fh)
        false = np.stack([fx, fy, fx + fw, fy + fh], 1)
        s = np.concatenate(
            [np.clip(rng.normal(0.8, 0.1, len(true)), 0.05, 1.0), rng.uniform(0.05, 0.6, num_fp)]
        )
        b = np.concatenate([true.reshape(-1, 4), false.reshape(-1, 4)])
        order = rng.permutation(len(b))  # identities removed: the order says nothing
        boxes.append(torch.from_numpy(b[order]).float())
        scores.append(torch.from_numpy(s[order]).float())
    return boxes, scores


def score(seq: Sequence, tubes: list[Tube]) -> dict[str, float]:
    hyp = tubes_to_mot_rows(tubes).numpy()
    m = mot_metrics(seq.gt, hyp[:, :6] if len(hyp) else np.zeros((0, 6)), 0.5)
    return {
        k: float(m[k]) for k in ("mota", "idf1", "hota", "num_switches", "num_false_positives", "num_misses")
    }


def motmetrics_check(seq: Sequence, tubes: list[Tube]) -> tuple[float, float]:
    """MOTA and IDF1 by motmetrics itself (a peer; experiments only) on the same rows."""
    import motmetrics as mm
    import pandas as pd

    if not hasattr(np, "asfarray"):  # motmetrics 1.4 calls np.asfarray, gone in NumPy 2
        np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]
    cols = ["FrameId", "Id", "X", "Y", "Width", "Height"]
    gt = pd.DataFrame(seq.gt, columns=cols).astype({"FrameId": int, "Id": int}).set_index(["FrameId", "Id"])
    hyp_rows = tubes_to_mot_rows(tubes).numpy()[:, :6]
    hyp = (
        pd.DataFrame(hyp_rows, columns=cols).astype({"FrameId": int, "Id": int}).set_index(["FrameId", "Id"])
    )
    acc = mm.utils.compare_to_groundtruth(gt, hyp, "iou", distth=0.5)
    s = mm.metrics.create().compute(acc, metrics=["mota", "idf1"])
    return float(s["mota"].iloc[0]), float(s["idf1"].iloc[0])


def run_detector(checkpoint: str, clips: list[torch.Tensor], min_score: float) -> tuple[list, list, list]:
    """Per-frame detections (scoring >= ``min_score``) of a trained detector on every clip, through
    :class:`~structpred.models.video_detector.VideoDetector` (concatenated like the ground truth)."""
    from structpred.engine.run import load_model

    model, _ = load_model(checkpoint)
    video = VideoDetector(model, min_score=min_score, batch_size=8).eval()
    boxes, scores, labels = [], [], []
    with torch.no_grad():
        for clip in clips:
            detections, _ = video.detect_frames(clip)
            assert detections is not None
            for d in detections:
                keep = d["scores"] >= min_score
                boxes.append(d["boxes"][keep])
                scores.append(d["scores"][keep])
                labels.append(d["labels"][keep])
    return boxes, scores, labels


def fmt(values: list[float], pct: bool = True) -> str:
    a = np.array(values) * (100 if pct else 1)
    return f"{a.mean():.1f}" if len(a) == 1 else f"{a.mean():.1f} ± {a.std():.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--length", type=int, default=24)
    parser.add_argument("--checkpoint", default="out/transformers-detect10-narrow/fasterrcnn_fpn-narrow-s0")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 clips: a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.clips = 1, 4
    start = time.perf_counter()
    shapes_seq, clips = shapes(args.clips, args.length)
    sequences = [shapes_seq, tud("TUD-Campus"), tud("TUD-Stadtmitte")]
    lines = [
        "# Detection tubes: DP and online linking scored with MOTA / IDF1 / HOTA",
        "",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python experiments/tubes.py "
        f"--seeds {args.seeds} --clips {args.clips}` (`experiments/tubes.py`; what each row means is in "
        "its docstring and `docs/tubes.md`).",
        "",
        f"Sequences: shapes-video val ({args.clips} clips x {args.length} frames, 128 px, "
        f"{len(shapes_seq.gt)} gt boxes, {len(np.unique(shapes_seq.gt[:, 1]))} tracks), TUD-Campus "
        f"({len(sequences[1].gt)} boxes), TUD-Stadtmitte ({len(sequences[2].gt)} boxes). "
        f"Noise levels (jitter x box size, drop probability, false positives per frame): "
        + ", ".join(f"{k} = ({n.jitter}, {n.drop}, {n.fp})" for k, n in NOISE.items())
        + f". Mean ± std over seeds 0..{args.seeds - 1}; MOTA, IDF1, HOTA in %; IDsw, FP, FN counts.",
        "",
    ]
    checked = None
    for seq in sequences:
        lines += [
            f"## {seq.name}",
            "",
            "| noise | linker | MOTA | IDF1 | HOTA | IDsw | FP | FN |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for level, noise in NOISE.items():
            results: dict[str, list[dict[str, float]]] = {name: [] for name in LINKERS}
            for seed in range(args.seeds):
                boxes, scores = corrupt(seq, noise, seed)
                for name, linker in LINKERS.items():
                    tubes = linker(boxes, scores, None)
                    results[name].append(score(seq, tubes))
                    if (
                        checked is None
                        and seq.name == "TUD-Campus"
                        and level == "mid"
                        and name.startswith("online")
                    ):
                        ours = results[name][-1]
                        checked = (
                            seq.name,
                            level,
                            name,
                            seed,
                            ours["mota"],
                            ours["idf1"],
                            *motmetrics_check(seq, tubes),
                        )
            for name, rs in results.items():
                lines.append(
                    f"| {level} | {name} | "
                    + " | ".join(fmt([r[k] for r in rs]) for k in ("mota", "idf1", "hota"))
                    + " | "
                    + " | ".join(
                        fmt([r[k] for r in rs], pct=False)
                        for k in ("num_switches", "num_false_positives", "num_misses")
                    )
                    + " |"
                )
            print(f"{seq.name} {level} done ({time.perf_counter() - start:.0f} s)", flush=True)
        lines.append("")
    lines += [
        "## The IoU weight lambda (DP gated + gaps, noise mid)",
        "",
        "| sequence | lambda | MOTA | IDF1 | HOTA | IDsw |",
        "|---|---|---|---|---|---|",
    ]
    for seq in sequences:
        for lam in LAMBDAS:
            rs = []
            for seed in range(args.seeds):
                boxes, scores = corrupt(seq, NOISE["mid"], seed)
                tubes = link_tubes_dp(boxes, scores, lam, gate=0.3, min_length=2, max_gap=5)
                rs.append(score(seq, tubes))
            lines.append(
                f"| {seq.name} | {lam:g} | "
                + " | ".join(fmt([r[k] for r in rs]) for k in ("mota", "idf1", "hota"))
                + f" | {fmt([r['num_switches'] for r in rs], pct=False)} |"
            )
    lines.append("")
    ckpt = Path(args.checkpoint)
    if ckpt.exists():
        boxes, scores, labels = run_detector(str(ckpt), clips, 0.5)
        lines += [
            "## shapes, a trained detector's boxes",
            "",
            f"`fasterrcnn_fpn` narrow trained on the shapes world (checkpoint `{ckpt}`, COCO mAP@0.5 0.91 on "
            "its val split), run on every frame; detections scoring >= 0.5 linked per class. Deterministic.",
            "",
            "| linker | MOTA | IDF1 | HOTA | IDsw | FP | FN |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, linker in LINKERS.items():
            r = score(shapes_seq, linker(boxes, scores, labels))
            lines.append(
                f"| {name} | "
                + " | ".join(fmt([r[k]]) for k in ("mota", "idf1", "hota"))
                + " | "
                + " | ".join(
                    fmt([r[k]], pct=False) for k in ("num_switches", "num_false_positives", "num_misses")
                )
                + " |"
            )
        lines.append("")
        print(f"detector done ({time.perf_counter() - start:.0f} s)", flush=True)
    else:
        lines += [f"(No detector checkpoint at `{ckpt}`: the trained-detector table was skipped.)", ""]
    if checked is not None:
        lines += [
            "## Cross-check against motmetrics",
            "",
            f"{checked[0]}, noise {checked[1]}, {checked[2]}, seed {checked[3]}: "
            f"ours MOTA {checked[4]:.6f} / IDF1 {checked[5]:.6f}; "
            f"motmetrics 1.4.0 MOTA {checked[6]:.6f} / IDF1 {checked[7]:.6f}.",
            "",
        ]
    lines.append(
        f"Wall-clock: {time.perf_counter() - start:.0f} s on 1 thread "
        "(a 2-core machine shared with other jobs: slower than alone)."
    )
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
