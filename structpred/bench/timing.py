"""Interleaved median timing of two implementations, for ours/peer ratios on noisy machines."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Comparison:
    """Median times (ms) of ours and the peer, measured alternately in one run."""

    name: str
    ours_ms: float
    peer_ms: float
    target: float | None = None

    @property
    def ratio(self) -> float:
        """ours / peer: below 1 means structpred is faster."""
        return self.ours_ms / self.peer_ms

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "met" if self.ratio <= self.target else "MISSED"


def compare(
    name: str,
    ours: Callable[[], object],
    peer: Callable[[], object],
    repeats: int = 15,
    warmup: int = 2,
    target: float | None = None,
) -> Comparison:
    """Time ``ours`` and ``peer`` alternately ``repeats`` times each (after ``warmup``), medians.

    Alternating spreads the machine's noise evenly over both sides.
    """
    for _ in range(warmup):
        ours()
        peer()
    ours_t: list[float] = []
    peer_t: list[float] = []
    for i in range(repeats):
        # Swap which runs first every other round, so neither side always runs on a warm cache.
        pair = ((ours, ours_t), (peer, peer_t)) if i % 2 == 0 else ((peer, peer_t), (ours, ours_t))
        for fn, sink in pair:
            start = time.perf_counter()
            fn()
            sink.append((time.perf_counter() - start) * 1e3)
    return Comparison(name, statistics.median(ours_t), statistics.median(peer_t), target)


def format_table(rows: list[Comparison], peer_name: str) -> str:
    """A Markdown table of the comparisons."""
    lines = [
        f"| op | structpred (ms) | {peer_name} (ms) | ratio ours/{peer_name} | target |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        target = f"<= {r.target:g} {r.verdict}" if r.target is not None else "-"
        lines.append(f"| {r.name} | {r.ours_ms:.2f} | {r.peer_ms:.2f} | {r.ratio:.2f} | {target} |")
    return "\n".join(lines)


def suite_parser(
    suite: str, doc: str | None, default_repeats: int = 5, quick_help: str = ""
) -> argparse.ArgumentParser:
    """``structpred bench SUITE``'s parser with ``--repeats`` (default ``default_repeats``, quick 1),
    ``--threads`` (2) and ``--quick``; :func:`suite_repeats` reads the first two back, checked."""
    parser = argparse.ArgumentParser(
        prog=f"structpred bench {suite}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--repeats", type=int, default=None,
        help=f"timed runs per side (median); default {default_repeats}, quick 1",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--quick", action="store_true", help=quick_help or "tiny inputs, 1 repeat: a smoke run, not figures"
    )
    parser.set_defaults(default_repeats=default_repeats)
    return parser


def suite_repeats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The run's repeats (``--repeats``, else 1 under ``--quick``, else the suite's default); a
    parser error when it or ``--threads`` is below 1."""
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else args.default_repeats)
    if repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    return int(repeats)


def bench_main(
    suite: str,
    doc: str | None,
    run: Callable[[int, int, bool], list[Comparison]],
    peer_name: str,
    default_repeats: int,
    argv: list[str] | None = None,
) -> str:
    """The CLI entry of a ratio suite: ``--repeats``, ``--threads``, ``--quick``; prints the table."""
    parser = argparse.ArgumentParser(prog=f"structpred bench {suite}", description=doc)
    parser.add_argument("--repeats", type=int, default=default_repeats, help="timed runs per side (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="tiny inputs: a smoke run, not figures")
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    try:
        rows = run(args.repeats, args.threads, args.quick)
    finally:  # suites set torch's thread count; the caller (a test, a notebook) gets its own back
        torch.set_num_threads(previous_threads)
    table = format_table(rows, peer_name)
    header = f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} alternating runs"
    if args.quick:
        header += " (QUICK: tiny inputs, not the sizes named in the rows)"
    print(header)
    print(table)
    return table
