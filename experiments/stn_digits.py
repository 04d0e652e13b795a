"""Spatial Transformer vs the plain CNN on RTS digits, over seeds: ``python experiments/stn_digits.py``.

The data is the "RTS" setting of Jaderberg et al. 2015, §4.1, on scikit-learn's real digits
(:class:`~structpred.data.distorted.DistortedDigits`): each digit is upsampled to
``--digit-size`` pixels (28), rotated by up to +-45 deg, scaled by 0.7-1.2 and placed at a
random position in a canvas 1.5 times its side (``--size`` 42, as MNIST 28 in 42 in the
paper). The shift is uniform in +-(size - digit_size) / 2 pixels per axis, i.e. the
undistorted digit box goes anywhere it fits inside the canvas.

Both models (``cnn_digits``, ``stn_digits``; about the same number of parameters, both at
``input_size`` = the canvas side) train with the same engine and budget (epochs, batch size,
optimizer, learning rate, schedule) once per seed of ``--seeds``. A seed sets the model's
initialisation and the training order; the distorted data (train, val and test) is fixed by
``--data-seed``, so every run is evaluated on the same 297 test digits. The script prints a
Markdown table: per seed val / test accuracy of each model, mean +- std (sample std over
seeds), the paired difference of each model against the first one (STN - CNN) with its
paired t statistic, and how much rotation and scale variation is left in what each CNN sees
on the test digits (:func:`pose_spread`). It also draws, for test digits, the inputs (top
row) and what the first seed's trained transformer makes of them (below) to
``--out/stn_rectified.png``.

The defaults (AdamW 1e-3 with a 300-step warm-up, 8 epochs, seeds 0-4) keep the transformer
alive: at AdamW 2e-3 without warm-up, Adam's normalised first steps can push the sampling grid
off the canvas before the classifier has learnt anything; the warped image is then black, the
localisation net gets no gradient and the STN stays at chance (one seed of three did).

Wall times are measured on this machine in this run; only their ratios mean anything.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import structpred.models.stn  # noqa: F401  (registers stn_digits and cnn_digits)
from structpred.data.digits import SOURCE_SPLITS
from structpred.data.distorted import DistortedDigits
from structpred.engine import TrainConfig
from structpred.engine.trainer import Trainer, seed_everything
from structpred.metrics.classification import Accuracy
from structpred.models import get_model
from structpred.models.stn import STNClassifier


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=4, help="distorted copies of each training digit")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="adamw")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    p.add_argument("--warmup-steps", type=int, default=300, help="linear lr warm-up (optimizer steps)")
    p.add_argument("--transform", default="affine", help="stn_digits: affine, similarity, translation_scale")
    p.add_argument(
        "--loc-grad-scale",
        type=float,
        default=1.0,
        help="stn_digits: localisation gradient factor (its lr factor with sgd; no effect with adamw)",
    )
    p.add_argument("--models", nargs="+", default=["cnn_digits", "stn_digits"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="model init and data order")
    p.add_argument("--data-seed", type=int, default=0, help="the distortions of train, val and test")
    p.add_argument("--size", type=int, default=42, help="canvas side S (pixels) and the models' input size")
    p.add_argument("--digit-size", type=int, default=28, help="side of the undistorted digit (pixels)")
    p.add_argument("--rotation", type=float, default=45.0, help="maximum absolute angle (degrees)")
    p.add_argument("--scale", type=float, nargs=2, default=[0.7, 1.2], help="min and max scale")
    p.add_argument(
        "--translation",
        type=float,
        default=None,
        help="maximum shift per axis in canvas sides (default: (size - digit_size) / (2 size))",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--pictures", type=int, default=10, help="test digits in the picture grid")
    p.add_argument("--out", default="out/stn/")
    args = p.parse_args(argv)
    if args.translation is None:
        args.translation = (args.size - args.digit_size) / (2 * args.size)
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct, got {args.seeds}")
    return args


def _data(split: str, args: argparse.Namespace, repeats: int = 1) -> DistortedDigits:
    return DistortedDigits(
        split,
        size=args.size,
        digit_size=args.digit_size,
        rotation=args.rotation,
        scale=tuple(args.scale),
        translation=args.translation,
        repeats=repeats,
        seed=args.data_seed,
    )


def _model_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"input_size": args.size}  # no resizing: the models see the canvas
    if name.startswith("stn"):
        kwargs.update(transform=args.transform, loc_grad_scale=args.loc_grad_scale)
    return kwargs


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, STNClassifier]]:
    """Train every model of ``args.models`` once per seed: one row per (seed, model), first seed's models."""
    train = _data("train", args, repeats=args.repeats)
    val, test = _data("val", args), _data("test", args)
    rows: list[dict[str, Any]] = []
    first: dict[str, STNClassifier] = {}
    for seed in args.seeds:
        for name in args.models:
            seed_everything(seed)  # same initial RNG state for every model of this seed
            model = get_model(name, **_model_kwargs(name, args))
            assert isinstance(model, STNClassifier)
            config = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                optimizer=args.optimizer,
                schedule=args.schedule,
                warmup_steps=args.warmup_steps,
                seed=seed,  # the training order
                progress=False,
                log_every=1000,
                keep_last=1,
                device="cpu",
                model_name=name,
            )
            out = Path(args.out) / f"{name}_seed{seed}"
            trainer = Trainer(model, train, val, config, out, metric=lambda: Accuracy(10))
            tic = time.perf_counter()
            val_metrics = trainer.fit()
            seconds = time.perf_counter() - tic
            test_metrics = trainer.evaluate(test)
            rows.append(
                {
                    "seed": seed,
                    "model": name,
                    "val": float(val_metrics["accuracy"]),
                    "test": float(test_metrics["accuracy"]),
                    "test_loss": float(test_metrics["loss_cls"]),
                    "seconds": seconds,
                    "params": sum(p.numel() for p in model.parameters()),
                    **pose_spread(model.eval(), test),
                }
            )
            if seed == args.seeds[0]:
                first[name] = model.eval()
            r = rows[-1]
            msg = f"seed {seed} {name}: val {r['val']:.3f}, test {r['test']:.3f}, {seconds:.0f} s"
            print(msg, flush=True)
    return rows, first


