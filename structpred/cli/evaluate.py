"""``structpred eval``: evaluate a checkpoint with its task's standard metric."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import format_metrics
from ._data_args import add_data_arguments, data_kwargs


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Evaluate; print the metrics."""
    from ..engine import run as engine_run

    metrics = engine_run.evaluate(
        args.checkpoint,
        args.data,
        args.split,
        args.batch_size,
        args.device,
        data_kwargs(args),
        pr_plot=args.pr_plot,
    )
    print(format_metrics(metrics))
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``eval``."""
    p = sub.add_parser("eval", help="evaluate a checkpoint with the task's standard metric")
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-*.json")
    add_data_arguments(p, required=False, default_help=" (default: the one trained on)")
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--pr-plot", default=None, metavar="PNG", help="detection: write PR curves here")
    p.set_defaults(func=run)
