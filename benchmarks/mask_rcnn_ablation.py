"""RoIAlign vs RoIPool in Mask R-CNN (He et al. 2017, Table 2c), in miniature, on the shapes world.

Command (both variants at once, one process and one thread each, then the table)::

    OMP_NUM_THREADS=1 python benchmarks/mask_rcnn_ablation.py --variants align,pool --jobs 2

``maskrcnn_narrow_fpn`` is trained from scratch by the engine (:func:`structpred.engine.run.train`)
once per ``roi_op`` (``"align"``: RoIAlign, ``"pool"``: the quantised RoIPool, in both the box and
the mask pooler), with one recipe for both — the ``fasterrcnn_narrow_fpn`` one (AdamW 2e-3,
weight decay 1e-4, warm-up 100, cosine, batch 4, seed 0: the same initial weights and data order)
and the same epochs. Only the last epoch is validated. Each model is then run once over the test
split and scored by :class:`~structpred.metrics.MeanAveragePrecision` for boxes (``bbox``) and for
masks (``segm``, the model's soft ``[N, 1, H, W]`` masks thresholded at 0.5).

"train wall time" is that of ``train`` (the first epoch also renders the images into the
dataset's cache; the final validation is included). ``--data nuclei`` trains on the DSB 2018
nuclei crops instead (1 class, 128 px crops: 8 train / 4 val / 4 test; 150 epochs by default).
Each variant writes ``OUT/<data>-<variant>/result.json``; the table is printed from those files,
so ``--table`` reprints it without training. Single seeded runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from structpred.data.registry import build_dataset
from structpred.engine import TrainConfig
from structpred.engine.run import train
from structpred.metrics import MeanAveragePrecision

MODEL = "maskrcnn_narrow_fpn"
METRIC_KEYS = ("map", "map_50", "map_75")
# He et al. 2017 (arXiv v3), COCO minival, ResNet-50: mask (and, in Table 2d, box) AP / AP50 / AP75.
# Table 2c's RoIPool uses max, its RoIAlign average pooling. With FPN (like our model) the text
# reports RoIAlign +1.5 mask AP and +0.5 box AP over RoIPool, without a table.
PAPER: dict[str, dict[str, dict[str, tuple[float, ...]]]] = {
    "stride 16, R-50-C4 (2c)": {
        "pool": {"mask": (26.9, 48.8, 26.4)},
        "align": {"mask": (30.3, 51.2, 31.5)},
    },
    "stride 32, R-50-C5 (2d)": {
        "pool": {"mask": (23.6, 46.5, 21.6), "box": (28.2, 52.7, 26.9)},
        "align": {"mask": (30.9, 51.8, 32.1), "box": (34.0, 55.3, 36.4)},
    },
}
NAMES = {"align": "RoIAlign", "pool": "RoIPool"}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="align,pool", help="comma-separated roi_op values")
    p.add_argument("--data", default="shapes", choices=["shapes", "nuclei"])
    p.add_argument("--epochs", type=int, default=None, help="default: 3 (shapes), 150 (nuclei)")
    p.add_argument("--num-images", type=int, default=None, help="shapes train/val subset (pilots)")
    p.add_argument("--test-images", type=int, default=None, help="shapes test subset (default 500)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per variant")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (subprocesses)")
    p.add_argument("--table", action="store_true", help="only print the table from OUT's results")
    p.add_argument("--out", default="out/mask_rcnn_ablation/")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.data == "shapes" else 150
    return args


def _data_kwargs(args: argparse.Namespace, split: str) -> dict[str, Any]:
    if args.data == "nuclei":
        return {"crop": 128}
    n = args.test_images if split == "test" else args.num_images
    return {} if n is None else {"num_images": n}


@torch.no_grad()
def test_scores(model: torch.nn.Module, data: Any, batch_size: int) -> dict[str, float]:
    """Box and mask AP / AP50 / AP75 of ``model`` over every item of ``data`` (one pass)."""
    model.eval()
    metrics = {kind: MeanAveragePrecision(iou_type=kind) for kind in ("bbox", "segm")}
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        preds, _ = model([image for image, _ in items])
        targets = [target for _, target in items]
        for metric in metrics.values():
            metric.update(preds, targets)
    out = {}
    for kind, metric in metrics.items():
        values = metric.compute()
        out.update({f"{kind}_{k}": float(values[k]) for k in METRIC_KEYS})
    return out


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one ``roi_op``, score it on the test split, write and return its result row."""
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out) / f"{args.data}-{variant}"
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer="adamw",
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=args.warmup,
        seed=args.seed,
        eval_every=args.epochs,  # validate the last epoch only
        progress=False,
        log_every=50,
        keep_last=1,
        device="cpu",
    )
    tic = time.perf_counter()
    trainer, val = train(
        MODEL, args.data, config, out_dir, model_kwargs={"roi_op": variant},
        data_kwargs=_data_kwargs(args, "train"),
    )  # fmt: skip
    train_s = time.perf_counter() - tic
    test = build_dataset(args.data, "test", **_data_kwargs(args, "test"))
    tic = time.perf_counter()
    scores = test_scores(trainer.model, test, 8)
    row = {
        "variant": variant,
        "data": args.data,
        "epochs": args.epochs,
        "train_images": len(trainer.train_data),  # type: ignore[arg-type]
        "test_images": len(test),  # type: ignore[arg-type]
        "steps": trainer.step,
        "train_s": train_s,
        "test_s": time.perf_counter() - tic,
        "val_segm_map": float(val.get("map", float("nan"))),
        "threads": args.threads,
        **scores,
    }
    (out_dir / "result.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row), flush=True)
    return row


def _spawn(variants: list[str], args: argparse.Namespace, argv: list[str]) -> None:
    """Run each variant in its own process (``OMP_NUM_THREADS`` = ``--threads``), ``--jobs`` at a time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pending = list(variants)
    running: list[tuple[str, subprocess.Popen[bytes], Any]] = []  # (variant, process, log file)
    while pending or running:
        while pending and len(running) < args.jobs:
            v = pending.pop(0)
            log = open(Path(args.out) / f"{args.data}-{v}.log", "w")  # noqa: SIM115
            # argparse keeps the last value
            cmd = [sys.executable, __file__, *argv, "--variants", v, "--jobs", "1"]
            running.append((v, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(5)
        for v, proc, log in list(running):
            if proc.poll() is not None:
                running.remove((v, proc, log))
                log.close()
                print(f"{v}: exit {proc.returncode} (log {args.out}/{args.data}-{v}.log)", flush=True)


def _fmt(values: tuple[float, ...] | None, sign: str = "") -> str:
    return " | ".join(f"{v:{sign}.1f}" for v in values) if values else "– | – | –"


def _delta(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return tuple(x - y for x, y in zip(a, b, strict=True)) if a and b else None


def print_table(args: argparse.Namespace, variants: list[str]) -> None:
    """Our rows (from ``OUT/<data>-<variant>/result.json``), RoIAlign - RoIPool, then the paper's."""
    rows = {}
    for v in variants:
        path = Path(args.out) / f"{args.data}-{v}" / "result.json"
        if path.exists():
            rows[v] = json.loads(path.read_text())
    if not rows:
        print(f"no results in {args.out}")
        return
    r0 = next(iter(rows.values()))
    print(
        f"\n{MODEL} on {r0['data']}: {r0['epochs']} epochs x {r0['train_images']} images ({r0['steps']} "
        f"steps), batch {args.batch_size}, AdamW {args.lr} (warm-up {args.warmup}, cosine), seed "
        f"{args.seed}, {r0['threads']} thread(s) per variant; test {r0['test_images']} images. AP in %.\n"
    )
    print("| variant | box AP | AP50 | AP75 | mask AP | AP50 | AP75 | train wall time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ours: dict[str, dict[str, tuple[float, ...]]] = {}
    for v, r in rows.items():
        ours[v] = {
            kind: tuple(100 * r[f"{key}_{k}"] for k in METRIC_KEYS)
            for kind, key in (("box", "bbox"), ("mask", "segm"))
        }
        minutes = f"{r['train_s'] / 60:.1f} min"
        print(f"| {NAMES.get(v, v)} | {_fmt(ours[v]['box'])} | {_fmt(ours[v]['mask'])} | {minutes} |")
    if "align" in ours and "pool" in ours:
        box, mask = (_delta(ours["align"][k], ours["pool"][k]) for k in ("box", "mask"))
        print(f"| RoIAlign − RoIPool | {_fmt(box, '+')} | {_fmt(mask, '+')} | |")
    print("\nThe paper (He et al. 2017, Table 2; COCO minival, ResNet-50; box AP only in 2d):\n")
    print("| setting | variant | box AP | AP50 | AP75 | mask AP | AP50 | AP75 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for setting, by_op in PAPER.items():
        for op in ("pool", "align"):
            print(f"| {setting} | {NAMES[op]} | {_fmt(by_op[op].get('box'))} | {_fmt(by_op[op]['mask'])} |")
        box, mask = (_delta(by_op["align"].get(k), by_op["pool"].get(k)) for k in ("box", "mask"))
        print(f"| {setting} | RoIAlign − RoIPool | {_fmt(box, '+')} | {_fmt(mask, '+')} |")
    print("| FPN (text of §4.2) | RoIAlign − RoIPool | +0.5 | – | – | +1.5 | – | – |")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.table:
        tic = time.perf_counter()
        if args.jobs > 1 and len(variants) > 1:
            _spawn(variants, args, argv)
        else:
            for v in variants:
                run_variant(v, args)
        print(f"total wall time {(time.perf_counter() - tic) / 60:.1f} min")
    print_table(args, variants)


if __name__ == "__main__":
    main()