def _polar(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Angle (degrees), scale sqrt|det| and stretch s1 / s2 of each linear map ``A [N, 2, 2]``.

    Polar decomposition ``A = R P``: ``R = U V^T`` from the SVD ``A = U diag(s) V^T``.
    """
    U, s, Vh = torch.linalg.svd(A)  # (N, 2, 2), (N, 2), (N, 2, 2)
    R = U @ Vh
    angle = torch.rad2deg(torch.atan2(R[:, 1, 0], R[:, 0, 0]))  # (N,)
    return angle, s.prod(-1).sqrt(), s[:, 0] / s[:, 1]


def _circular_std(angle_deg: torch.Tensor) -> float:
    """Circular standard deviation (degrees) of angles; +-180 deg wrap around."""
    a = torch.deg2rad(angle_deg)
    r = float(torch.hypot(a.cos().mean(), a.sin().mean()))
    return math.degrees(math.sqrt(-2.0 * math.log(max(r, 1e-12))))


@torch.no_grad()
def pose_spread(model: STNClassifier, data: DistortedDigits) -> dict[str, float]:
    """How much pose variation is left in what the CNN sees, over the items of ``data``.

    The input samples the centred digit through the distortion's ``theta_d`` and the
    transformer samples the input through its ``theta_t``, so the CNN sees the centred digit
    through the linear map ``A_d A_t``. Returned: the circular std of that map's rotation
    (degrees; the input's own when there is no transformer, ~27 for +-45), the std of its scale,
    and its mean stretch (1 for a similarity; > 1 for shear or anisotropic scaling).
    """
    images = torch.stack([data[i][0] for i in range(len(data))])  # (N, 3, S, S)
    _, theta = model.rectify(images)  # (N, 2, 3): identity without a transformer
    seen = data.thetas[:, :, :2].double() @ theta[:, :, :2].double()  # (N, 2, 2)
    angle, scale, stretch = _polar(seen)
    return {
        "angle_spread": _circular_std(angle),
        "scale_spread": float(scale.std()),
        "stretch": float(stretch.mean()),
    }


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def _paired_t(diffs: list[float]) -> str:
    """Paired t statistic of the differences (mean / standard error), '-' when undefined."""
    if len(diffs) < 2:
        return "-"
    std = statistics.stdev(diffs)
    if std == 0.0:
        return "-"
    return f"{statistics.mean(diffs) / (std / math.sqrt(len(diffs))):.2f}"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Per-seed rows, mean ± std per model and the seed-paired differences to the first model."""
    n = {split: hi - lo for split, (lo, hi) in SOURCE_SPLITS.items()}  # source digits per split
    lines = [
        f"RTS digits: {args.digit_size}-px digits in a {args.size}-px canvas, rotation ±{args.rotation:g}°, "
        f"scale {args.scale[0]:g}-{args.scale[1]:g}, shift ±{args.translation:.3f} sides, data seed "
        f"{args.data_seed} (train {args.repeats} x {n['train']}, val {n['val']}, test {n['test']}); "
        f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr} {args.schedule}, "
        f"warm-up {args.warmup_steps} steps, {args.threads} thread(s); stn: {args.transform}, "
        f"loc grad scale {args.loc_grad_scale}; seeds {' '.join(map(str, args.seeds))}",
        "",
        "| seed | model | val acc | test acc | test loss | rotation spread (°) | scale spread | stretch "
        "| train time (s) | params |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['model']} | {r['val']:.3f} | {r['test']:.3f} | {r['test_loss']:.3f} "
            f"| {r['angle_spread']:.1f} | {r['scale_spread']:.2f} | {r['stretch']:.2f} "
            f"| {r['seconds']:.0f} | {r['params']:,} |"
        )
    by_model = {name: [r for r in rows if r["model"] == name] for name in args.models}
    for name, rs in by_model.items():
        val, test = _mean_std([r["val"] for r in rs]), _mean_std([r["test"] for r in rs])
        pose = " | ".join(
            f"{statistics.mean(r[k] for r in rs):.{d}f}"
            for k, d in (("angle_spread", 1), ("scale_spread", 2), ("stretch", 2))
        )
        lines.append(
            f"| mean ± std | {name} | {val} | {test} | {_mean_std([r['test_loss'] for r in rs])} | {pose} "
            f"| {statistics.mean(r['seconds'] for r in rs):.0f} | {rs[0]['params']:,} |"
        )
    base = args.models[0]
    for name in args.models[1:]:
        # Rows of both models come in seed order, so zip pairs them by seed.
        pairs = list(zip(by_model[name], by_model[base], strict=True))
        dval = [a["val"] - b["val"] for a, b in pairs]
        dtest = [a["test"] - b["test"] for a, b in pairs]
        wins = sum(d > 0 for d in dtest)
        lines.append(
            f"| paired diff (t: {_paired_t(dval)} val, {_paired_t(dtest)} test; test wins "
            f"{wins}/{len(dtest)}) | {name} − {base} | {_mean_std(dval)} | {_mean_std(dtest)} | | | | | | |"
        )
    return "\n".join(lines)


def picture_grid(models: dict[str, STNClassifier], n: int, path: Path, args: argparse.Namespace) -> None:
    """Test inputs (top row) and each transformer's rectified output (one row per STN model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = _data("test", args)
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
    picture_grid(models, args.pictures, out / "stn_rectified.png", args)
    print(f"\npictures: {out / 'stn_rectified.png'}; total {time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main()
