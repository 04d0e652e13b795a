"""The lecture's trade-off as a table: one-stage detectors vs the narrow Faster R-CNN, same data,
same budget.

Command (every model of ``--models``, each trained by the CLI with its recipe below, one thread
per run, ``--jobs`` runs at a time; then the table)::

    OMP_NUM_THREADS=1 python experiments/one_stage.py --data shapes --jobs 2
    python experiments/one_stage.py --data shapes --table      # reprint from OUT/*/result.json
    OMP_NUM_THREADS=1 python experiments/one_stage.py --overfit yolo_v1_narrow   # loss / encoding check

Each recipe is the model's shapes-world recipe (from its docs page); on ``trees`` / ``nuclei``
the same recipe runs with that dataset's image size (400 px tiles for trees, 256 px nuclei).
A run trains with ``structpred train``, then its last checkpoint is scored on the test split by
:func:`structpred.engine.run.evaluate` (COCO map, map_50, map_75, mar_small) and its inference
speed is timed on 32 test images (batch 1, eval, ``no_grad``, the run's own image size, median
of 3 passes, one thread): images per second. The wall time is the whole ``train`` command
(validation included), so the budget is comparable between models; its CPU time (user + sys of
the ``train`` process) is recorded beside it, the budget's measure on a shared machine. A run
with a weight EMA (``--ema``, docs/ema.md) is scored with the average (the default) and, as
``test_raw``, with its raw weights: the same run with and without the EMA.
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

ADAMW = ["--optimizer", "adamw", "--warmup", "100"]
FRCNN = [*ADAMW, "--batch-size", "4", "--lr", "0.004", "--amp", "bf16"]  # the README's Faster R-CNN recipe
# model -> (epochs, extra train arguments): each model's shapes recipe (its docs page says why).
RECIPES: dict[str, tuple[int, list[str]]] = {
    "fasterrcnn_narrow_fpn": (10, FRCNN),
    "retinanet_narrow_fpn": (10, FRCNN),  # docs/one_stage.md (the Faster R-CNN recipe, untuned)
    "fcos_narrow_fpn": (10, FRCNN),  # docs/fcos.md (the same)
    "yolo_narrow": (10, [*ADAMW, "--batch-size", "8", "--lr", "0.008", "--amp", "bf16"]),  # docs/yolo.md
    # docs/yolo.md: the leaner layout steps 0.58x of Faster R-CNN per image, so 12 epochs fit
    "yolo_lite": (12, [*ADAMW, "--batch-size", "8", "--lr", "0.01", "--amp", "bf16"]),
    # docs/yolo_v1.md: no dropout, no augmentation (the paper's dropout 0.5 + --augment yolo_v1
    # stop the memorising but test map_50 is 0.014 against 0.042 in this budget), float32
    "yolo_v1_narrow": (10, [*ADAMW, "--batch-size", "16", "--lr", "0.002", "--model-arg", "dropout=0.0"]),
}
# Per dataset: image-size arguments every model takes (the detectors resize internally).
DATA_ARGS: dict[str, list[str]] = {
    "shapes": [],
    "trees": ["--model-arg", "min_size=400", "--model-arg", "max_size=400"],
    "nuclei": [],
}
KEYS = ("map_50", "map_75", "map", "mar_small")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="shapes", choices=sorted(DATA_ARGS))
    p.add_argument("--models", default=",".join(RECIPES), help="comma list of " + ", ".join(RECIPES))
    p.add_argument("--out", default=None, help="runs and results (default out/one_stage-DATA)")
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    p.add_argument("--table", action="store_true", help="only print the table from OUT/*/result.json")
    p.add_argument("--overfit", metavar="MODEL", help="one-image overfit check: train-image map_50 (-> ~1)")
    p.add_argument("--one", metavar="MODEL", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _train(model: str, args: list[str], log: Path) -> tuple[float, float]:
    """``structpred train --model MODEL ARGS`` on one thread, output to ``log``; (wall, CPU) s."""
    import resource

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "structpred", "train", "--model", model, *args, "--no-progress"]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as f:
        f.write(" ".join(cmd[1:]) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def _images_per_second(run: Path, images: int = 32, passes: int = 3) -> float:
    """Median over ``passes`` of test images per second, batch 1, eval mode, one thread."""
    import torch

    from structpred.engine.run import evaluation_data, load_model

    torch.set_num_threads(1)
    model, config = load_model(run)
    _, dataset = evaluation_data(config, None, "test", None)
    batch = [dataset[i][0] for i in range(min(images, len(dataset)))]  # type: ignore[arg-type]
    model.eval()
    rates = []
    with torch.no_grad():
        model([batch[0]])  # warm-up
        for _ in range(passes):
            start = time.perf_counter()
            for image in batch:
                model([image])
            rates.append(len(batch) / (time.perf_counter() - start))
    return statistics.median(rates)


def _one(a: argparse.Namespace, out: Path, model: str) -> None:
    import torch

    from structpred.engine.run import evaluate

    epochs, extra = RECIPES[model]
    epochs = a.epochs or epochs
    run = out / model
    args = ["--data", a.data, *DATA_ARGS[a.data], *extra, "--epochs", str(epochs),
            "--eval-every", str(epochs), "--seed", str(a.seed)]  # fmt: skip
    wall, cpu = _train(model, [*args, "--out", str(run)], out / f"{model}.log")
    torch.set_num_threads(1)
    metrics = evaluate(run, split="test")
    result = {
        "model": model,
        "data": a.data,
        "args": args,
        "wall_s": wall,
        "cpu_s": cpu,
        "test": {k: float(metrics[k]) for k in KEYS},
        "images_per_s": _images_per_second(run),
    }
    if "--ema" in args:  # the same run's raw weights
        raw = evaluate(run, split="test", raw=True)
        result["test_raw"] = {k: float(raw[k]) for k in KEYS}
    (run / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{model}: {result}", flush=True)


def overfit(model_name: str, steps: int = 300, index: int = 0) -> dict[str, float]:
    """Train ``model_name`` (dropout off) on one shapes training image for ``steps`` AdamW steps
    (lr 1e-3, no weight decay, seed 0) and score that image in eval mode: a loss and a target
    encoding that are right give map_50 near 1 (objects a detector cannot represent aside, e.g.
    YOLO v1's second object in one cell)."""
    import torch

    from structpred.data.shapes import ShapesWorld
    from structpred.metrics.detection import MeanAveragePrecision
    from structpred.models import get_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    image, full = ShapesWorld("train")[index]
    target = {"boxes": full["boxes"], "labels": full["labels"]}
    kwargs = {"dropout": 0.0} if model_name.startswith("yolo_v1") else {}
    model = get_model(model_name, **kwargs).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(steps):
        _, losses = model([image], [target], predict=False)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()
    metric = MeanAveragePrecision()
    with torch.no_grad():
        preds, _ = model([image])
    metric.update(preds, [target])
    scores = metric.compute()
    out = {"loss": float(sum(losses.values()).detach()), **{k: float(scores[k]) for k in ("map_50", "map")}}
    print(f"{model_name} overfit on train image {index} ({len(target['labels'])} objects): {out}")
    return out


def table(out: Path) -> str:
    """The markdown table of every ``OUT/*/result.json``."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    header = (
        "| model | epochs | train (min, 1 thread) | test map_50 | map_75 | map | mar_small | images/s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for r in results:
        epochs = r["args"][r["args"].index("--epochs") + 1]
        cells = " | ".join(f"{r['test'][k]:.3f}" for k in KEYS)
        rows.append(
            f"| `{r['model']}` | {epochs} | {r['wall_s'] / 60:.1f} | {cells} | {r['images_per_s']:.1f} |"
        )
    return "\n".join([header, *rows])


def main(argv: list[str] | None = None) -> None:
    a = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.overfit:
        overfit(a.overfit)
        return
    out = Path(a.out or f"out/one_stage-{a.data}")
    out.mkdir(parents=True, exist_ok=True)
    if a.table:
        print(table(out))
        return
    if a.one:
        _one(a, out, a.one)
        return

    models = [m for m in a.models.split(",") if m]
    unknown = [m for m in models if m not in RECIPES]
    if unknown:
        raise SystemExit(f"no recipe for {unknown}; known: {', '.join(RECIPES)}")
    base = [sys.executable, __file__, "--data", a.data, "--out", str(out), "--seed", str(a.seed)]
    base += ["--epochs", str(a.epochs)] if a.epochs else []
    procs: list[subprocess.Popen[bytes]] = []
    for model in models:
        while sum(p.poll() is None for p in procs) >= a.jobs:
            time.sleep(5)
        procs.append(subprocess.Popen([*base, "--one", model]))
    failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"failed: {failed}")
    print(table(out))


if __name__ == "__main__":
    main()
