"""U-Net (``unet_narrow``) on real nuclei, with and without the paper's boundary weights, and on
shapes-world parts: ``python experiments/unet.py``.

Nuclei (:class:`~structpred.data.nuclei.Nuclei`, the 512 x 512 DSB 2018 image shipped with
stardist): training on 128 x 128 crops of the top half at stride ``--stride`` (32: 65
overlapping crops) with random flips / 90-degree rotations; evaluation on the whole 256 x 256
val and test quadrants (one image each: 40 and 28 nuclei). Variants of the loss, same
everything else (seed, data order, budget):

* ``wc``: class-balanced cross-entropy (``w_c`` only);
* ``wc+sep``: + the paper's separation borders (touching nuclei's contact pixels -> background);
* ``paper``: + the border weights ``w0 exp(-(d1 + d2)^2 / 2 sigma^2)`` (w0 = 10, sigma = 5);
* ``ce``: plain cross-entropy (not run by default).

``wc+sep`` vs ``paper`` is "without / with the boundary weights" on the same labels.
``--padding valid`` trains the paper's unpadded network instead: each 128 x 128 crop is
mirrored out to the valid input side (overlap-tile) and the output covers the crop exactly. Figures:
pixel mIoU (2 classes) against the original label map; instances = 4-connected components of
the predicted foreground (>= 16 px) matched one-to-one to true nuclei at IoU >= 0.5: recall
(matched true nuclei), precision (matched components); "touching separated": of the true pairs
sharing a pixel edge (or within 2 px), how many have both nuclei matched (so separately
found). "oracle" is the same instance score for the true label map's own components: what a
perfect semantic map without gaps would give.

Shapes parts (:class:`~structpred.data.shapes.ShapesWorld`, target ``parts``: 13 classes with
background, 255 ignored): plain cross-entropy (``--shapes-loss wc``: fixed ``w_c`` from the
training set's class frequencies; per-image ``w_c`` explodes on parts of a few pixels; no
border term: not the touching-cells problem it targets), batch 4, AdamW 3e-3 (picked from three
pilots by val mIoU: ce / batch 8 / 2e-3 0.143, wc / 8 / 2e-3 0.134, ce / 4 / 3e-3 0.221); val /
test mIoU and boundary mIoU by the engine's
:class:`~structpred.metrics.segmentation.SegmentationMetric`.

Single seeded runs on tiny evaluation sets (one nucleus of the test quadrant = 3.6 recall
points); wall times are this machine's, in this run, at ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import structpred.models.unet  # noqa: F401  (registers unet_narrow)
from structpred.data.nuclei import Nuclei
from structpred.data.shapes import ShapesWorld
from structpred.engine import TrainConfig
from structpred.engine.recipe import ablation_config
from structpred.engine.trainer import Trainer, seed_everything
from structpred.metrics.segmentation import MeanIoU, SegmentationMetric
from structpred.models import get_model
from structpred.models.unet import UNetSegmenter
from structpred.ops.components import close_pairs, instances_from_semantic, match_instances
from structpred.ops.weight_map import class_frequency_weights, separation_borders, unet_weight_map

VARIANTS: dict[str, dict[str, bool]] = {
    "ce": {"class_balance": False, "separation_border": False, "boundary_weight": False},
    "wc": {"class_balance": True, "separation_border": False, "boundary_weight": False},
    "wc+sep": {"class_balance": True, "separation_border": True, "boundary_weight": False},
    "paper": {"class_balance": True, "separation_border": True, "boundary_weight": True},
}
MIN_PIXELS = 16  # the data's own rule for a nucleus cut by a crop


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["wc", "wc+sep", "paper"], choices=list(VARIANTS))
    p.add_argument("--nuclei-epochs", type=int, default=25)
    p.add_argument("--stride", type=int, default=32, help="pixels between training crop origins")
    p.add_argument("--shapes-epochs", type=int, default=5)
    p.add_argument("--shapes-images", type=int, default=320, help="shapes training images")
    p.add_argument("--shapes-eval-images", type=int, default=100, help="shapes val / test images each")
    p.add_argument("--shapes-loss", choices=["ce", "wc"], default="ce", help="wc: training-set class weights")
    p.add_argument("--shapes-batch-size", type=int, default=4)
    p.add_argument("--shapes-lr", type=float, default=3e-3)
    p.add_argument("--no-shapes", action="store_true")
    p.add_argument("--no-nuclei", action="store_true")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument(
        "--padding", choices=["same", "valid"], default="same",
        help="nuclei: valid = the paper's unpadded convolutions with mirrored overlap-tile input",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default="out/unet/")
    return p.parse_args(argv)


class RandomDihedral:
    """Joint random flip / 90-degree rotation of the image and every ``[..., H, W]`` map of the
    target (square crops only); the torch global RNG, so seeded runs repeat."""

    def __call__(self, image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        k = int(torch.randint(0, 4, (1,)))
        flip = bool(torch.randint(0, 2, (1,)))

        def move(x: Tensor) -> Tensor:
            x = torch.rot90(x, k, dims=(-2, -1))
            return x.flip(-1) if flip else x

        out = dict(target)
        for key in ("masks", "semantic"):
            out[key] = move(target[key]).contiguous()
        return move(image).contiguous(), out


def _config(args: argparse.Namespace, epochs: int, name: str) -> TrainConfig:
    return ablation_config(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        model_name="unet_narrow",
        data=name,
    )


@torch.no_grad()
def nuclei_scores(model: UNetSegmenter | None, split: str) -> dict[str, float]:
    """mIoU and instance figures on the whole ``split`` quadrant (model None: the oracle)."""
    image, target = Nuclei(split, crop=256)[0]
    gt_labels, gt_masks = target["semantic"], target["masks"]
    if model is None:
        pred = gt_labels
    else:
        model.eval()
        pred = model([image])[0]["label_map"][0]  # (1, H, W) -> (H, W)
    miou = MeanIoU(2)
    miou.update(pred[None], gt_labels[None])
    m = miou.compute()
    comps = instances_from_semantic(pred, (1,), MIN_PIXELS)  # (P, H, W)
    matched = match_instances(comps, gt_masks)  # (G,)
    found = matched >= 0
    out = {
        "miou": float(m["miou"]),
        "iou_nucleus": float(m["iou_per_class"][1]),
        "recall@0.5": float(found.float().mean()),
        "precision@0.5": float(found.sum()) / max(1, comps.shape[0]),
        "instances_pred": float(comps.shape[0]),
        "instances_true": float(gt_masks.shape[0]),
    }
    for gap in (0, 2):
        pairs = close_pairs(gt_masks, gap)
        out[f"pairs_gap{gap}"] = float(len(pairs))
        out[f"separated_gap{gap}"] = float(sum(bool(found[i] and found[j]) for i, j in pairs))
    return out


def time_weight_maps(data: Nuclei) -> float:
    """Milliseconds per training crop to build the separation borders and the weight map."""
    tic = time.perf_counter()
    for i in range(len(data)):
        _, t = data[i]
        labels = separation_borders(t["semantic"], t["masks"])
        unet_weight_map(labels, t["masks"], 2)
    return 1000 * (time.perf_counter() - tic) / len(data)


def run_nuclei(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    train = Nuclei("train", crop=128, stride=args.stride, transforms=RandomDihedral())
    logging.info("nuclei: %d training crops; weight map %.1f ms / crop", len(train), time_weight_maps(train))
    rows = []
    for variant in args.variants:
        seed_everything(args.seed)  # same initial weights and data order for every variant
        model = get_model(
            "unet_narrow", base_channels=args.base_channels, padding=args.padding, **VARIANTS[variant]
        )
        assert isinstance(model, UNetSegmenter)
        config = _config(args, args.nuclei_epochs, "nuclei")
        trainer = Trainer(model, train, None, config, out / f"nuclei_{variant}_{args.padding}")
        tic = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - tic
        row: dict[str, Any] = {
            "variant": variant if args.padding == "same" else f"{variant}, valid", "steps": trainer.step,
            "train_s": wall,
        }  # fmt: skip
        for split in ("val", "test"):
            row[split] = nuclei_scores(model, split)
        logging.info("nuclei %s: %s", variant, row)
        rows.append(row)
    return rows


def run_shapes(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    train = ShapesWorld("train", num_images=args.shapes_images, seed=args.seed, cache=True)
    counts = torch.zeros(13, dtype=torch.int64)
    for i in range(len(train)):  # renders (and caches) every training image once
        _, t = train[i]
        parts = t["parts"][t["parts"] != 255]
        counts += torch.bincount(parts, minlength=13)
    weights = tuple(float(w) for w in class_frequency_weights(counts))
    logging.info("shapes parts: class weights %s", [round(w, 2) for w in weights])
    seed_everything(args.seed)
    model = get_model(
        "unet_narrow",
        num_classes=13,
        target_key="parts",
        base_channels=args.base_channels,
        class_weights=weights if args.shapes_loss == "wc" else None,
        **VARIANTS[args.shapes_loss],
    )
    config = _config(args, args.shapes_epochs, "shapes")
    config.batch_size, config.lr = args.shapes_batch_size, args.shapes_lr
    trainer = Trainer(
        model, train, None, config, out / "shapes_parts", metric=lambda: SegmentationMetric(13, "parts", 255)
    )
    tic = time.perf_counter()
    trainer.fit()
    row: dict[str, Any] = {"steps": trainer.step, "train_s": time.perf_counter() - tic}
    for split in ("val", "test"):
        data = ShapesWorld(split, num_images=args.shapes_eval_images, seed=args.seed)
        metrics = trainer.evaluate(data)
        row[split] = {k: float(metrics[k]) for k in ("miou", "boundary_miou", "pixel_accuracy", "loss")}
    logging.info("shapes parts: %s", row)
    return row


def _table(rows: list[dict[str, Any]], oracle: dict[str, dict[str, float]]) -> str:
    head = (
        "| variant | split | mIoU | nucleus IoU | recall@0.5 | precision@0.5 | touching separated "
        "| within 2 px separated | train s |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in [*rows, {"variant": "oracle (true map)", **oracle, "train_s": float("nan")}]:
        for split in ("val", "test"):
            s = row[split]
            lines.append(
                f"| {row['variant']} | {split} | {s['miou']:.3f} | {s['iou_nucleus']:.3f} "
                f"| {s['recall@0.5']:.3f} "
                f"| {s['precision@0.5']:.3f} | {s['separated_gap0']:.0f} / {s['pairs_gap0']:.0f} "
                f"| {s['separated_gap2']:.0f} / {s['pairs_gap2']:.0f} | {row['train_s']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    results: dict[str, Any] = {"args": vars(args)}
    if not args.no_nuclei:
        rows = run_nuclei(args, out)
        oracle = {split: nuclei_scores(None, split) for split in ("val", "test")}
        print(_table(rows, oracle))
        results.update(nuclei=rows, oracle=oracle)
    if not args.no_shapes:
        shapes = run_shapes(args, out)
        results["shapes_parts"] = shapes
        print(
            "\n| shapes parts (13 classes) | mIoU | boundary mIoU | pixel acc. | train s |"
            "\n|---|---|---|---|---|"
        )
        for split in ("val", "test"):
            s = shapes[split]
            print(
                f"| {split} | {s['miou']:.3f} | {s['boundary_miou']:.3f} | {s['pixel_accuracy']:.3f} "
                f"| {shapes['train_s']:.0f} |"
            )
    results["wall_s"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\ntotal wall time {results['wall_s'] / 60:.1f} min at {args.threads} thread(s)")


if __name__ == "__main__":
    main()
