"""The ``structpred`` command line: ``structpred --help``.

One module per verb (``train.py``, ``evaluate.py``, ``predict.py``...), each with an
``add_parser(subparsers)`` that declares its flags and sets ``func`` to its handler. A handler
takes ``(args, rest)`` and returns the exit code; a ``ValueError`` it raises becomes one
``error: ...`` line (exit 2) unless ``-v`` asks for the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from . import bench, data, demo, evaluate, models, predict, train

VERBS = (demo, models, bench, train, evaluate, predict, data)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global flags and one sub-parser per verb module."""
    parser = argparse.ArgumentParser(
        prog="structpred",
        description="Deep structured prediction: boxes, masks, label maps, flow, depth, tracks.",
    )
    parser.add_argument("--version", action="version", version=f"structpred {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code (0 ok, 1 failed run, 2 bad input)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":  # only bench passes extra options on to its suite
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args, rest))
    except ValueError as err:  # bad input: one clear line, not a traceback (-v shows it)
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
