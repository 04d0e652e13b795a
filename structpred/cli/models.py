"""``structpred list-models``: the registered models, their task, size and the weights they load."""

from __future__ import annotations

import argparse
from typing import Any


def list_models(args: argparse.Namespace, rest: list[str]) -> int:
    """Print one row per registered model (of ``--task`` if given)."""
    from ..models import list_models, model_info
    from ..models.registry import parameter_count

    names = list_models(args.task)
    if not names:
        print("no models registered yet" if args.task is None else f"no models for task {args.task!r}")
        return 0
    rows = [("model", "task", "parameters", "loads weights of", "what")]
    for name in names:
        info = model_info(name)
        try:
            count = f"{parameter_count(name):,}"
        except ValueError:  # its size comes from the data (a vocabulary...)
            count = "from data"
        rows.append((name, info.task, count, ", ".join(info.peer_weights) or "-", info.summary))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``list-models``."""
    p = sub.add_parser(
        "list-models", help="list the registered models: task, parameters, peer weights they load"
    )
    p.add_argument("--task", default=None, help="only the models of this task (e.g. detection)")
    p.set_defaults(func=list_models)
