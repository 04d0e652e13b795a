"""FCN-32s vs 16s vs 8s, the paper's skip ablation, on the shapes world:
``python experiments/fcn_ablation.py``.

The three ``fcn*_narrow`` models (same 1/8-width VGG-16 trunk with batch norm, same code; only
the skips differ) are trained the same way — same seed, so the same initial trunk weights and
data order, same epochs, optimizer and learning-rate schedule — from scratch on the shapes
world's ``semantic`` label maps (7 classes with background, 255 ignored; 128 x 128), with the
engine's :class:`~structpred.engine.trainer.Trainer`. Each is then scored on the test split:
mIoU, pixel accuracy and boundary mIoU (pixels within 5 px of a true label edge, where the
finer skips should matter most), from :class:`~structpred.metrics.segmentation.MeanIoU` /
:class:`~structpred.metrics.segmentation.SegmentationMetric` on the models' logits.

The images are rendered once, before any timing (``cache=True``); "train s" is the wall time
of ``Trainer.fit`` alone, at ``--threads``. Single seeded runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from structpred.data.shapes import ShapesWorld
from structpred.engine.recipe import ablation_config
from structpred.engine.trainer import Trainer, seed_everything
from structpred.metrics.segmentation import SegmentationMetric
from structpred.models import get_model

NUM_CLASSES = 7  # background + 6 shapes


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fcn32s_narrow", "fcn16s_narrow", "fcn8s_narrow"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="K=V", help="builder override (JSON value)"
    )
    p.add_argument("--out", default="out/fcn_ablation/")
    return p.parse_args(argv)


def _model_kwargs(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@torch.no_grad()
def test_scores(model: torch.nn.Module, data: ShapesWorld, batch_size: int) -> dict[str, float]:
    """mIoU, pixel accuracy and boundary mIoU of ``model`` on every item of ``data``."""
    model.eval()
    metric = SegmentationMetric(NUM_CLASSES, "semantic", 255)
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        preds, _ = model(torch.stack([im for im, _ in items]))
        metric.update(preds, [t for _, t in items])
    m = metric.compute()
    return {
        "miou": float(m["miou"]),
        "pixel_accuracy": float(m["pixel_accuracy"]),
        "boundary_miou": float(m["boundary_miou"]),
    }


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    tic = time.perf_counter()
    train = ShapesWorld("train", num_images=args.train_images, seed=args.seed, cache=True)
    test = ShapesWorld("test", num_images=args.test_images, seed=args.seed, cache=True)
    for data in (train, test):
        for i in range(len(data)):
            data[i]  # render into the cache, outside the timed runs
    print(f"rendered {len(train)} train + {len(test)} test images in {time.perf_counter() - tic:.1f} s")
    overrides = _model_kwargs(args.model_arg)
    rows = []
    for name in args.models:
        config = ablation_config(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup,
            seed=args.seed,
            model_name=name,
            data="shapes",
        )
        seed_everything(args.seed)
        model = get_model(name, num_classes=NUM_CLASSES, **overrides)
        config.model_kwargs = {"num_classes": NUM_CLASSES, **overrides}
        params = sum(p.numel() for p in model.parameters())
        trainer = Trainer(model, train, None, config, out / name)
        start = time.perf_counter()
        trainer.fit()
        train_s = time.perf_counter() - start
        scores = test_scores(model, test, 32)
        rows.append({"model": name, "params": params, "train_s": train_s, **scores})
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(
        f"epochs {args.epochs} x {len(train)} images, batch {args.batch_size}, AdamW lr {args.lr} "
        f"(warm-up {args.warmup}, cosine), seed {args.seed}, {args.threads} thread(s); "
        f"test {len(test)} images"
    )
    print("| model | params | train s | test mIoU | pixel acc | boundary mIoU |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['train_s']:.0f} | {r['miou']:.3f} | "
            f"{r['pixel_accuracy']:.3f} | {r['boundary_miou']:.3f} |"
        )
    print(f"total wall time {time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main()
