"""``structpred data export``: write a dataset in a standard format (images + annotations)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import key_values
from ._data_args import LIMIT_HELP, limit_assignment


class _LimitOrCount(argparse.Action):
    """``--limit NAME=N`` appends an input limit; ``--limit N`` (before ``--max-images``) sets
    ``max_images``."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        text = str(value)
        if "=" not in text:
            try:
                namespace.max_images = int(text)
            except ValueError:
                raise argparse.ArgumentError(
                    self, f"expected NAME=N or a number of images, got {text!r}"
                ) from None
            return
        try:
            pair = limit_assignment(text)
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        namespace.limits = [*(getattr(namespace, "limits", None) or []), pair]


def export(args: argparse.Namespace, rest: list[str]) -> int:
    """Export each requested split of the dataset; print where each went."""
    from ..data.export import export_dataset
    from ..data.registry import build_dataset

    kwargs = key_values(args.data_arg, "--data-arg")
    for split in args.splits:
        dataset = build_dataset(args.dataset, split, **kwargs)
        path = export_dataset(dataset, args.out, args.format, split=split, limit=args.max_images)
        print(f"{split}: {path}")
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``data`` and its sub-commands."""
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    e = data_sub.add_parser("export", help="write a dataset in a standard format (images + annotations)")
    e.add_argument("dataset", help="shapes | digit-canvas | trees | nuclei | ...")
    e.add_argument("--format", choices=["coco", "voc", "yolo"], required=True)
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--splits", nargs="+", default=["train", "val"])
    e.add_argument("--max-images", type=int, default=None, metavar="N", help="at most N images per split")
    e.add_argument(
        "--limit",
        dest="limits",
        action=_LimitOrCount,
        metavar="NAME=N",
        help=LIMIT_HELP + "; a plain N (the old meaning) is --max-images N",
    )
    e.add_argument("--data-arg", action="append", metavar="K=V", help="dataset keyword argument")
    e.set_defaults(func=export)
