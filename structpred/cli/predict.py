"""``structpred predict``: run a trained model on images; its task's outputs under ``--out``."""

from __future__ import annotations

import argparse
from typing import Any


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Predict; print where the outputs went."""
    from ..engine.predict import predict_images

    path = predict_images(args.checkpoint, args.images, args.out, args.score_threshold, args.device)
    print(f"pictures and {path.name} in {path.parent}")
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``predict``."""
    p = sub.add_parser(
        "predict",
        help="run a trained model on images: its task's outputs (drawn PNGs + COCO results json, "
        "label-map PNGs, classes) under --out",
    )
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-*.json")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument(
        "--out",
        default=None,
        help="output folder; mirrors the inputs' sub-folders, never beside them "
        "(default: a new numbered folder under out/predict)",
    )
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw boxes at or above this score")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)
