"""The lecture's claim, measured: one-stage YOLO inference against the two-stage narrow Faster R-CNN.

``structpred bench yolo`` (or ``python benchmarks/yolo.py``): images per second at inference
of ``yolo_lite`` and ``yolo_narrow`` against ``fasterrcnn_narrow_fpn`` (and ``yolo_v1_narrow``
beside them), the
same ShapesWorld test images (128 x 128, which every model resizes to its 256 px input), in
one run, batch 1 and batch 8, ``model.eval()`` and ``torch.no_grad()``: images in, detections
in the original pixels out (resize, network, decoding, NMS, scaling back: the whole call).

The models run round-robin (each repeat times every model once, the order rotating), so the
machine's noise spreads evenly; the figures are medians, and the ratio is YOLO's images per
second over Faster R-CNN's (target: >= 3). The modern YOLOs run as a user's inference should,
through ``YOLO.fuse()`` (each conv + BatchNorm folded into one conv: the same detections);
``--no-fuse`` times the training-time module tree instead.

Weights: random by default (seed 0). The detectors' post-processing costs depend on how many
candidates pass their thresholds, so give trained checkpoints for the real figure:
``--checkpoint yolo_narrow=runs/001/best.safetensors`` (repeatable; a checkpoint of ours).

Throughput: the FLOPs of one batch-1 call counted by ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matrix products), divided by the median time, against this machine's float32
matmul peak measured in the same run (:func:`~structpred.bench.detection.matmul_peak`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .detection import count_gflop, matmul_peak

MODELS = ("yolo_lite", "yolo_narrow", "fasterrcnn_narrow_fpn", "yolo_v1_narrow")
TARGETED = ("yolo_lite", "yolo_narrow")  # the modern YOLOs the >= 3x target applies to
REFERENCE = "fasterrcnn_narrow_fpn"
TARGET = 3.0  # yolo_narrow images/s over the reference's, at least
SEED = 0


@dataclass
class Row:
    """One model at one batch size: median seconds per call, GFLOP per image."""

    model: str
    batch: int
    seconds: float
    gflop: float

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds


def _build(name: str, checkpoints: dict[str, str], fuse: bool = True) -> nn.Module:
    from ..engine import checkpoint as ckpt
    from ..models import get_model
    from ..models.yolo import YOLO

    torch.manual_seed(SEED)
    model = get_model(name, num_classes=6)
    if name in checkpoints:
        tensors, meta = ckpt.load_checkpoint(checkpoints[name])
        ckpt.restore(tensors, meta, model, rng=False)
    if fuse and isinstance(model, YOLO):
        return model.fuse()  # eval mode, conv + BN folded
    return model.eval()


def _cpu_time_matmul_peak(n: int, repeats: int) -> float:
    """:func:`~structpred.bench.detection.matmul_peak` timed by the process's CPU time (GFLOP/s)."""
    g = torch.Generator().manual_seed(SEED)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b, out=out)
        times.append(time.process_time() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def run(
    models: tuple[str, ...] = MODELS,
    batches: tuple[int, ...] = (1, 8),
    repeats: int = 15,
    threads: int = 2,
    checkpoints: dict[str, str] | None = None,
    quick: bool = False,
    fuse: bool = True,
    cpu_time: bool = False,
) -> tuple[list[Row], float]:
    """Rows for every model and batch size, and the matmul peak (GFLOP/s) of the same run.

    ``cpu_time``: time each call by this process's CPU time (``time.process_time``) instead of
    the wall clock: with one thread, the time the call computed, which other processes sharing
    the machine do not inflate (with several threads it adds their times, spinning included)."""
    from ..data import ShapesWorld
    from ..models import list_models

    torch.set_num_threads(threads)
    models = tuple(m for m in models if m in list_models())  # yolo_v1_narrow may be absent
    world = ShapesWorld("test", size=128, num_images=max(batches))
    images = [world[i][0] for i in range(max(batches))]
    built = {name: _build(name, checkpoints or {}, fuse) for name in models}
    if cpu_time:  # the peak by the same clock as the models
        peak = _cpu_time_matmul_peak(1024 if quick else 2048, 3 if quick else 10)
    else:
        peak = matmul_peak(1024, 3) if quick else matmul_peak()
    rows = []
    for batch in batches:
        inputs = images[:batch]
        calls: dict[str, Callable[[], object]] = {}
        for name, model in built.items():

            def call(model: nn.Module = model, inputs: list[Tensor] = inputs) -> object:
                with torch.no_grad():
                    return model(inputs)

            calls[name] = call
            call()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in calls}
        clock = time.process_time if cpu_time else time.perf_counter
        for r in range(repeats):
            order = list(calls)[r % len(calls) :] + list(calls)[: r % len(calls)]
            for name in order:
                start = clock()
                calls[name]()
                times[name].append(clock() - start)
        for name in calls:
            gflop = count_gflop(calls[name]) / batch
            rows.append(Row(name, batch, statistics.median(times[name]), gflop))
    return rows, peak


