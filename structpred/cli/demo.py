"""``structpred demo``: train a small detector and segmenter on the shapes world, draw."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import format_metrics


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """The demo: detection, then semantic segmentation, on the built-in shapes world."""
    from ..demo import MODEL, SEG_MODEL, run_demo, run_segmentation_demo
    from ..tasks import task_of

    epochs = {} if args.epochs is None else {"epochs": args.epochs}  # None: the demo's own default
    metrics = run_demo(args.out, pictures=args.pictures, report=print, **epochs)
    print(f"{MODEL} on the shapes world:")
    print(format_metrics(metrics, "test", task_of(MODEL).headline.kind))
    if args.seg_epochs > 0:
        seg = run_segmentation_demo(args.out, epochs=args.seg_epochs, pictures=args.pictures, report=print)
        print(f"{SEG_MODEL} on the shapes world:")
        table = {k: v for k, v in seg.items() if k != "confusion_matrix"}
        print(format_metrics(table, "test", task_of(SEG_MODEL).headline.kind))
    print(f"checkpoints, PR curves and pictures of predictions in {args.out}")
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``demo``."""
    p = sub.add_parser("demo", help="train a small detector and segmenter on the shapes world, draw")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's, 2)")
    p.add_argument("--seg-epochs", type=int, default=2, help="segmentation epochs (0: skip that step)")
    p.add_argument("--pictures", type=int, default=8, help="test images to draw predictions on")
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=run)
