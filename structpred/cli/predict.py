"""``structpred predict``: run a trained model on images, videos or a dataset's split; its task's
outputs under ``--out`` (docs/predict.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._data_args import add_data_arguments, data_kwargs

EXAMPLES = """examples:
  structpred predict --checkpoint out/run photos/ --out out/pred
  structpred predict --checkpoint out/run "shots/**/*.jpg" clip.mp4 --video-out
  structpred predict --checkpoint out/run --data coco:data/coco --split val --score-threshold 0
  structpred predict --checkpoint out/run val2017/ --coco-json annotations/instances_val2017.json
  structpred predict --checkpoint out/flow_run frame0.png frame1.png   # flow: a pair -> .flo + PNG
  structpred predict --checkpoint out/flow_run frames/ vtest.avi --video-out   # frame pairs; tracks

optical flow models: image inputs, in the order given (a folder's files sorted), are a sequence of
frames and each image is paired with the next (a.png b.png c.png: a->b, b->c); each pair writes
<stem>.flo and <stem>_flow.png. A video writes its frames with point trajectories drawn.

depth models: a stereo model reads image inputs in order as (left, right) pairs, a monocular model
each image alone; each writes <stem>_disparity.png (colour) and <stem>_disparity.npy (px), and with
--calib FOCAL,BASELINE[,DOFFS] also <stem>_depth.png (16-bit, metres x 256) and <stem>_depth.npy.
  structpred predict --checkpoint out/stereo_run left.png right.png --calib 994.978,0.193,31.086

multi-task models: every head's output from one run per image: <stem>.png (a panel of the heads),
<stem>_semantic.png / <stem>_parts.png (label maps), <stem>_disparity.npy / .png, depth in metres
with --calib or the depth head's camera, one predictions.json row per image (docs/multitask.md).
"""


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Predict; print what was written where."""
    from ..engine.predict import predict_images

    path = predict_images(
        args.checkpoint,
        args.inputs,
        args.out,
        args.score_threshold,
        args.device,
        args.batch_size,
        data=args.data,
        split=args.split,
        data_kwargs=data_kwargs(args),
        coco_json=args.coco_json,
        video_out=args.video_out,
        progress=not args.no_progress,
        best=args.best,
        calib=args.calib,
        raw_weights=args.raw_weights,
    )
    out = path.parent
    items = json.loads((out / "images.json").read_text(encoding="utf-8"))
    rows = json.loads(path.read_text(encoding="utf-8"))
    pictures = sum(1 for i in items if "output" in i)
    videos = sorted(p.name for p in out.rglob("*_annotated.mp4"))
    flos = sum(1 for r in rows if isinstance(r, dict) and "flo" in r)  # optical flow: one per frame pair
    written = [f"{pictures} pictures", f"{path.name} ({len(rows)} rows)", "images.json", *videos]
    if flos:
        written.insert(0, f"{flos} .flo")
    from ..engine.checkpoint import read_meta
    from ..engine.ema import weights_line

    if Path(args.checkpoint).exists():  # which weights (a run trained with --ema: its average)
        which = weights_line(read_meta(args.checkpoint, best=args.best)[1], args.raw_weights)
        if which is not None:
            print(which)
    print(f"{len(items)} images/frames -> {out}: {', '.join(written)}")
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``predict``."""
    p = sub.add_parser(
        "predict",
        help="run a trained model on images, videos or a dataset split: its task's outputs (drawn PNGs + "
        "COCO results json, label-map PNGs, classes) under --out",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-*.json")
    p.add_argument("--best", action="store_true", help="the run directory's best checkpoint, not its last")
    p.add_argument(
        "--raw-weights",
        action="store_true",
        help="a run trained with --ema: the raw weights, not their average (default: the EMA)",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image or video files (.mp4 .avi .mov .mkv .webm), folders (searched recursively) or glob "
        "patterns; or none with --data",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder; mirrors the inputs' sub-folders, never beside them "
        "(default: a new numbered folder under out/predict)",
    )
    add_data_arguments(p, required=False, default_help=" — predict on that split's images; results carry "
                       "its image and category ids (instead of INPUTs)")  # fmt: skip
    p.add_argument("--split", default="val", help="the --data split (default: %(default)s)")
    p.add_argument(
        "--coco-json",
        default=None,
        metavar="FILE",
        help="a COCO json naming the INPUT images: results use its image ids (matched by file name) "
        "and its category ids (checked against the checkpoint's)",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="draw detections at or above this score; the json keeps all (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="images or frames per forward pass (default: 4)")
    p.add_argument(
        "--video-out",
        action="store_true",
        help="also encode each video's drawn frames as <out>/<video stem>_annotated.mp4",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (default: a bar on a terminal, a few lines in a log)",
    )
    p.add_argument(
        "--calib",
        default=None,
        metavar="FOCAL,BASELINE[,DOFFS]",
        help="depth models: the pair's rectified camera (focal length px, baseline metres, principal-point "
        "x offset px, default 0): also write depth in metres (16-bit PNG: metres x 256, and .npy)",
    )
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)
