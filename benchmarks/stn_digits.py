"""Spatial Transformer vs the plain CNN on distorted real digits: ``python benchmarks/stn_digits.py``.

Both models (``cnn_digits``, ``stn_digits``; about the same number of parameters) train with
the same engine and budget (epochs, batch size, optimizer, learning rate, schedule, seed) on
:class:`~structpred.data.distorted.DistortedDigits` (rotation +-45 deg, scale 0.7-1.2, shift
+-15%), are evaluated on the fixed distorted val and test splits, and the script prints a
Markdown table (val / test accuracy, wall time, parameters). It also draws, for test digits,
the inputs (top row) and what the trained transformer makes of them (below) to
``--out/stn_rectified.png``.

Accuracy is a single seeded run on 297 test digits (one digit = 0.34 points); wall time is
measured on this machine in this run, so only the ratio between the rows means anything.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

import structpred.models.stn  # noqa: F401  (registers stn_digits and cnn_digits)
from structpred.data.distorted import DistortedDigits
from structpred.engine import TrainConfig
from structpred.engine.trainer import Trainer, seed_everything
from structpred.metrics.classification import Accuracy
from structpred.models import get_model
from structpred.models.stn import STNClassifier


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=4, help="distorted copies of each training digit")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="adamw")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    p.add_argument("--transform", default="affine", help="stn_digits: affine, similarity, translation_scale")
    p.add_argument(
        "--loc-grad-scale", type=float, default=1.0, help="stn_digits: localisation gradient factor"
    )
    p.add_argument("--models", nargs="+", default=["cnn_digits", "stn_digits"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--pictures", type=int, default=10, help="test digits in the picture grid")
    p.add_argument("--out", default="out/stn/")
    return p.parse_args(argv)


def _model_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name.startswith("stn"):
        return {"transform": args.transform, "loc_grad_scale": args.loc_grad_scale}
    return {}


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, STNClassifier]]:
    """Train every model of ``args.models``; one result row per model and the trained models."""
    train = DistortedDigits("train", repeats=args.repeats, seed=args.seed)
    val, test = DistortedDigits("val", seed=args.seed), DistortedDigits("test", seed=args.seed)
    rows, models = [], {}
    for name in args.models:
        seed_everything(args.seed)  # same initial RNG state for every model
        model = get_model(name, **_model_kwargs(name, args))
        assert isinstance(model, STNClassifier)
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            schedule=args.schedule,
            seed=args.seed,
            progress=False,
            log_every=1000,
            keep_last=1,
            device="cpu",
            model_name=name,
        )
        trainer = Trainer(model, train, val, config, Path(args.out) / name, metric=lambda: Accuracy(10))
        tic = time.perf_counter()
        val_metrics = trainer.fit()
        seconds = time.perf_counter() - tic
        test_metrics = trainer.evaluate(test)
        rows.append(
            {
                "model": name,
                "val": float(val_metrics["accuracy"]),
                "test": float(test_metrics["accuracy"]),
                "test_loss": float(test_metrics["loss_cls"]),
                "seconds": seconds,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
        models[name] = model.eval()
        print(f"{name}: val {rows[-1]['val']:.3f}, test {rows[-1]['test']:.3f}, {seconds:.0f} s", flush=True)
    return rows, models


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The results as a Markdown table (time relative to the first row as well)."""
    lines = [
        f"distorted digits (train {args.repeats} x 1200, val 300, test 297); {args.epochs} epochs, batch "
        f"{args.batch_size}, {args.optimizer} lr {args.lr} {args.schedule}, seed {args.seed}, "
        f"{args.threads} thread(s); stn: {args.transform}, loc grad scale {args.loc_grad_scale}",
        "",
        "| model | val acc | test acc | test loss | train time (s) | time vs first | params |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    first = rows[0]["seconds"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['val']:.3f} | {r['test']:.3f} | {r['test_loss']:.3f} | {r['seconds']:.0f} "
            f"| {r['seconds'] / first:.2f}x | {r['params']:,} |"
        )
    return "\n".join(lines)


def picture_grid(models: dict[str, STNClassifier], n: int, path: Path, seed: int) -> None:
    """Test inputs (top row) and each transformer's rectified output (one row per STN model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = DistortedDigits("test", seed=seed)
    items = [test[i] for i in torch.linspace(0, len(test) - 1, n).long().tolist()]
    images = [im for im, _ in items]
    rows: list[tuple[str, torch.Tensor, list[int]]] = [("input", torch.stack(images), [])]
    for name, model in models.items():
        if model.rectifier is None:
            continue
        rectified, _ = model.rectify(images)  # (n, 3, S, S)
        with torch.no_grad():
            preds, _ = model(images)
        rows.append((name, rectified, [int(p["labels"]) for p in preds]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.35 * len(rows)), squeeze=False)
    for r, (title, batch, labels) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(batch[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            truth = int(items[c][1]["labels"])
            ax.set_title(f"{truth}" if r == 0 else f"pred {labels[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    tic = time.perf_counter()
    rows, models = run(args)
    text = table(rows, args)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    picture_grid(models, args.pictures, out / "stn_rectified.png", args.seed)
    print(f"\npictures: {out / 'stn_rectified.png'}; total {time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main()
