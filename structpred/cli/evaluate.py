"""``structpred eval``: evaluate a checkpoint with its task's standard metric."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import format_metrics
from ._data_args import add_data_arguments, data_kwargs


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Evaluate; print the metric table (its header names the split and the kind of figures)."""
    from ..engine import checkpoint as ckpt
    from ..engine import run as engine_run
    from ..tasks import task_of

    path, meta = ckpt.read_meta(args.checkpoint, best=args.best)
    if args.report:  # refused before any work
        from ..engine.report import check_report_dir, data_folders

        check_report_dir(args.report, data_folders(args.data or meta["config"].get("data")))
    metrics = engine_run.evaluate(
        path,
        args.data,
        args.split,
        args.batch_size,
        args.device,
        data_kwargs(args),
        pr_plot=args.pr_plot,
        image_size=args.image_size,
        progress=not args.no_progress,
        raw=args.raw_weights,
    )
    kind = task_of(meta["config"]["model_name"]).headline.kind
    print(f"{path} (epoch {int(meta.get('epoch', 0)) + 1}, step {meta.get('step', '?')})")
    from ..engine.ema import weights_line

    if (which := weights_line(meta, args.raw_weights)) is not None:
        print(which)
    print(format_metrics(metrics, args.split, kind))
    if args.report:
        from ..engine.report import report_for_checkpoint

        page = report_for_checkpoint(path, args.report, metrics=metrics, data=args.data, split=args.split,
                                     data_kwargs=data_kwargs(args), batch_size=args.batch_size,
                                     device=args.device, image_size=args.image_size,
                                     raw=args.raw_weights)  # fmt: skip
        print(f"report: {page}")
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``eval``."""
    p = sub.add_parser("eval", help="evaluate a checkpoint with the task's standard metric")
    p.add_argument("--checkpoint", required=True, help="run directory (its last checkpoint) or ckpt-*.json")
    p.add_argument("--best", action="store_true", help="the run directory's best checkpoint, not its last")
    add_data_arguments(
        p, required=False, default_help=" (default: the one trained on, with its --data-arg values)"
    )
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=None, help="(default: the run's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="the model's input size, longer side (default: the one trained with; see train --help)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--raw-weights",
        action="store_true",
        help="a run trained with --ema: evaluate the raw weights, not their average (default: the EMA)",
    )
    p.add_argument("--pr-plot", default=None, metavar="PNG", help="detection: write PR curves here")
    p.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="write DIR/index.html: one page with the metrics, per-class AP/IoU, PR curves, "
        "confusion and the best/worst images drawn",
    )
    p.set_defaults(func=run)
