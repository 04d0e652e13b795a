"""``structpred predict``: a trained detector on image files -> drawn PNGs + a COCO results json.

Output, in ``out_dir``: ``<image stem>.png`` for every input (boxes with class names and scores
at or above ``score_threshold``), and ``predictions.json``, a COCO *results* list
(``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]``, ``score``, plus ``file_name``)
holding every detection the model returned, so it can be scored later with any threshold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.images import read_image
from ..viz import draw_boxes, save_png
from .run import load_model

logger = logging.getLogger(__name__)


def predict_images(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    score_threshold: float = 0.5,
    device: str | None = None,
    batch_size: int = 4,
) -> Path:
    """Run the checkpoint's model on ``images``; returns the path of ``predictions.json``.

    Raises ``ValueError`` for no images, an unreadable image (naming it), or a model that does
    not predict boxes.
    """
    if not images:
        raise ValueError("no images given to predict on")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    model, config = load_model(checkpoint)
    if getattr(model, "task", None) not in ("detection", "instance_segmentation"):
        raise ValueError(f"{config.model_name} predicts no boxes (task {getattr(model, 'task', None)!r})")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    names = config.class_names
    ids = config.category_ids or list(range(1, len(names) + 1))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in images]
    pictures = [read_image(p) for p in paths]  # validates every file before any work
    results: list[dict[str, Any]] = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            chunk = pictures[start : start + batch_size]
            preds, _ = model([im.to(dev) for im in chunk])
            for k, (image, pred) in enumerate(zip(chunk, preds, strict=True)):
                index = start + k
                boxes, scores, labels = (pred[key].cpu() for key in ("boxes", "scores", "labels"))
                for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
                    x1, y1, x2, y2 = box
                    category = ids[label - 1] if 0 < label <= len(ids) else label
                    results.append({
                        "image_id": index, "file_name": str(paths[index]), "category_id": int(category),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score,
                    })  # fmt: skip
                picture = draw_boxes(
                    image, boxes, labels, scores, class_names=names or None, score_threshold=score_threshold
                )
                save_png(out / f"{paths[index].stem}.png", picture)
    json_path = out / "predictions.json"
    json_path.write_text(json.dumps(results), encoding="utf-8")
    logger.info("%d detections on %d images -> %s", len(results), len(paths), out)
    return json_path
