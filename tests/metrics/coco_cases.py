"""The peer for the mAP tests: pycocotools' ``COCOeval`` on our torchvision-style dicts, plus case builders.

``coco_eval`` writes the gt dataset and the results list itself (xywh boxes, ``area``,
``iscrowd``, RLE masks, labels as category ids, annotation ids from 1 because pycocotools
reads an id of 0 as "unmatched"), so a mistake in ``structpred.bench.metrics.to_coco`` cannot
hide one in the metric. ``random_set`` starts from the benchmark's detector-like generator
and adds what it lacks: score ties, crowd gts, images without predictions or gts, a class
seen only in predictions.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from structpred.bench.metrics import box_masks, detection_set
from structpred.metrics import MeanAveragePrecision

# torchmetrics' names in the order of COCOeval.stats.
STAT_NAMES = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)  # fmt: skip
PRED_ONLY_LABEL = 99  # a class that never appears in the gts

Dicts = list[dict[str, torch.Tensor]]


def _rle(mask: torch.Tensor) -> dict[str, Any]:
    return dict(mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8))))


def _xywh(box: torch.Tensor) -> list[float]:
    x1, y1, x2, y2 = box.double().tolist()
    return [x1, y1, x2 - x1, y2 - y1]


def coco_eval(
    preds: Dicts,
    targets: Dicts,
    iou_type: str = "bbox",
    max_dets: tuple[int, ...] = (1, 10, 100),
    iou_thrs: list[float] | None = None,
    rec_thrs: list[float] | None = None,
    summarize: bool = True,
) -> COCOeval:
    """pycocotools' evaluation of the same data (evaluate + accumulate [+ summarize]).

    ``max_dets``, ``iou_thrs``, ``rec_thrs`` set ``COCOeval.params`` (None: COCO's defaults).
    """
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    cats: set[int] = set()
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        image: dict[str, Any] = {"id": i + 1}
        if iou_type == "segm":  # annToRLE reads the size even for RLE segmentations
            image["height"], image["width"] = t["masks"].shape[1:]
        images.append(image)
        g = t["labels"].numel()
        crowd = t.get("iscrowd", torch.zeros(g, dtype=torch.int64))
        for j, label in enumerate(t["labels"].tolist()):
            cats.add(label)
            ann: dict[str, Any] = {"id": len(anns) + 1, "image_id": i + 1, "category_id": label}
            ann["iscrowd"] = int(crowd[j])
            if iou_type == "segm":
                ann["segmentation"] = _rle(t["masks"][j])
                ann["area"] = float(t["masks"][j].sum())
            else:
                ann["bbox"] = _xywh(t["boxes"][j])
                ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            if "area" in t:
                ann["area"] = float(t["area"][j])
            anns.append(ann)
        for j, label in enumerate(p["labels"].tolist()):
            cats.add(label)
            res: dict[str, Any] = {"image_id": i + 1, "category_id": label, "score": float(p["scores"][j])}
            if iou_type == "segm":
                res["segmentation"] = _rle(p["masks"][j])
            else:
                res["bbox"] = _xywh(p["boxes"][j])
            results.append(res)
    categories = [{"id": c} for c in sorted(cats)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": categories}
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes needs at least one result; an empty result set indexed by hand
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "annotations": [], "categories": categories}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.maxDets = list(max_dets)
        if iou_thrs is not None:
            ev.params.iouThrs = np.array(iou_thrs, dtype=np.float64)
        if rec_thrs is not None:
            ev.params.recThrs = np.array(rec_thrs, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        if summarize:
            ev.summarize()
    return ev


def ours(preds: Dicts, targets: Dicts, iou_type: str = "bbox", **kwargs: Any) -> MeanAveragePrecision:
    metric = MeanAveragePrecision(iou_type=iou_type, **kwargs)
    metric.update(preds, targets)
    return metric


def assert_matches_coco(metric: MeanAveragePrecision, ev: COCOeval) -> None:
    """All 12 stats within 1e-6, the precision / recall arrays, per-class AP / AR and the PR curves."""
    out = metric.compute()
    got = np.array([float(out[k]) for k in STAT_NAMES])
    diff = np.abs(got - ev.stats)
    assert diff.max() <= 1e-6, "\n".join(
        f"{k:11s} ours {a:+.8f} pycocotools {b:+.8f}"
        for k, a, b in zip(STAT_NAMES, got, ev.stats, strict=True)
    )
    full = metric.compute_full()
    assert full.classes.tolist() == ev.params.catIds
    np.testing.assert_allclose(full.precision.numpy(), ev.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(full.recall.numpy(), ev.eval["recall"], rtol=0, atol=1e-12)
    assert_per_class_matches(metric, ev)


def mean_valid(a: np.ndarray) -> float:
    v = a[a > -1]
    return float(v.mean()) if v.size else -1.0


def assert_per_class_matches(metric: MeanAveragePrecision, ev: COCOeval) -> None:
    """``map_per_class`` / ``mar_100_per_class`` and ``pr_curve`` against COCOeval's arrays."""
    metric.class_metrics = True
    try:
        out = metric.compute()
    finally:
        metric.class_metrics = False
    prec, rec = ev.eval["precision"], ev.eval["recall"]  # (T, R, K, A, M), (T, K, A, M)
    limit = metric.max_detection_thresholds[-1]
    assert out["classes"].tolist() == ev.params.catIds
    for k, cat in enumerate(ev.params.catIds):
        assert abs(float(out["map_per_class"][k]) - mean_valid(prec[:, :, k, 0, -1])) <= 1e-6, cat
        assert abs(float(out[f"mar_{limit}_per_class"][k]) - mean_valid(rec[:, k, 0, -1])) <= 1e-6, cat
    areas = ("all", "small", "medium", "large")
    for t, iou in ((0, 0.5), (5, 0.75), (9, 0.95)):
        assert abs(ev.params.iouThrs[t] - iou) < 1e-9
        for a, area in enumerate(areas):
            curves = metric.pr_curve(iou_threshold=iou, area=area)
            with_gts = [cat for k, cat in enumerate(ev.params.catIds) if (prec[t, :, k, a, -1] > -1).all()]
            assert sorted(curves) == with_gts, (iou, area)
            for k, cat in enumerate(ev.params.catIds):
                if cat in curves:
                    recall, precision = curves[cat]
                    np.testing.assert_allclose(recall.numpy(), ev.params.recThrs, rtol=0, atol=0)
                    np.testing.assert_allclose(precision.numpy(), prec[t, :, k, a, -1], rtol=0, atol=1e-12)


def random_set(
    seed: int,
    iou_type: str = "bbox",
    num_images: int = 8,
    dets_per_image: int = 30,
    num_classes: int = 4,
    size: int = 128,
    random_scores: bool = False,
) -> tuple[Dicts, Dicts]:
    """Detector-like predictions and gts with every awkward case of the COCO protocol.

    Scores on a grid of 1/8 (ties within and across images); about 15 % crowd gts; image 1 has
    no predictions, image 2 no gts, image 3 neither; a few detections of ``PRED_ONLY_LABEL``;
    one zero-width detection. ``random_scores``: scores uniform, unrelated to the match, so
    true positives also sit beyond the 100th detection. Segm images are ``size`` x ``size``.
    """
    g = torch.Generator().manual_seed(seed)
    segm = iou_type == "segm"
    preds, targets = detection_set(num_images, dets_per_image, num_classes, g, size=size if segm else None)
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        n, m = p["labels"].numel(), t["labels"].numel()
        if random_scores:
            p["scores"] = torch.rand(n, generator=g)
        p["scores"] = (p["scores"] * 8).round() / 8
        t["iscrowd"] = (torch.rand(m, generator=g) < 0.15).to(torch.uint8)
        if i == 0 and n:
            p["labels"][: min(3, n)] = PRED_ONLY_LABEL
            p["boxes"][-1, 2] = p["boxes"][-1, 0]  # zero width: area 0, IoU 0
        if segm:
            h, w = size, size
            p["masks"] = box_masks(p["boxes"], h, w, g)
            t["masks"] = box_masks(t["boxes"], h, w, g)
        if i in (1, 3):
            p.update({k: v[:0] for k, v in p.items()})
        if i in (2, 3):
            t.update({k: v[:0] for k, v in t.items()})
    return preds, targets


def jitter(boxes: torch.Tensor, scale: float, g: torch.Generator) -> torch.Tensor:
    """xyxy boxes moved by Gaussian noise of ``scale`` x their size, kept ordered and >= 1 px."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    out = boxes + torch.randn(boxes.shape, generator=g) * scale * wh
    x1, y1 = out[:, 0], out[:, 1]
    return torch.stack([x1, y1, torch.maximum(out[:, 2], x1 + 1), torch.maximum(out[:, 3], y1 + 1)], 1)