def format_rows(rows: list[Row], peak: float) -> str:
    """A Markdown table: images/s, ratio to the reference, GFLOP per image, GFLOP/s, % of peak."""
    ref = {r.batch: r.images_per_s for r in rows if r.model == REFERENCE}
    lines = [
        f"| model | batch | images/s | x {REFERENCE} | GFLOP / image | GFLOP/s | % of matmul peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.images_per_s / ref[r.batch] if r.batch in ref else float("nan")
        gflops = r.gflop * r.images_per_s
        lines.append(
            f"| {r.model} | {r.batch} | {r.images_per_s:.1f} | {ratio:.2f} | {r.gflop:.3f} "
            f"| {gflops:.1f} | {100 * gflops / peak:.1f} |"
        )
    verdicts = []
    for r in rows:
        if r.model in TARGETED and r.batch in ref:
            ratio = r.images_per_s / ref[r.batch]
            verdict = "met" if ratio >= TARGET else "MISSED"
            verdicts.append(f"{r.model} batch {r.batch}: {ratio:.2f}x ({verdict})")
    lines.append("")
    lines.append(f"YOLO / {REFERENCE} images per second (target >= {TARGET:g}x): " + "; ".join(verdicts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the table."""
    parser = argparse.ArgumentParser(
        prog="structpred bench yolo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per model (median); default 15"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})"
    )
    parser.add_argument(
        "--checkpoint", action="append", default=[], metavar="MODEL=FILE", help="trained weights (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats, batch 1: a smoke run, not figures")
    parser.add_argument(
        "--no-fuse", action="store_true", help="time the YOLOs unfused (conv, BN, SiLU as trained)"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time, not the wall clock (a shared machine; use --threads 1)",
    )
    args = parser.parse_args(argv)
    checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or not path:
            parser.error(f"--checkpoint must be MODEL=FILE, got {item!r}")
        checkpoints[name] = path
    try:
        batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 15)
    if args.quick:
        batches = (1,)
    if repeats < 1 or args.threads < 1 or not batches or min(batches) < 1:
        parser.error("--repeats, --threads and --batches must be >= 1")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    rows, peak = run(
        models, batches, repeats, args.threads, checkpoints, args.quick, not args.no_fuse, args.cpu_time
    )
    weights = ", ".join(f"{k}: {v}" for k, v in checkpoints.items()) or "random (seed 0)"
    header = (
        f"torch {torch.__version__}, {args.threads} threads, median of {repeats} round-robin calls, "
        f"ShapesWorld test images 128 x 128 (each model resizes to 256), weights: {weights}, "
        f"YOLOs {'unfused' if args.no_fuse else 'fused (YOLO.fuse())'}, "
        f"clock: {'CPU time of the process' if args.cpu_time else 'wall'}\n"
        f"matmul peak: float32 torch.mm, {args.threads} threads, same clock: {peak:.1f} GFLOP/s"
    )
    text = header + "\n\n" + format_rows(rows, peak)
    print(text)
    return text
