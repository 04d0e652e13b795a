"""Proposals benchmark: Selective Search recall against the number of proposals, one run.

Recall = the fraction of ground-truth boxes that some proposal among the top n overlaps
with IoU >= t, for t in {0.5, 0.7} and n in {10, 50, 100, 200, 500, 1000, 2000}, on
``ShapesWorld("val", size=128, num_images=50)`` (synthetic, 128 x 128) and
``DeepForestTrees("val")`` (6 aerial tiles of 400 x 400, tree crowns). Prints a Markdown
table and the time per image, and writes both curves to a PNG (``--out``).

There is no peer to time against here (OpenCV's ximgproc Selective Search is in
opencv-contrib, which is not a dependency), so this reports recall and seconds per image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data import DeepForestTrees, ShapesWorld
from ..proposals import proposal_recall, selective_search

COUNTS = (10, 50, 100, 200, 500, 1000, 2000)
THRESHOLDS = (0.5, 0.7)


@dataclass
class RecallRun:
    """Recall curves and timing of one data set."""

    name: str
    recall: dict[float, torch.Tensor]  # threshold -> [len(COUNTS)]
    seconds: list[float]  # wall clock per image
    cpu_seconds: list[float]  # this process's CPU time per image (robust to a busy machine)
    num_proposals: list[int]  # per image
    num_gt: int


def evaluate(
    name: str,
    dataset: Dataset,
    limit: int | None = None,
    mode: str = "fast",
    max_proposals: int = max(COUNTS),
    seed: int = 0,
) -> RecallRun:
    """Run Selective Search on the first ``limit`` items of ``dataset`` and measure recall."""
    n = len(dataset) if limit is None else min(limit, len(dataset))  # type: ignore[arg-type]
    proposals, gts, seconds, cpu = [], [], [], []
    for i in range(n):
        image, target = dataset[i]
        start, start_cpu = time.perf_counter(), time.process_time()
        proposals.append(selective_search(image, mode=mode, max_proposals=max_proposals, seed=seed))
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        gts.append(target["boxes"])
    recall = proposal_recall(proposals, gts, COUNTS, THRESHOLDS)
    return RecallRun(name, recall, seconds, cpu, [len(p) for p in proposals], sum(len(g) for g in gts))


def format_tables(runs: Sequence[RecallRun]) -> str:
    """Markdown: recall per count (rows) and data set x IoU (columns), then timing per data set."""
    header = "| proposals | " + " | ".join(f"{r.name} IoU {t}" for r in runs for t in THRESHOLDS) + " |"
    lines = [header, "|" + "---|" * (1 + len(runs) * len(THRESHOLDS))]
    for k, n in enumerate(COUNTS):
        cells = [f"{r.recall[t][k].item():.3f}" for r in runs for t in THRESHOLDS]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "| data | images | gt boxes | proposals / image | wall s / image | CPU s / image |"]
    lines.append("|---|---|---|---|---|---|")
    for r in runs:
        lines.append(
            f"| {r.name} | {len(r.seconds)} | {r.num_gt} | {statistics.mean(r.num_proposals):.0f} | "
            f"{statistics.median(r.seconds):.3f} | {statistics.median(r.cpu_seconds):.3f} |"
        )
    return "\n".join(lines)


def plot_recall(runs: Sequence[RecallRun], path: str | Path, title: str) -> Path:
    """Recall against the number of proposals (log x), one panel per data set, one line per IoU."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {str(out)!r}")
    fig = Figure(figsize=(5.0 * len(runs), 4.0), dpi=100)
    for p, run in enumerate(runs):
        ax = fig.add_subplot(1, len(runs), p + 1)
        for t in THRESHOLDS:
            ax.plot(COUNTS, run.recall[t].tolist(), marker="o", label=f"IoU {t}")
        ax.set_xscale("log")
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("number of proposals")
        ax.set_ylabel("recall")
        ax.set_title(f"{run.name} ({run.num_gt} boxes)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(out))
    return out


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown tables; write the PNG."""
    parser = argparse.ArgumentParser(prog="structpred bench proposals", description=__doc__)
    parser.add_argument("--out", default="proposal_recall.png", help="PNG of the recall curves")
    parser.add_argument("--mode", default="fast", choices=["single", "fast", "quality"])
    parser.add_argument("--shapes-images", type=int, default=50, help="shapes-world val images")
    parser.add_argument("--seed", type=int, default=0, help="ranking seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="10 shapes images, 2 tree tiles: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = ShapesWorld("val", size=128, num_images=10 if args.quick else args.shapes_images)
    trees = DeepForestTrees("val")
    runs = [
        evaluate("shapes", shapes, mode=args.mode, seed=args.seed),
        evaluate("trees", trees, limit=2 if args.quick else None, mode=args.mode, seed=args.seed),
    ]
    table = format_tables(runs) + "\n\n(proposals: mean; seconds: median over images)"
    header = f"Selective Search ({args.mode} mode, seed {args.seed}), recall vs number of proposals"
    if args.quick:
        header += " (QUICK: subsets, not the figures)"
    out = plot_recall(runs, args.out, header)
    print(header)
    print(table)
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    main()
