"""``structpred demo`` (what ``make demo`` runs): train, evaluate and draw a detector on the shapes world.

1. Train the small from-scratch Faster R-CNN (``fasterrcnn_narrow_fpn``) on the built-in shapes
   world, with a progress bar, checkpoints and logs in ``<out>/run``.
2. Evaluate it on the held-out test split: the full COCO table, PR curves in ``<out>/pr_curve.png``.
3. Draw its predictions on a few test images: ``<out>/predictions/*.png`` + ``predictions.json``,
   beside the ground truth (``<out>/ground_truth/*.png``).
4. Segmentation (:func:`run_segmentation_demo`): train the small semantic segmenter
   (``SEG_MODEL``) on the same world's label maps, print its mIoU / boundary mIoU on the test
   split, and draw its label maps over the test images in ``<out>/segmentation/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import ShapesWorld
from .data.images import write_image
from .engine import TrainConfig
from .engine import run as engine_run
from .engine.predict import predict_images
from .viz import draw_boxes, overlay_label_map, save_png

logger = logging.getLogger(__name__)

MODEL = "fasterrcnn_narrow_fpn"
# The recipe of experiments/RESULTS.md (AdamW beat SGD 0.461 to 0.288 after one epoch; batch 4
# at 2e-3 beat batch 8 at 1e-3).
RECIPE: dict[str, Any] = {"batch_size": 4, "lr": 0.002, "warmup_steps": 100, "optimizer": "adamw"}
SEG_MODEL = "fcn8s_narrow"
# The FCN ablation's recipe (experiments/fcn_ablation.py; see experiments/RESULTS.md).
SEG_RECIPE: dict[str, Any] = {"batch_size": 8, "lr": 0.003, "warmup_steps": 50, "optimizer": "adamw"}


def run_demo(
    out: str | Path = "out/demo",
    epochs: int = 2,
    pictures: int = 8,
    data_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and draw (see the module docstring); returns the test metrics.

    By default the shapes world's sizes are used (2,000 train, 200 val, 500 test images);
    ``data_kwargs`` / ``model_kwargs`` override the dataset's and the builder's arguments;
    ``report`` receives the per-epoch lines (default: the log).
    """
    out = Path(out)
    data_kwargs = data_kwargs or {}
    config = TrainConfig(epochs=epochs, **RECIPE)
    engine_run.train(
        MODEL,
        "shapes",
        config,
        out / "run",
        model_kwargs=model_kwargs,
        data_kwargs=data_kwargs,
        report=report,
    )
    metrics = engine_run.evaluate(
        out / "run", "shapes", "test", data_kwargs=data_kwargs, pr_plot=out / "pr_curve.png"
    )
    test = ShapesWorld("test", **data_kwargs)
    pictures = min(pictures, len(test))
    files = []
    for i in range(pictures):
        image, target = test[i]
        path = out / "images" / f"test_{i:03d}.png"
        write_image(path, image)
        files.append(path)
        truth = draw_boxes(image, target["boxes"], target["labels"], class_names=test.categories)
        save_png(out / "ground_truth" / f"test_{i:03d}.png", truth)
    predict_images(out / "run", files, out / "predictions", score_threshold=0.5)
    return metrics


def run_segmentation_demo(
    out: str | Path = "out/demo",
    epochs: int = 2,
    pictures: int = 8,
    data_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``SEG_MODEL`` on the shapes world's semantic label maps, evaluate, draw; test metrics.

    Files: the run in ``<out>/segmentation/run``, label maps predicted on the first ``pictures``
    test images in ``<out>/segmentation/predictions/`` (overlay + label PNG) and the truth beside
    them in ``<out>/segmentation/ground_truth/``.
    """
    root = Path(out) / "segmentation"
    data_kwargs = data_kwargs or {}
    config = TrainConfig(epochs=epochs, eval_every=epochs, **SEG_RECIPE)
    engine_run.train(
        SEG_MODEL,
        "shapes",
        config,
        root / "run",
        model_kwargs=model_kwargs,
        data_kwargs=data_kwargs,
        report=report,
    )
    metrics = engine_run.evaluate(root / "run", "shapes", "test", data_kwargs=data_kwargs)
    test = ShapesWorld("test", **data_kwargs)
    files = []
    for i in range(min(pictures, len(test))):
        image, target = test[i]
        path = root / "images" / f"test_{i:03d}.png"
        write_image(path, image)
        files.append(path)
        save_png(root / "ground_truth" / f"test_{i:03d}.png", overlay_label_map(image, target["semantic"]))
    predict_images(root / "run", files, root / "predictions")
    return metrics
