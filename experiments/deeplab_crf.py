"""DeepLab with and without the fully-connected CRF, on the shapes world and on nuclei:
``OMP_NUM_THREADS=1 python experiments/deeplab_crf.py [--skip-shapes | --skip-nuclei] [--out DIR]``.

``deeplab_narrow`` (dilated NarrowNet, output stride 8, ASPP, bilinear upsampling) is trained
once per data set with the engine (:func:`structpred.engine.run.train`; AdamW, warm-up, cosine,
seeded) on (a) ``shapes`` ``semantic`` label maps (7 classes with background, 255 ignored,
128 x 128; the spec's 2000 train / 200 val / 500 test images) and (b) ``nuclei`` (2 classes;
training on 128 x 128 crops of the top half at ``--stride`` px, evaluation on the whole
256 x 256 val / test quadrants, one image each). The SAME weights are then scored without and
with the CRF, by toggling ``model.config.crf`` and its ``crf_*`` fields: the network runs once
per batch and :meth:`AtrousSegmenter.refine` (what eval-mode ``forward`` applies with
``crf=True``; checked on the first batch) turns its logits into log CRF marginals.

CRF parameters: DeepLab's defaults (bilateral sxy 80, srgb 13, compat 10; Gaussian sxy 3,
compat 3) were set on ~500 px PASCAL images. A small grid of (bilateral sxy, srgb, compat) on
the val split only picks one setting by val mIoU; the test split is scored for no CRF, the
default and the val-chosen setting. Metrics: :class:`~structpred.metrics.SegmentationMetric`
(mIoU, boundary mIoU = mIoU within 5 px of a true label edge, pixel accuracy).

"train s" is the wall time of ``run.train`` (it renders / caches the shapes training images in
epoch 1 and validates once at the end). Single seeded runs; timings are this machine's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from structpred.data.registry import build_dataset
from structpred.engine.recipe import ablation_config
from structpred.engine.run import train
from structpred.metrics.segmentation import SegmentationMetric
from structpred.models.deeplab import AtrousSegmenter

Setting = tuple[float, float, float]  # (crf_sxy_bilateral, crf_srgb_bilateral, crf_compat_bilateral)
DEFAULT_CRF: Setting = (80.0, 13.0, 10.0)
GRID: list[Setting] = [  # DeepLab's default first; smaller spatial ranges, then a weaker pairwise weight
    (80.0, 13.0, 10.0),
    (40.0, 13.0, 10.0),
    (20.0, 13.0, 10.0),
    (10.0, 13.0, 10.0),
    (20.0, 13.0, 5.0),
    (10.0, 13.0, 5.0),
]
METRICS = ("miou", "boundary_miou", "pixel_accuracy")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs-shapes", type=int, default=8)
    p.add_argument("--epochs-nuclei", type=int, default=100)
    p.add_argument("--skip-shapes", action="store_true")
    p.add_argument("--skip-nuclei", action="store_true")
    p.add_argument("--shapes-images", type=int, default=None, help="images per shapes split (pilots)")
    p.add_argument("--stride", type=int, default=32, help="px between nuclei training crops (32: 65)")
    p.add_argument("--grid", nargs="+", default=None, metavar="SXY,SRGB,W", help="val grid of CRF settings")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/deeplab_crf/")
    return p.parse_args(argv)


def _set_crf(model: AtrousSegmenter, setting: Setting | None) -> None:
    """Switch the model's CRF off (``None``) or on with ``setting``'s bilateral parameters."""
    model.config.crf = setting is not None
    if setting is not None:
        c = model.config
        c.crf_sxy_bilateral, c.crf_srgb_bilateral, c.crf_compat_bilateral = (float(v) for v in setting)


@torch.no_grad()
def score(
    model: AtrousSegmenter, data: Dataset, settings: list[Setting | None], batch_size: int
) -> list[dict[str, float]]:
    """Metrics of ``model`` on every item of ``data``, once per CRF setting (``None``: no CRF).

    Each row also has ``crf_ms``: milliseconds of CRF per image (0 without it).
    """
    model.eval()
    c = model.config
    metrics = [SegmentationMetric(c.num_classes, c.target_key, c.ignore_index) for _ in settings]
    crf_s = [0.0] * len(settings)
    n = len(data)  # type: ignore[arg-type]
    check = next((j for j, s in enumerate(settings) if s is not None), -1)  # one check, first batch
    for start in range(0, n, batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, n))]
        images = torch.stack([im for im, _ in items])  # (B, 3, H, W) in [0, 1]
        targets = [t for _, t in items]
        _set_crf(model, None)
        logits = model(images)[0]["logits"]  # (B, K, H, W), the network's own
        for j, setting in enumerate(settings):
            _set_crf(model, setting)
            tic = time.perf_counter()
            out = model.refine(logits, images)  # identity without the CRF
            crf_s[j] += time.perf_counter() - tic
            if start == 0 and j == check:
                full = model(images)[0]["label_map"]  # the toggled model's own eval path
                assert torch.equal(full, out.argmax(1)), "refine() differs from forward(crf=True)"
            metrics[j].update({"label_map": out.argmax(1)}, targets)  # (B, K, H, W) -> (B, H, W)
    _set_crf(model, None)
    rows = []
    for m, s in zip(metrics, crf_s, strict=True):
        r = m.compute()
        rows.append({**{k: float(r[k]) for k in METRICS}, "crf_ms": 1000 * s / n})
    return rows


def _label(setting: Setting | None) -> str:
    return "none" if setting is None else "sxy {:g}, srgb {:g}, w {:g}".format(*setting)


def run(name: str, args: argparse.Namespace, grid: list[Setting]) -> dict[str, Any]:
    """Train on the ``name`` spec, then the val grid and the test comparison."""
    if name == "shapes":
        epochs = args.epochs_shapes
        limit = {} if args.shapes_images is None else {"num_images": args.shapes_images}
        train_kw, eval_kw = dict(limit), dict(limit)
    else:
        epochs, train_kw, eval_kw = args.epochs_nuclei, {"stride": args.stride}, {"crop": 256}
    config = ablation_config(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        seed=args.seed,
        eval_every=max(1, epochs // 5),  # a few val points in log.csv (final weights are scored)
    )
    tic = time.perf_counter()
    trainer, engine_val = train(
        "deeplab_narrow", name, config, Path(args.out) / name, model_kwargs={}, data_kwargs=train_kw
    )
    train_s = time.perf_counter() - tic
    model = trainer.model
    assert isinstance(model, AtrousSegmenter)
    steps = trainer.step
    val_miou = float(engine_val.get("miou", float("nan")))
    logging.info(
        "%s: %d steps in %.0f s (%.2f steps/s); engine val mIoU %.3f",
        name,
        steps,
        train_s,
        steps / train_s,
        val_miou,
    )
    val = build_dataset(name, "val", **eval_kw)
    tic = time.perf_counter()
    val_rows = score(model, val, [None, *grid], args.batch_size)
    best = max(range(len(grid)), key=lambda j: val_rows[j + 1]["miou"])
    chosen = grid[best]
    logging.info("%s: val grid in %.0f s; chosen %s", name, time.perf_counter() - tic, _label(chosen))
    test = build_dataset(name, "test", **eval_kw)
    test_settings: list[Setting | None] = [None, DEFAULT_CRF] + ([chosen] if chosen != DEFAULT_CRF else [])
    test_rows = score(model, test, test_settings, args.batch_size)
    return {
        "data": name,
        "epochs": epochs,
        "steps": steps,
        "train_items": len(trainer.train_data),  # type: ignore[arg-type]
        "val_items": len(val),  # type: ignore[arg-type]
        "test_items": len(test),  # type: ignore[arg-type]
        "train_s": train_s,
        "val": [{"crf": _label(s), **r} for s, r in zip([None, *grid], val_rows, strict=True)],
        "chosen": chosen,
        "test": [
            {"crf": role, "setting": _label(s), **r}
            for role, s, r in zip(["no CRF", "default", "val-chosen"], test_settings, test_rows, strict=False)
        ],
    }


def _tables(result: dict[str, Any]) -> str:
    r = result
    lines = [
        f"\n{r['data']}: {r['epochs']} epochs ({r['steps']} steps, {r['train_items']} train items), "
        f"train {r['train_s']:.0f} s; val {r['val_items']} / test {r['test_items']} items",
        "\n| data | CRF | setting (bilateral) | mIoU | boundary mIoU | pixel acc | CRF ms/img |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in r["test"]:
        lines.append(
            f"| {r['data']} test | {row['crf']} | {row['setting']} | {row['miou']:.3f} "
            f"| {row['boundary_miou']:.3f} | {row['pixel_accuracy']:.3f} | {row['crf_ms']:.0f} |"
        )
    lines += ["\n| val grid | mIoU | boundary mIoU | pixel acc |", "|---|---:|---:|---:|"]
    for row in r["val"]:
        lines.append(
            f"| {row['crf']} | {row['miou']:.3f} | {row['boundary_miou']:.3f} | {row['pixel_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    grid = GRID if args.grid is None else [tuple(float(v) for v in s.split(",")) for s in args.grid]
    if len(grid) > 6 or any(len(s) != 3 for s in grid):
        raise ValueError(f"--grid takes 1..6 settings SXY,SRGB,W; got {args.grid}")
    start = time.perf_counter()
    for name in [n for n, skip in (("shapes", args.skip_shapes), ("nuclei", args.skip_nuclei)) if not skip]:
        result = run(name, args, grid)  # type: ignore[arg-type]
        result["args"] = vars(args)
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=2))
        print(_tables(result), flush=True)
    print(f"\ntotal wall time {(time.perf_counter() - start) / 60:.1f} min at 1 thread")


if __name__ == "__main__":
    main()
