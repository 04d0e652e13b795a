"""The ``structpred`` command line: ``structpred --help``.

One module per verb (``train.py``, ``evaluate.py``, ``predict.py``...), each with an
``add_parser(subparsers)`` that declares its flags and sets ``func`` to its handler. A handler
takes ``(args, rest)`` and returns the exit code; a ``ValueError`` it raises becomes one
``error: ...`` line (exit 2) unless ``-v`` asks for the traceback.

Every sub-parser shows its defaults in ``--help`` (:class:`HelpFormatter`) and its examples
(an epilog from :mod:`._examples`, applied here).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from .. import __version__
from . import bench, data, demo, evaluate, export, info, models, predict, train
from ._examples import EXAMPLES

VERBS = (demo, models, bench, train, evaluate, predict, data, info, export)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help (not for flags without one, switches, or help that already
    says it); epilogs (the examples) printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "default:" in text or action.nargs == 0:
            return text
        if default is None or default is argparse.SUPPRESS or default is False or default == []:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with :class:`HelpFormatter` (every verb's, nested ones too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global flags and one sub-parser per verb module."""
    parser = Parser(
        prog="structpred",
        description="Deep structured prediction: boxes, masks, label maps, flow, depth, tracks.",
        epilog="`structpred COMMAND --help` shows a command's flags, their defaults and examples.",
    )
    parser.add_argument("--version", action="version", version=f"structpred {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for verb in VERBS:
        verb.add_parser(sub)
    for name, verb_parser in sub.choices.items():
        if name in EXAMPLES and not verb_parser.epilog:
            verb_parser.epilog = EXAMPLES[name]
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
        code = int(args.func(args, rest))
        sys.stdout.flush()  # inside the try: a reader that left is seen here, not at exit
        return code
    except ValueError as err:  # bad input: one clear line, not a traceback (-v shows it)
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `structpred eval ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 141  # 128 + SIGPIPE, as a shell reports it
