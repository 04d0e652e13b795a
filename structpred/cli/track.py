"""``structpred track``: follow one object through a video from its first-frame box with a trained
single-object tracker (SINT); the box per frame (CSV and JSON) and the drawn frames (PNGs or an mp4)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  structpred track vtest.avi --checkpoint out/sint_run --box 290,180,40,90
  structpred track clip.mp4 --checkpoint out/sint_run --box 10,20,32,32 --video-out --out out/track1
  structpred track vtest.avi --checkpoint out/sint_run --box 290,180,40,90 --refine

--refine moves each frame's best candidate by SINT+'s box regressors (ridge regression on the
candidates' features, fitted on the first frame only; --refine-lambda sets the ridge weight).

--box is x,y,w,h of the target in the video's first frame (pixels, top-left corner and size).
Writes boxes.csv (frame, x, y, w, h), boxes.json and frames/000000.png ... (or, with --video-out,
<video stem>_tracked.mp4 instead of the PNGs) under --out.
"""


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x,y,w,h"`` -> four floats (``ValueError`` naming ``--box`` otherwise)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"--box {text!r}: expected four numbers x,y,w,h (e.g. --box 10,20,40,30)")
    if values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"--box {text!r}: the width and height must be > 0")
    return values[0], values[1], values[2], values[3]


def track_video(
    checkpoint: str | Path,
    video: str | Path,
    box: tuple[float, float, float, float],
    out: str | Path | None = None,
    *,
    video_out: bool = False,
    best: bool = False,
    device: str | None = None,
    refine: bool = False,
    refine_lambda: float | None = None,
) -> Path:
    """Track ``box`` (x, y, w, h in frame 0) through ``video`` with the checkpoint's tracker; returns
    the output folder (``boxes.csv``, ``boxes.json``, drawn frames or ``<stem>_tracked.mp4``).
    ``refine`` (or the checkpoint's ``refine`` setting) adds SINT+'s box refinement, fitted on the
    first frame; ``refine_lambda`` overrides its ridge weight.

    Raises ``ValueError`` for a video that cannot be decoded, a box empty or outside the first
    frame, or a checkpoint whose model is not a single-object tracker (before any output)."""
    import torch

    from ..engine.run import load_model
    from ..models import sint  # noqa: F401  (registers sint_narrow)
    from ..models.sint import check_box
    from ..tasks import (
        task_of,
        tracking,  # noqa: F401  (registers single_object_tracking)
    )
    from ..tasks.outputs import next_run_folder
    from ..tasks.video_frames import VideoWriter, iter_frames, probe_video
    from ..viz.draw import draw_boxes, save_png, to_uint8_image

    video = Path(video)
    if not video.is_file():
        raise ValueError(f"{video}: no such video file")
    info = probe_video(video)  # a file that is not a video fails here, before the model loads
    model, config = load_model(checkpoint, best=best)
    if task_of(config.model_name).name != "single_object_tracking" or not isinstance(model, sint.SINT):
        raise ValueError(
            f"{checkpoint}: {config.model_name} is not a single-object tracker (e.g. sint_narrow)"
        )
    if refine_lambda is not None and not (math.isfinite(refine_lambda) and refine_lambda > 0):
        raise ValueError(f"--refine-lambda {refine_lambda}: must be a number > 0")
    if refine_lambda is not None:
        model.config.refine_lambda = refine_lambda
    refine = refine or model.config.refine
    dev = torch.device(device or "cpu")
    model.to(dev)
    folder = Path(out) if out is not None else next_run_folder(Path("out/track"))
    x, y, w, h = box
    rows: list[list[float]] = []
    writer = None
    query = prev = refiner = None
    frames_dir = folder / "frames"
    with torch.no_grad():
        for index, _, frame in iter_frames(video):
            frame = frame.to(dev)
            H, W = frame.shape[-2:]
            if query is None:
                xyxy = torch.tensor([x, y, x + w, y + h], device=dev)
                prev = check_box(xyxy, (H, W), f"--box {x:g},{y:g},{w:g},{h:g} in the {W}x{H} first frame")
                query = model.start(frame, prev)
                refiner = model.fit_refiner(frame, prev) if refine else None  # may refuse the box
                folder.mkdir(parents=True, exist_ok=True)
            else:
                assert prev is not None
                feats = model.features(frame[None])
                prev = model.step(feats, 0, prev, query, (H, W), refiner)
            assert prev is not None
            x1, y1, x2, y2 = (float(v) for v in prev)
            rows.append([index, x1, y1, x2 - x1, y2 - y1])
            picture = draw_boxes(to_uint8_image(frame.cpu()), prev.cpu()[None], colors="lime")
            if video_out:
                if writer is None:
                    writer = VideoWriter(folder / f"{video.stem}_tracked.mp4", info.fps or 25.0)
                writer.write(picture)
            else:
                save_png(frames_dir / f"{index:06d}.png", picture)
    if writer is not None:
        writer.close()
    with open(folder / "boxes.csv", "w", newline="", encoding="utf-8") as f:
        out_csv = csv.writer(f)
        out_csv.writerow(["frame", "x", "y", "w", "h"])
        out_csv.writerows([[int(r[0]), *(round(v, 2) for v in r[1:])] for r in rows])
    records = [{"frame": int(r[0]), "box": [round(v, 2) for v in r[1:]]} for r in rows]
    (folder / "boxes.json").write_text(
        json.dumps({"video": str(video), "boxes_xywh": records}), encoding="utf-8"
    )
    return folder


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Track; print what was written where."""
    box = parse_box(args.box)
    folder = track_video(
        args.checkpoint,
        args.video,
        box,
        args.out,
        video_out=args.video_out,
        best=args.best,
        device=args.device,
        refine=args.refine,
        refine_lambda=args.refine_lambda,
    )
    count = sum(1 for _ in open(folder / "boxes.csv", encoding="utf-8")) - 1
    drawn = next(iter(folder.glob("*_tracked.mp4")), None) or folder / "frames"
    print(f"{count} frames -> {folder}: boxes.csv, boxes.json, {drawn.name}")
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``track``."""
    p = sub.add_parser(
        "track",
        help="follow one object through a video from its first-frame box (single-object tracker, e.g. SINT)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", metavar="VIDEO", help="a video file (.mp4 .avi .mov .mkv .webm)")
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-*.json of a tracker")
    p.add_argument("--best", action="store_true", help="the run directory's best checkpoint, not its last")
    p.add_argument("--box", required=True, metavar="X,Y,W,H", help="the target in the first frame, pixels")
    p.add_argument(
        "--out", default=None, help="output folder (default: a new numbered folder under out/track)"
    )
    p.add_argument("--video-out", action="store_true", help="write <stem>_tracked.mp4 instead of PNG frames")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--refine", action="store_true", help="SINT+ box refinement (ridge regressors fitted on frame 0)"
    )
    p.add_argument(
        "--refine-lambda", type=float, default=None, help="its ridge weight (default: the model's)"
    )
    p.set_defaults(func=run)
