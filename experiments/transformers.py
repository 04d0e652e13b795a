"""Issue 17's claims as tables: ViT vs a CNN of the same size as the training set grows, and Swin
vs the narrow CNN backbone under Faster R-CNN.

Commands (runs one at a time, one thread each; a run whose ``result.json`` exists is skipped, so an
interrupted command continues; ``--table`` reprints from ``OUT/*/result.json``)::

    OMP_NUM_THREADS=1 python experiments/transformers.py classify     # part (a)
    OMP_NUM_THREADS=1 python experiments/transformers.py detect       # part (b)
    python experiments/transformers.py classify --table

(a) ``vit_narrow`` vs ``digits_cnn`` at width 48 (208 k vs 210 k parameters) on ``digits``
(scikit-learn's real 8 x 8 digits upsampled to 32 px: 1,200 train, 297 test) and on
``shapes-objects`` (32 px object crops of the shapes world) with a small and a larger training
set; test on the same 1,000 test crops for both sizes. Same budget for both models: epochs, batch
64, AdamW with warm-up and a cosine schedule, each model's own dropout / drop path defaults; the
learning rates in :data:`CLASSIFIERS` were not searched here (the CNN's is docs/cli.md's digits
recipe, the ViT's the usual AdamW 1e-3 for small ViTs). The figure is test accuracy of the last
checkpoint, mean +- sd over seeds.

(b) ``fasterrcnn_fpn`` over ``backbone=narrow`` (the narrow CNN) and ``backbone=swin_narrow`` on
``shapes``, both with ``fasterrcnn_narrow_fpn``'s settings (32-channel FPN, 256 px, its anchors,
RPN and box-head sizes: :data:`~structpred.models.faster_rcnn.NARROW_SETTINGS`), the Faster
R-CNN recipe of ``experiments/one_stage.py`` (AdamW 4e-3, warm-up 100, batch 4, bf16) for
:data:`DETECT_EPOCHS` epochs; test map_50 / map of the last checkpoint and images per second
(batch 1, one thread).

``--recipe transformer`` (issue 17's leftover): the same runs under the usual transformer recipe
instead of the CNN's (:data:`DETECT_RECIPES`): AdamW at a quarter of the lr (1e-3), a warm-up of one
epoch (500 steps) instead of 100, gradient norm clipped at 1.0; everything else equal. Under the
CNN's recipe Swin's loss diverged at epoch 3 (0.80 -> 1.31-1.52). Runs are named
``fasterrcnn_fpn-BACKBONE-sSEED`` (CNN recipe) or ``...-transformer-sSEED``::

    OMP_NUM_THREADS=1 python experiments/transformers.py detect --backbones swin_narrow --epochs 10 \
        --recipe transformer --seeds 0,1 --out out/transformers-detect10-recipe

(c) ``mask``: ``maskrcnn_fpn`` over ``narrow`` and ``swin_narrow`` with ``maskrcnn_narrow_fpn``'s
settings (``NARROW_SETTINGS`` + a mask head of four 32-channel convs, score threshold 0.05), the
transformer recipe on both sides for :data:`MASK_EPOCHS` epochs; test box and mask AP / AP50 / AP75
(one pass, :func:`mask_rcnn_ablation.test_scores`). (d) ``segment``: ``deeplabv3`` at
``output_stride=32`` over ``narrow``, ``swin_narrow`` and ``vit_narrow`` (:data:`SEGMENT_SETTINGS`:
ASPP of 64 channels, rates (1, 2, 3) for a 4 x 4 map at 128 px, dropout 0.1) on the shapes label
maps (7 classes), the transformer recipe at batch 8 (warm-up one epoch, 250 steps) on all three
for :data:`SEGMENT_EPOCHS` epochs; test mIoU, boundary mIoU, pixel accuracy::

    OMP_NUM_THREADS=1 python experiments/transformers.py mask --out out/transformers-mask
    OMP_NUM_THREADS=1 python experiments/transformers.py segment --out out/transformers-segment
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from one_stage import FRCNN, _images_per_second, _train  # noqa: E402  (the shared run helpers)

SEEDS = (0, 1, 2)
CNN_WIDTH = 48  # digits_cnn at width 48: 210 k parameters, vit_narrow's 208 k within 1 %
# model -> its train arguments: AdamW, warm-up 50 steps, cosine; lr per model (module doc).
CLASSIFIERS: dict[str, list[str]] = {
    "vit_narrow": ["--optimizer", "adamw", "--lr", "0.001", "--warmup", "50"],
    "digits_cnn": ["--optimizer", "adamw", "--lr", "0.003", "--warmup", "50",
                   "--model-arg", f"width={CNN_WIDTH}"],
}  # fmt: skip
BATCH = 64
TEST_CROPS = 1000  # shapes-objects test items, the same for every training size
# data setting -> (spec, data arguments, epochs)
SETTINGS: dict[str, tuple[str, dict[str, int], int]] = {
    "digits": ("digits", {}, 20),
    "shapes-objects-500": ("shapes-objects", {"num_images": 500}, 20),
    "shapes-objects-2000": ("shapes-objects", {"num_images": 2000}, 20),
}
DETECT_BACKBONES = ("narrow", "swin_narrow")
DETECT_EPOCHS = 3
DETECT_SEEDS = (0,)
DETECT_KEYS = ("map_50", "map_75", "map")
# recipe -> train arguments (the module doc); "cnn" is experiments/one_stage.py's Faster R-CNN recipe.
DETECT_RECIPES: dict[str, list[str]] = {
    "cnn": FRCNN,
    "transformer": ["--optimizer", "adamw", "--warmup", "500", "--batch-size", "4", "--lr", "0.001",
                    "--clip-grad", "1.0", "--amp", "bf16"],
}  # fmt: skip
MASK_EPOCHS = 4
MASK_KEYS = ("bbox_map_50", "bbox_map", "segm_map_50", "segm_map", "segm_map_75")
# maskrcnn_narrow_fpn's mask head (structpred/models/mask_rcnn.py) over any backbone
MASK_SETTINGS: dict[str, object] = {"mask_layers": [32] * 4, "mask_dim_reduced": 32, "box_score_thresh": 0.05}
SEGMENT_BACKBONES = ("narrow", "swin_narrow", "vit_narrow")
SEGMENT_EPOCHS = 6
SEGMENT_KEYS = ("miou", "boundary_miou", "pixel_accuracy")
SEGMENT_SETTINGS: dict[str, object] = {"output_stride": 32, "atrous_rates": [1, 2, 3], "aspp_channels": 64,
                                       "dropout": 0.1}  # fmt: skip
# the transformer recipe at batch 8: warm-up one epoch of the 2,000 shapes images
SEGMENT_RECIPE = ["--optimizer", "adamw", "--warmup", "250", "--batch-size", "8", "--lr", "0.001",
                  "--clip-grad", "1.0", "--amp", "bf16"]  # fmt: skip


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("classify", "detect", "mask", "segment"))
    p.add_argument("--out", default=None, help="runs and results (default out/transformers-PART)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="classify: comma list of settings")
    p.add_argument("--models", default=None, help="classify: comma list of models (default both)")
    p.add_argument("--backbones", default=None, help="detect / mask / segment: comma list of backbones")
    p.add_argument("--seeds", default=None, help="comma list (default 0,1,2 classify; 0 detect)")
    p.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    p.add_argument("--recipe", default="cnn", choices=sorted(DETECT_RECIPES), help="detect: train recipe")
    p.add_argument("--test-images", type=int, default=None, help="mask / segment: test subset (pilots)")
    p.add_argument("--data-arg", action="append", default=[], help="mask / segment: K=V (pilots)")
    p.add_argument("--table", action="store_true", help="only print the table from OUT/*/result.json")
    return p.parse_args(argv)


def _timed(timed: float | tuple[float, float]) -> tuple[float, float | None]:
    """``(wall s, CPU s or None)`` from ``one_stage._train`` (a float before it counted CPU time)."""
    return (timed[0], timed[1]) if isinstance(timed, tuple) else (timed, None)


def _kv(args: Mapping[str, object], flag: str) -> list[str]:
    out: list[str] = []
    for k, v in args.items():
        out += [flag, f"{k}={json.dumps(v)}"]
    return out


def _params(run: Path) -> int:
    from structpred.engine.run import load_model

    model, _ = load_model(run)
    return sum(p.numel() for p in model.parameters())


def classify_run(out: Path, setting: str, model: str, seed: int, epochs: int | None) -> None:
    """Train ``model`` on ``setting`` with ``seed`` (skipped if its result exists); test accuracy."""
    import torch

    from structpred.engine.run import evaluate

    name = f"{setting}-{model}-s{seed}"
    run = out / name
    if (run / "result.json").exists():
        return
    spec, data_args, default_epochs = SETTINGS[setting]
    epochs = epochs or default_epochs
    args = ["--data", spec, *_kv(data_args, "--data-arg"), *CLASSIFIERS[model], "--batch-size", str(BATCH),
            "--epochs", str(epochs), "--eval-every", str(epochs), "--seed", str(seed)]  # fmt: skip
    wall, cpu = _timed(_train(model, [*args, "--out", str(run)], out / f"{name}.log"))
    torch.set_num_threads(1)
    test_args = {"num_images": TEST_CROPS} if spec == "shapes-objects" else None
    metrics = evaluate(run, split="test", data_kwargs=test_args)
    result = {"setting": setting, "model": model, "seed": seed, "args": args, "wall_s": wall, "cpu_s": cpu,
              "params": _params(run), "accuracy": float(metrics["accuracy"])}  # fmt: skip
    (run / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{name}: accuracy {result['accuracy']:.4f}, {wall / 60:.1f} min", flush=True)


def detect_run(out: Path, backbone: str, seed: int, epochs: int | None, recipe: str = "cnn") -> None:
    """``fasterrcnn_fpn`` over ``backbone`` with the narrow settings on shapes, trained by ``recipe``
    (:data:`DETECT_RECIPES`); test mAP, images/s."""
    import torch

    from structpred.engine.run import evaluate
    from structpred.models.faster_rcnn import NARROW_SETTINGS

    name = f"fasterrcnn_fpn-{backbone}{'' if recipe == 'cnn' else '-' + recipe}-s{seed}"
    run = out / name
    if (run / "result.json").exists():
        return
    epochs = epochs or DETECT_EPOCHS
    model_args = {"backbone": backbone, "fpn_channels": 32, **NARROW_SETTINGS}
    args = ["--data", "shapes", *_kv(model_args, "--model-arg"), *DETECT_RECIPES[recipe],
            "--epochs", str(epochs), "--eval-every", str(epochs), "--seed", str(seed)]  # fmt: skip
    wall, cpu = _timed(_train("fasterrcnn_fpn", [*args, "--out", str(run)], out / f"{name}.log"))
    torch.set_num_threads(1)
    metrics = evaluate(run, split="test")
    result = {"model": "fasterrcnn_fpn", "backbone": backbone, "recipe": recipe, "seed": seed, "args": args,
              "wall_s": wall, "cpu_s": cpu,
              "params": _params(run), "test": {k: float(metrics[k]) for k in DETECT_KEYS},
              "images_per_s": _images_per_second(run)}  # fmt: skip
    (run / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{name}: {result['test']}, {result['images_per_s']:.1f} images/s", flush=True)


def dense_run(out: Path, part: str, backbone: str, seed: int, epochs: int | None,
              data_args: list[str], test_images: int | None) -> None:  # fmt: skip
    """``part`` ``mask`` (``maskrcnn_fpn``) or ``segment`` (``deeplabv3``) over ``backbone`` on shapes
    (module doc); test figures and images/s into ``result.json``."""
    import time

    import torch

    from structpred.engine.run import evaluate, evaluation_data, load_model
    from structpred.models.faster_rcnn import NARROW_SETTINGS

    model = "maskrcnn_fpn" if part == "mask" else "deeplabv3"
    name = f"{model}-{backbone}-s{seed}"
    run = out / name
    if (run / "result.json").exists():
        return
    epochs = epochs or (MASK_EPOCHS if part == "mask" else SEGMENT_EPOCHS)
    if part == "mask":
        model_args = {"backbone": backbone, "fpn_channels": 32, **NARROW_SETTINGS, **MASK_SETTINGS}
        recipe = DETECT_RECIPES["transformer"]
    else:
        model_args = {"backbone": backbone, "num_classes": 7, **SEGMENT_SETTINGS}
        recipe = SEGMENT_RECIPE
    args = ["--data", "shapes", *data_args, *_kv(model_args, "--model-arg"), *recipe,
            "--epochs", str(epochs), "--eval-every", str(epochs), "--seed", str(seed)]  # fmt: skip
    wall, cpu = _timed(_train(model, [*args, "--out", str(run)], out / f"{name}.log"))
    torch.set_num_threads(1)
    test_args = {"num_images": test_images} if test_images else None
    tic = time.perf_counter()
    if part == "mask":
        from mask_rcnn_ablation import test_scores

        net, config = load_model(run)
        _, test = evaluation_data(config, None, "test", test_args)
        scores = test_scores(net, test, 8)
    else:
        metrics = evaluate(run, split="test", data_kwargs=test_args)
        scores = {k: float(metrics[k]) for k in SEGMENT_KEYS}
    result = {"part": part, "model": model, "backbone": backbone, "seed": seed, "args": args, "wall_s": wall,
              "cpu_s": cpu, "test_s": time.perf_counter() - tic, "params": _params(run), "test": scores,
              "images_per_s": _images_per_second(run)}  # fmt: skip
    (run / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{name}: {scores}, {result['images_per_s']:.1f} images/s, {wall / 60:.1f} min", flush=True)


def dense_table(out: Path, part: str) -> str:
    """Markdown: per backbone, the test figures (mean ± sd over seeds), params, train time, images/s."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    keys = MASK_KEYS if part == "mask" else SEGMENT_KEYS
    header = (f"| backbone | params | epochs | seeds | train (min, 1 thread) | {' | '.join(keys)} "
              f"| images/s |\n|---|---:|---:|---:|---:|{'---:|' * len(keys)}---:|")  # fmt: skip
    rows = []
    for backbone in dict.fromkeys([*SEGMENT_BACKBONES, *(r["backbone"] for r in results)]):
        rs = [r for r in results if r.get("part") == part and r["backbone"] == backbone]
        if not rs:
            continue
        epochs = rs[0]["args"][rs[0]["args"].index("--epochs") + 1]
        cells = " | ".join(_mean_sd([r["test"][k] for r in rs]) for k in keys)
        wall = statistics.mean(r["wall_s"] for r in rs) / 60
        speed = statistics.mean(r["images_per_s"] for r in rs)
        params = f"{rs[0]['params'] / 1e6:.2f} M"
        rows.append(f"| `{backbone}` | {params} | {epochs} | {len(rs)} | {wall:.1f} | {cells} "
                    f"| {speed:.1f} |")  # fmt: skip
    return "\n".join([header, *rows])


