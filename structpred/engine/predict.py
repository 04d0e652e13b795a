"""``structpred predict``: a trained model on image files -> drawn PNGs + a json of predictions.

Output, in ``out_dir``, by the model's task:

* detection / instance segmentation: ``<image stem>.png`` for every input (boxes with class
  names and scores at or above ``score_threshold``; instance masks, thresholded at 0.5, tinted
  under them), and ``predictions.json``, a COCO *results* list (``image_id``, ``category_id``,
  ``bbox`` as ``[x, y, w, h]``, ``score``, ``file_name``, and for masks ``segmentation`` as
  COCO RLE) holding every detection the model returned, so it can be scored at any threshold.
* semantic segmentation: ``<image stem>.png`` (the predicted label map blended over the image),
  ``<image stem>_labels.png`` (the label map itself, one grey level = one class index), and
  ``predictions.json`` listing per image its files and the pixel count of every class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.images import read_image
from ..viz import draw_boxes, draw_masks, overlay_label_map, save_png
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

    Raises ``ValueError`` for no images, an unreadable image (naming it), or a model that
    predicts neither boxes nor label maps.
    """
    if not images:
        raise ValueError("no images given to predict on")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    model, config = load_model(checkpoint)
    task = getattr(model, "task", None)
    if task not in ("detection", "instance_segmentation", "semantic_segmentation"):
        raise ValueError(f"{config.model_name} predicts no boxes, masks or label maps (task {task!r})")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    names = config.class_names
    ids = config.category_ids or list(range(1, len(names) + 1))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in images]
    pictures = [read_image(p) for p in paths]  # validates every file before any work
    if task == "semantic_segmentation":
        return _predict_label_maps(model, pictures, paths, out, dev)
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
                picture = image
                if "masks" in pred:
                    masks = pred["masks"][:, 0].cpu() > 0.5  # (N, 1, H, W) probabilities -> (N, H, W)
                    first = len(results) - len(boxes)
                    for r, rle in zip(results[first:], _rle(masks), strict=True):
                        r["segmentation"] = rle
                    keep = scores >= score_threshold
                    picture = draw_masks(picture, masks[keep])
                picture = draw_boxes(
                    picture, boxes, labels, scores, class_names=names or None, score_threshold=score_threshold
                )
                save_png(out / f"{paths[index].stem}.png", picture)
    json_path = out / "predictions.json"
    json_path.write_text(json.dumps(results), encoding="utf-8")
    logger.info("%d detections on %d images -> %s", len(results), len(paths), out)
    return json_path


def _rle(masks: Tensor) -> list[dict[str, Any]]:
    """COCO run-length encodings (``counts`` as str) of ``bool[N, H, W]`` masks."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    encoded = mask_utils.encode(
        np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))
    )  # (H, W, N)
    return [{"size": e["size"], "counts": e["counts"].decode("ascii")} for e in encoded]


def _predict_label_maps(
    model: torch.nn.Module, pictures: list[Tensor], paths: list[Path], out: Path, dev: torch.device
) -> Path:
    """Label maps of a semantic segmenter, one image at a time (sizes may differ)."""
    from PIL import Image

    summary: list[dict[str, Any]] = []
    with torch.no_grad():
        for path, image in zip(paths, pictures, strict=True):
            preds, _ = model([image.to(dev)])
            labels = preds["logits"][0].argmax(0).cpu()  # (K, H, W) -> (H, W)
            K = preds["logits"].shape[1]
            if K > 256:
                raise ValueError(f"{K} classes do not fit an 8-bit label PNG")
            save_png(out / f"{path.stem}.png", overlay_label_map(image, labels))
            label_png = out / f"{path.stem}_labels.png"
            Image.fromarray(labels.to(torch.uint8).numpy(), mode="L").save(label_png)
            counts = torch.bincount(labels.reshape(-1), minlength=K).tolist()  # (H*W,) -> (K,)
            summary.append({"file_name": str(path), "labels_png": label_png.name, "class_pixels": counts})
    json_path = out / "predictions.json"
    json_path.write_text(json.dumps(summary), encoding="utf-8")
    logger.info("label maps of %d images -> %s", len(paths), out)
    return json_path
