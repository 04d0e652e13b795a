"""The segmentation benchmarks of one run: dense CRF vs pydensecrf2, Mask R-CNN vs torchvision.

``structpred bench segmentation`` (= ``python benchmarks/segmentation.py``) runs
:mod:`structpred.bench.crf` (240 x 320, 21 labels, 5 mean-field iterations) and then
:mod:`structpred.bench.mask_rcnn` (480 x 640, identical random weights) and prints both tables;
each row is a ratio ours / peer measured in the same run. ``--quick`` shrinks both to a smoke run.
"""

from __future__ import annotations

import argparse

from . import crf, mask_rcnn


def main(argv: list[str] | None = None) -> str:
    """CLI entry: both suites, their tables printed and returned."""
    parser = argparse.ArgumentParser(prog="structpred bench segmentation", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="tiny inputs: a smoke run, not figures")
    args = parser.parse_args(argv)
    common = ["--repeats", str(args.repeats), "--threads", str(args.threads)] + (
        ["--quick"] if args.quick else []
    )
    tables = [crf.main(common), mask_rcnn.main(common)]
    return "\n\n".join(tables)


if __name__ == "__main__":
    main()
