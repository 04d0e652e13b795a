"""The data flags shared by ``train``, ``eval`` (private): ``--data`` and ``--data-arg``."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import key_values

DATA_HELP = (
    "shapes | digits | digits-distorted | digit-canvas | trees | nuclei | shakespeare | japanese-vowels "
    "| sunspots | adding | coco:DIR | voc:DIR | yolo:DIR"
)


def add_data_arguments(p: argparse.ArgumentParser, *, required: bool, default_help: str = "") -> None:
    """``--data SPEC`` and ``--data-arg K=V`` on ``p``."""
    p.add_argument("--data", required=required, default=None, help=DATA_HELP + default_help)
    p.add_argument("--data-arg", action="append", metavar="K=V", help="dataset keyword argument")


def data_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset keyword arguments the data flags ask for."""
    return key_values(args.data_arg, "--data-arg")
