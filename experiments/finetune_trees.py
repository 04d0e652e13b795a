"""Fine-tuning from a weights file vs training from scratch, on the real DeepForest trees.

Command (pretrain once, then both variants for three seeds, two runs at a time, then the table)::

    OMP_NUM_THREADS=1 python experiments/finetune_trees.py --seeds 0,1,2 --jobs 2

No real pretrained detector is reachable offline, so the "weights file" is a checkpoint of ours:
``fasterrcnn_narrow_fpn`` trained on the shapes world (2,000 synthetic 256 px images, 5 classes;
the README's recipe, ``--pretrain-epochs`` epochs). Both variants then train on the 38 trees
tiles with the same recipe as the from-scratch row of ``experiments/RESULTS.md`` (30 epochs,
AdamW 2e-3, warm-up 50, batch 4, 400 px, the same seeds so the same data order):

- ``scratch``: random initialisation;
- ``finetune``: ``--weights PRETRAIN_RUN`` — every tensor from the shapes checkpoint except the
  box predictor (6 classes there, 1 here), which :func:`structpred.models.weights.load_weights`
  re-initialises.
- ``finetune_frozen``: the same with ``--freeze backbone:2`` (stem and first stage fixed: torchvision's
  default ``trainable_backbone_layers=3`` of 5).

Each run goes through the CLI (``structpred train ... [--weights RUN]``), then its last
checkpoint is scored on the val split (a 400-row band of the big training photo) and the test
split (a whole other photo) by :func:`structpred.engine.run.evaluate` (COCO map / map_50). Each
(variant, seed) writes ``OUT/<variant>-seed<S>/result.json``; the table (mean ± std over seeds)
is printed from those files, so ``--table`` reprints it without training. The pretraining's
cost is reported separately (its ``pretrain.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL = "fasterrcnn_narrow_fpn"
# The README's shapes recipe (bf16, lr 4e-3) for the weights file.
PRETRAIN = ["--data", "shapes", "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.004",
            "--warmup", "100", "--amp", "bf16"]  # fmt: skip
# The from-scratch trees row of experiments/RESULTS.md, for both variants.
TREES = ["--data", "trees", "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.002", "--warmup", "50",
         "--model-arg", "min_size=400", "--model-arg", "max_size=400"]  # fmt: skip
VARIANTS = {
    "scratch": [],
    "finetune": ["--weights"],
    "finetune_frozen": ["--weights", "--freeze", "backbone:2"],
}
SPLITS = ("val", "test")
KEYS = ("map_50", "map")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/finetune", help="runs and results go here")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the trees runs")
    p.add_argument("--variants", default="scratch,finetune", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=30, help="trees epochs (both variants)")
    p.add_argument(
        "--pretrain", default=None, help="weights run dir (default: OUT/pretrain-shapes, trained if absent)"
    )
    p.add_argument("--pretrain-epochs", type=int, default=8)
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    p.add_argument("--table", action="store_true", help="only print the table from OUT/*/result.json")
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _cli(args: list[str], log: Path) -> float:
    """Run ``structpred train ARGS`` (one thread), its output to ``log``; the wall time in s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "structpred", "train", "--model", MODEL, *args, "--no-progress"]
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write(" ".join(cmd[1:]) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return time.perf_counter() - start


def _pretrain(a: argparse.Namespace, out: Path) -> Path:
    run = Path(a.pretrain) if a.pretrain else out / "pretrain-shapes"
    if any(run.glob("ckpt-*.json")):
        return run
    args = [*PRETRAIN, "--epochs", str(a.pretrain_epochs), "--eval-every", str(a.pretrain_epochs)]
    wall = _cli([*args, "--seed", "0", "--out", str(run)], out / "pretrain-shapes.log")
    (out / "pretrain.json").write_text(json.dumps({"run": str(run), "wall_s": wall, "args": args}, indent=1))
    return run


def _scores(run: Path) -> dict[str, dict[str, float]]:
    import torch

    from structpred.engine.run import evaluate

    torch.set_num_threads(1)
    out: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        metrics = evaluate(run, split=split)
        out[split] = {k: float(metrics[k]) for k in KEYS}
    return out


def _one(a: argparse.Namespace, out: Path, variant: str, seed: int, weights: Path) -> None:
    run = out / f"{variant}-seed{seed}"
    extra = ["--weights", str(weights), *VARIANTS[variant][1:]] if VARIANTS[variant] else []
    args = [*TREES, "--epochs", str(a.epochs), "--eval-every", str(a.epochs), "--seed", str(seed), *extra]
    wall = _cli([*args, "--out", str(run)], out / f"{variant}-seed{seed}.log")
    result = {"variant": variant, "seed": seed, "wall_s": wall, "args": args, **_scores(run)}
    (run / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{variant} seed {seed}: {result}", flush=True)


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(out: Path) -> str:
    """The markdown table of every ``OUT/*/result.json``: per seed, then mean ± std per variant."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    header = (
        "| variant | seeds | val map_50 | val map | test map_50 | test map | wall (min) |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    rows = []
    for variant in VARIANTS:
        mine = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["seed"])
        if not mine:
            continue
        for r in mine:
            cells = [f"{r[s][k]:.3f}" for s in SPLITS for k in KEYS]
            rows.append(f"| {variant} | {r['seed']} | {' | '.join(cells)} | {r['wall_s'] / 60:.1f} |")
        cells = [_mean_std([r[s][k] for r in mine]) for s in SPLITS for k in KEYS]
        wall = statistics.mean(r["wall_s"] for r in mine) / 60
        seeds = ",".join(str(r["seed"]) for r in mine)
        rows.append(f"| **{variant}**, mean ± std | {seeds} | {' | '.join(cells)} | {wall:.1f} |")
    text = "\n".join([header, *rows])
    pre = out / "pretrain.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        text += (
            f"\n\nPretraining on shapes (once, shared by every fine-tuned run): {p['wall_s'] / 60:.1f} min."
        )
    return text


def main(argv: list[str] | None = None) -> None:
    a = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.table:
        print(table(out))
        return
    variants = [v for v in (a.one[0] if a.one else a.variants).split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    # Only the fine-tuned variants need the weights file (trained here once if absent).
    weights = _pretrain(a, out) if any(VARIANTS[v] for v in variants) else Path(a.pretrain or "")
    if a.one:
        _one(a, out, a.one[0], int(a.one[1]), weights)
        return
    jobs = [(v, int(s)) for s in a.seeds.split(",") for v in variants]
    base = [sys.executable, __file__, "--out", str(out), "--epochs", str(a.epochs)]
    base += ["--pretrain", str(weights)] if str(weights) not in ("", ".") else []
    procs: list[subprocess.Popen[bytes]] = []
    for variant, seed in jobs:
        while sum(p.poll() is None for p in procs) >= a.jobs:
            time.sleep(5)
        procs.append(subprocess.Popen([*base, "--one", variant, str(seed)]))
    failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"failed: {failed}")
    print(table(out))


if __name__ == "__main__":
    main()
