"""RoIAlign vs RoIPool in Mask R-CNN (He et al. 2017, Table 2c), in miniature, on the shapes world.

Command (both variants at once, one process and one thread each, then the table)::

    OMP_NUM_THREADS=1 python experiments/mask_rcnn_ablation.py --variants align,pool --seeds 0,1 --jobs 2

``maskrcnn_narrow_fpn`` is trained from scratch by the engine (:func:`structpred.engine.run.train`)
once per ``roi_op`` (``"align"``: RoIAlign, ``"pool"``: the quantised RoIPool, in both the box and
the mask pooler), with one recipe for both — the ``fasterrcnn_narrow_fpn`` one (AdamW 2e-3,
weight decay 1e-4, warm-up 100, cosine, batch 4; per seed the same initial weights and data
order) and the same epochs. Only the last epoch is validated. Each model is then run once over the test
split and scored by :class:`~structpred.metrics.MeanAveragePrecision` for boxes (``bbox``) and for
masks (``segm``, the model's soft ``[N, 1, H, W]`` masks thresholded at 0.5).

"train wall time" is that of ``train`` (the first epoch also renders the images into the
dataset's cache; the final validation is included). ``--data nuclei`` trains on the DSB 2018
nuclei crops instead (1 class, 128 px crops: 65 overlapping train crops at stride 32, 4 val and
4 test crops; 20 epochs by default). Each (variant, seed) writes
``OUT/<data>-<variant>-seed<S>/result.json``; the table, with the mean over seeds, is printed
from those files, so ``--table`` reprints it without training.
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
from structpred.engine.recipe import ablation_config
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
    p.add_argument("--epochs", type=int, default=None, help="default: 3 (shapes), 20 (nuclei)")
    p.add_argument("--num-images", type=int, default=None, help="shapes train/val subset (pilots)")
    p.add_argument("--test-images", type=int, default=None, help="shapes test subset (default 500)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one run per (variant, seed)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per variant")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (subprocesses)")
    p.add_argument("--table", action="store_true", help="only print the table from OUT's results")
    p.add_argument("--out", default="out/mask_rcnn_ablation/")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.data == "shapes" else 20
    args.seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    return args


def _data_kwargs(args: argparse.Namespace, split: str) -> dict[str, Any]:
    if args.data == "nuclei":
        return {"crop": 128, "stride": 32} if split == "train" else {"crop": 128}
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


def _run_dir(args: argparse.Namespace, variant: str, seed: int) -> Path:
    return Path(args.out) / f"{args.data}-{variant}-seed{seed}"


def run_variant(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one ``roi_op`` with one seed, score it on the test split, write and return its row."""
    torch.set_num_threads(args.threads)
    out_dir = _run_dir(args, variant, seed)
    config = ablation_config(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        seed=seed,
        eval_every=args.epochs,  # validate the last epoch only
        log_every=50,
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
        "seed": seed,
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


def _spawn(runs: list[tuple[str, int]], args: argparse.Namespace, argv: list[str]) -> None:
    """Run each (variant, seed) in its own process (``OMP_NUM_THREADS`` = ``--threads``),
    ``--jobs`` at a time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pending = list(runs)
    running: list[tuple[str, subprocess.Popen[bytes], Any]] = []  # (name, process, log file)
    while pending or running:
        while pending and len(running) < args.jobs:
            v, seed = pending.pop(0)
            name = f"{args.data}-{v}-seed{seed}"
            log = open(Path(args.out) / f"{name}.log", "w")  # noqa: SIM115
            # argparse keeps the last value
            cmd = [sys.executable, __file__, *argv, "--variants", v, "--seeds", str(seed), "--jobs", "1"]
            running.append((name, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(5)
        for name, proc, log in list(running):
            if proc.poll() is not None:
                running.remove((name, proc, log))
                log.close()
                print(f"{name}: exit {proc.returncode} (log {args.out}/{name}.log)", flush=True)


def _fmt(values: tuple[float, ...] | None, sign: str = "") -> str:
    return " | ".join(f"{v:{sign}.1f}" for v in values) if values else "– | – | –"


def _delta(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return tuple(x - y for x, y in zip(a, b, strict=True)) if a and b else None


def _scores(row: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """Box and mask (AP, AP50, AP75) in % of one result row."""
    kinds = (("box", "bbox"), ("mask", "segm"))
    return {kind: tuple(100 * row[f"{key}_{k}"] for k in METRIC_KEYS) for kind, key in kinds}


def _mean(values: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(sum(col) / len(col) for col in zip(*values, strict=True))


def print_table(args: argparse.Namespace, variants: list[str]) -> None:
    """Our rows per seed (from ``OUT/<data>-<variant>-seed<S>/result.json``), their means,
    RoIAlign - RoIPool per seed and on the means, then the paper's."""
    rows: dict[str, dict[int, dict[str, Any]]] = {}  # variant -> seed -> row
    for v in variants:
        for seed in args.seeds:
            path = _run_dir(args, v, seed) / "result.json"
            if path.exists():
                rows.setdefault(v, {})[seed] = json.loads(path.read_text())
    if not rows:
        print(f"no results in {args.out}")
        return
    r0 = next(iter(next(iter(rows.values())).values()))
    print(
        f"\n{MODEL} on {r0['data']}: {r0['epochs']} epochs x {r0['train_images']} images ({r0['steps']} "
        f"steps), batch {args.batch_size}, AdamW {args.lr} (warm-up {args.warmup}, cosine), "
        f"{r0['threads']} thread(s) per run; test {r0['test_images']} images. AP in %.\n"
    )
    print("| variant | seed | box AP | AP50 | AP75 | mask AP | AP50 | AP75 | train wall time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v, by_seed in rows.items():
        for seed, r in sorted(by_seed.items()):
            sc = _scores(r)
            minutes = f"{r['train_s'] / 60:.1f} min"
            print(f"| {NAMES.get(v, v)} | {seed} | {_fmt(sc['box'])} | {_fmt(sc['mask'])} | {minutes} |")
    if "align" in rows and "pool" in rows:
        seeds = sorted(set(rows["align"]) & set(rows["pool"]))
        for seed in seeds:
            a, p = _scores(rows["align"][seed]), _scores(rows["pool"][seed])
            box, mask = _delta(a["box"], p["box"]), _delta(a["mask"], p["mask"])
            print(f"| RoIAlign − RoIPool | {seed} | {_fmt(box, '+')} | {_fmt(mask, '+')} | |")
        if len(seeds) > 1:
            means = {
                v: {k: _mean([_scores(rows[v][s])[k] for s in seeds]) for k in ("box", "mask")}
                for v in ("align", "pool")
            }
            n = f"{len(seeds)} seeds"
            for v in ("align", "pool"):
                print(f"| {NAMES[v]}, mean | {n} | {_fmt(means[v]['box'])} | {_fmt(means[v]['mask'])} | |")
            box, mask = (_delta(means["align"][k], means["pool"][k]) for k in ("box", "mask"))
            print(f"| **RoIAlign − RoIPool, mean** | {n} | {_fmt(box, '+')} | {_fmt(mask, '+')} | |")
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
        runs = [(v, seed) for seed in args.seeds for v in variants]
        if args.jobs > 1 and len(runs) > 1:
            _spawn(runs, args, argv)
        else:
            for v, seed in runs:
                run_variant(v, seed, args)
        print(f"total wall time {(time.perf_counter() - tic) / 60:.1f} min")
    print_table(args, variants)


if __name__ == "__main__":
    main()
