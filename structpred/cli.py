"""The ``structpred`` command line: ``structpred --help``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _list_models(_: argparse.Namespace, rest: list[str]) -> int:
    from .models import list_models

    names = list_models()
    if not names:
        print("no models registered yet")
    for name in names:
        print(name)
    return 0


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    if args.suite == "ops":
        from .bench.ops import main as bench_ops

        bench_ops(rest)
        return 0
    raise AssertionError(args.suite)  # argparse restricts the choices


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="structpred",
        description="Deep structured prediction: boxes, masks, label maps, flow, depth, tracks.",
    )
    parser.add_argument("--version", action="version", version=f"structpred {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list-models", help="list the registered model builders")
    p.set_defaults(func=_list_models)
    p = sub.add_parser(
        "bench",
        help="time structpred against its peer (ratios from one run)",
        description="Time structpred against its peer; extra options go to the suite "
        "(e.g. structpred bench ops --repeats 25).",
    )
    p.add_argument("suite", choices=["ops"], help="ops: structpred.ops vs torchvision.ops")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":  # only bench passes extra options on to its suite
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args, rest))


if __name__ == "__main__":
    sys.exit(main())
