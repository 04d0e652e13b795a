"""The ``structpred`` command line: ``structpred --help``.

One module per verb (``train.py``, ``evaluate.py``, ``predict.py``...), each with an
``add_parser(subparsers)`` that declares its flags and sets ``func`` to its handler. A handler
takes ``(args, rest)`` and returns the exit code. Errors a user can cause become one
``error: ...`` line on stderr, no traceback (``-v`` shows it): a ``ValueError`` (bad input, bad
flag: exit 2), an ``OSError`` (read-only or full disk, a file where a folder goes: exit 1),
``MemoryError`` (exit 1), Ctrl-C (exit 130). ``--device`` is checked before the verb runs and
``--limit NAME=N`` is in force while it runs. Any other exception is a bug: its traceback is
shown (exit 1). The contract and the exit codes: docs/errors.md.

Every sub-parser shows its defaults in ``--help`` (:class:`HelpFormatter`) and its examples
(an epilog from :mod:`._examples`, applied here).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any

from .. import __version__
from . import bench, data, demo, evaluate, export, info, models, predict, track, train
from ._examples import EXAMPLES

VERBS = (demo, models, bench, train, evaluate, predict, track, data, info, export)


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
        check_device(getattr(args, "device", None))
        with _limits(getattr(args, "limits", None)):
            code = int(args.func(args, rest))
        sys.stdout.flush()  # inside the try: a reader that left is seen here, not at exit
        return code
    except ValueError as err:  # bad input: one clear line, not a traceback (-v shows it)
        if args.verbose:
            raise
        return _error(str(err), 2)
    except BrokenPipeError:  # `structpred eval ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 141  # 128 + SIGPIPE, as a shell reports it
    except OSError as err:  # the system refused: read-only or full disk, a file where a folder goes
        if args.verbose:
            raise
        return _error(os_error_text(err), 1)
    except MemoryError:
        if args.verbose:
            raise
        return _error("out of memory (try a smaller --batch-size or --image-size)", 1)
    except KeyboardInterrupt:
        return _error("interrupted", 130)


def _error(text: str, code: int) -> int:
    """Print ``error: TEXT`` as one line on stderr; return ``code``."""
    print(f"error: {' '.join(text.split())}", file=sys.stderr)
    return code


def os_error_text(err: OSError) -> str:
    """``'out/run: No space left on device'``: the file(s) and the reason, without ``[Errno N]``."""
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    reason = err.strerror or str(err) or type(err).__name__
    return f"{' -> '.join(names)}: {reason}" if names else reason


def check_device(device: str | None) -> None:
    """Raise ``ValueError`` unless ``--device`` names a device type torch knows and this machine
    has (``cuda`` without a GPU, ``mps`` off a Mac, ``cuda:3`` of 2 GPUs are refused up front)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"--device {device}: no CUDA GPU here (torch.cuda.is_available() is False); use cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"--device {device}: this machine has {count} CUDA GPU(s): cuda:0..cuda:{count - 1}"
            )
        return
    if dev.type == "mps" and torch.backends.mps.is_available():
        return
    raise ValueError(f"--device {device}: not available here; use cpu or cuda")


def _limits(assignments: list[tuple[str, int]] | None) -> contextlib.AbstractContextManager[object]:
    """``--limit`` values in force for one verb (none: nothing changes)."""
    if not assignments:
        return contextlib.nullcontext()
    from ..data import limits

    return limits.override(**dict(assignments))