def _mean_sd(values: list[float]) -> str:
    """``mean ± sd`` over seeds (the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def classify_table(out: Path) -> str:
    """Markdown: per setting and model, test accuracy mean ± sd over seeds, params, train time."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    header = (
        "| data (train items) | model | params | epochs | seeds | test accuracy (mean ± sd) "
        "| train (min, 1 thread, mean) |\n|---|---|---:|---:|---:|---:|---:|"
    )
    rows = []
    for setting in SETTINGS:
        for model in CLASSIFIERS:
            rs = [r for r in results if r["setting"] == setting and r["model"] == model]
            if not rs:
                continue
            epochs = rs[0]["args"][rs[0]["args"].index("--epochs") + 1]
            acc = _mean_sd([r["accuracy"] for r in rs])
            wall = statistics.mean(r["wall_s"] for r in rs) / 60
            params = f"{rs[0]['params'] / 1e3:.0f} k"
            rows.append(f"| {setting} | `{model}` | {params} | {epochs} | {len(rs)} | {acc} | {wall:.1f} |")
    return "\n".join([header, *rows])


def detect_table(out: Path) -> str:
    """Markdown: per backbone and recipe, test map_50 / map_75 / map (mean over seeds), params, time,
    images/s."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    header = (
        "| backbone | recipe | params | epochs | seeds | train (min, 1 thread) | test map_50 | map_75 | map "
        "| images/s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for backbone in DETECT_BACKBONES:
        for recipe in DETECT_RECIPES:
            rs = [r for r in results if r["backbone"] == backbone and r.get("recipe", "cnn") == recipe]
            if not rs:
                continue
            epochs = rs[0]["args"][rs[0]["args"].index("--epochs") + 1]
            cells = " | ".join(_mean_sd([r["test"][k] for r in rs]) for k in DETECT_KEYS)
            wall = statistics.mean(r["wall_s"] for r in rs) / 60
            speed = statistics.mean(r["images_per_s"] for r in rs)
            params = f"{rs[0]['params'] / 1e6:.2f} M"
            rows.append(f"| `{backbone}` | {recipe} | {params} | {epochs} | {len(rs)} | {wall:.1f} | {cells} "
                        f"| {speed:.1f} |")  # fmt: skip
    return "\n".join([header, *rows])


def main(argv: list[str] | None = None) -> None:
    a = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(a.out or f"out/transformers-{a.part}")
    out.mkdir(parents=True, exist_ok=True)
    if a.part == "classify":
        if not a.table:
            settings = [s for s in a.settings.split(",") if s]
            models = [m for m in (a.models or ",".join(CLASSIFIERS)).split(",") if m]
            bad = [s for s in settings if s not in SETTINGS] + [m for m in models if m not in CLASSIFIERS]
            if bad:
                raise SystemExit(f"unknown {bad}; settings {list(SETTINGS)}, models {list(CLASSIFIERS)}")
            seeds = [int(s) for s in (a.seeds or ",".join(map(str, SEEDS))).split(",")]
            for setting in settings:  # seeds outermost: a cut-short command still compares both models
                for seed in seeds:
                    for model in models:
                        classify_run(out, setting, model, seed, a.epochs)
        print(classify_table(out))
        return
    default = DETECT_BACKBONES if a.part in ("detect", "mask") else SEGMENT_BACKBONES
    backbones = [b for b in (a.backbones or ",".join(default)).split(",") if b]
    if not a.table:
        seeds = [int(s) for s in (a.seeds or ",".join(map(str, DETECT_SEEDS))).split(",")]
        data_args = [x for kv in a.data_arg for x in ("--data-arg", kv)]
        for seed in seeds:
            for backbone in backbones:
                if a.part == "detect":
                    detect_run(out, backbone, seed, a.epochs, a.recipe)
                else:
                    dense_run(out, a.part, backbone, seed, a.epochs, data_args, a.test_images)
    print(detect_table(out) if a.part == "detect" else dense_table(out, a.part))


if __name__ == "__main__":
    main()
