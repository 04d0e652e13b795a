"""Metrics benchmark: structpred.metrics.MeanAveragePrecision against pycocotools, one run.

Cases (the issue's): COCO box mAP over 5,000 images x 100 detections (80 classes, about 7
gts per image); an extra row for mask mAP over 500 images of 128 x 128 with 20 detections
each. Detections are detector-like: jittered copies of the gts (mostly the right class) plus
background boxes, float32 scores. Both sides get the same data: ours as tensors
(``update`` + ``compute``), pycocotools as COCO dicts built beforehand (``loadRes`` +
``evaluate`` + ``accumulate`` + ``summarize``, its printing silenced). The gt ``COCO`` object
is built once, outside the timing. Both sides' summaries are checked to agree first.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..metrics import MeanAveragePrecision
from .timing import Comparison, bench_main, compare

IMAGE_H, IMAGE_W = 480, 640


def detection_set(
    num_images: int,
    dets_per_image: int,
    num_classes: int,
    generator: torch.Generator,
    size: int | None = None,
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Detector-like predictions and gts, torchvision dicts (boxes xyxy float32).

    About 7 gts per image (1..13) of log-uniform size 6..300 px; per image
    ``dets_per_image`` detections: 2 jittered copies of each gt (90 % the right class), the
    rest random boxes. With ``size`` the images are ``size`` x ``size`` and boxes scaled.
    """
    h, w = (size, size) if size else (IMAGE_H, IMAGE_W)
    scale = min(h, w) / min(IMAGE_H, IMAGE_W)
    g = generator
    preds, targets = [], []
    for _ in range(num_images):
        n = int(torch.randint(1, 14, (1,), generator=g))
        wh = torch.exp(torch.empty(n, 2).uniform_(np.log(6), np.log(300), generator=g)) * scale  # (n, 2)
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - wh / 2
        boxes = _clip(torch.cat([xy, xy + wh], 1), h, w)
        labels = torch.randint(1, num_classes + 1, (n,), generator=g)
        k = min(2 * n, dets_per_image)
        src = torch.arange(k) % n
        jitter = torch.randn(k, 4, generator=g) * 0.12 * wh[src].repeat(1, 2)
        copies = _clip(boxes[src] + jitter, h, w)
        right = torch.rand(k, generator=g) < 0.9
        copy_labels = torch.where(right, labels[src], torch.randint(1, num_classes + 1, (k,), generator=g))
        r = dets_per_image - k
        rwh = torch.exp(torch.empty(r, 2).uniform_(np.log(6), np.log(300), generator=g)) * scale
        rxy = torch.rand(r, 2, generator=g) * torch.tensor([w, h]) - rwh / 2
        background = _clip(torch.cat([rxy, rxy + rwh], 1), h, w)
        scores = torch.cat([0.3 + 0.7 * torch.rand(k, generator=g), 0.6 * torch.rand(r, generator=g)])
        preds.append(
            {
                "boxes": torch.cat([copies, background]),
                "scores": scores,
                "labels": torch.cat([copy_labels, torch.randint(1, num_classes + 1, (r,), generator=g)]),
            }
        )
        targets.append({"boxes": boxes, "labels": labels})
    return preds, targets


def _clip(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Clip xyxy boxes to the image and give each at least 1 px."""
    x1 = boxes[:, 0].clamp(0, w - 1)
    y1 = boxes[:, 1].clamp(0, h - 1)
    x2 = torch.maximum(boxes[:, 2].clamp(0, w), x1 + 1)
    y2 = torch.maximum(boxes[:, 3].clamp(0, h), y1 + 1)
    return torch.stack([x1, y1, x2, y2], 1)


def box_masks(boxes: torch.Tensor, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """Elliptic masks ``uint8[N, h, w]`` inscribed in the boxes, with some pixel noise."""
    ys = torch.arange(h, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, None, :] + 0.5
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None, None]
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None, None]
    rx = ((boxes[:, 2] - boxes[:, 0]) / 2).clamp(min=0.5)[:, None, None]
    ry = ((boxes[:, 3] - boxes[:, 1]) / 2).clamp(min=0.5)[:, None, None]
    inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1  # (N, h, w)
    flip = torch.rand(inside.shape, generator=generator) < 0.02
    return (inside ^ (flip & inside)).to(torch.uint8)


def to_coco(
    preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], iou_type: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same data as a COCO gt dataset dict and a COCO results list (for pycocotools)."""
    from pycocotools import mask as mask_utils  # the peer, only to be measured against

    def rle(m: torch.Tensor) -> dict[str, Any]:
        return dict(mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8))))

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    cats: set[int] = set()
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        h, w = t["masks"].shape[1:] if iou_type == "segm" else (IMAGE_H, IMAGE_W)
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
        for j, label in enumerate(t["labels"].tolist()):
            cats.add(label)
            x1, y1, x2, y2 = t["boxes"][j].double().tolist()
            ann = {
                "id": len(anns) + 1,
                "image_id": i + 1,
                "category_id": label,
                "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
            }
            if iou_type == "segm":
                ann["segmentation"] = rle(t["masks"][j])
                ann["area"] = float(t["masks"][j].sum())
            anns.append(ann)
        for j, label in enumerate(p["labels"].tolist()):
            cats.add(label)
            det: dict[str, Any] = {"image_id": i + 1, "category_id": label, "score": float(p["scores"][j])}
            if iou_type == "segm":
                det["segmentation"] = rle(p["masks"][j])
            else:
                x1, y1, x2, y2 = p["boxes"][j].double().tolist()
                det["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            dets.append(det)
    gt = {"images": images, "annotations": anns, "categories": [{"id": c} for c in sorted(cats)]}
    return gt, dets


def _peer(gt: dict[str, Any], dets: list[dict[str, Any]], iou_type: str) -> Callable[[], Any]:
    """pycocotools' evaluation as a callable (gt indexed once, outside the timing)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()

    def run() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes adds a numpy 'bbox' to mask results, which breaks a second loadRes of
            # the same dicts: give it fresh ones (box results it only re-sets, no copy needed).
            coco_dt = coco_gt.loadRes([dict(d) for d in dets] if iou_type == "segm" else dets)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev.stats

    return run


def _ours(
    preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], iou_type: str
) -> Callable[[], dict[str, torch.Tensor]]:
    def run() -> dict[str, torch.Tensor]:
        metric = MeanAveragePrecision(iou_type=iou_type)
        metric.update(preds, targets)
        return metric.compute()

    return run


def _check_agree(name: str, ours: dict[str, torch.Tensor], peer: Any) -> None:
    keys = [
        "map",
        "map_50",
        "map_75",
        "map_small",
        "map_medium",
        "map_large",
        "mar_1",
        "mar_10",
        "mar_100",
        "mar_small",
        "mar_medium",
        "mar_large",
    ]
    diff = float(np.abs(np.array([float(ours[k]) for k in keys]) - np.asarray(peer)).max())
    if diff > 1e-6:
        raise RuntimeError(f"{name}: structpred and pycocotools disagree (max |diff| = {diff:.3g})")


def run(repeats: int = 3, threads: int = 2, quick: bool = False) -> list[Comparison]:
    """Run every case; ``quick`` shrinks inputs (for smoke tests, not for figures)."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    n_box, n_segm = (50, 10) if quick else (5000, 500)
    box_preds, box_targets = detection_set(n_box, 100, 80, g)
    segm_preds, segm_targets = detection_set(n_segm, 20, 10, g, size=128)
    for p, t in zip(segm_preds, segm_targets, strict=True):
        p["masks"] = box_masks(p["boxes"], 128, 128, g)
        t["masks"] = box_masks(t["boxes"], 128, 128, g)
    cases = [
        (f"COCO bbox mAP ({n_box:,} images x 100 dets, 80 classes)", box_preds, box_targets, "bbox", 0.5),
        (
            f"COCO segm mAP ({n_segm:,} images 128x128 x 20 dets, extra)",
            segm_preds,
            segm_targets,
            "segm",
            None,
        ),
    ]
    rows = []
    for name, preds, targets, iou_type, target in cases:
        gt, dets = to_coco(preds, targets, iou_type)
        peer = _peer(gt, dets, iou_type)
        ours = _ours(preds, targets, iou_type)
        _check_agree(name, ours(), peer())  # also the warm-up
        rows.append(compare(name, ours, peer, repeats=repeats, warmup=0, target=target))
    return rows


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown table."""
    return bench_main("metrics", __doc__, run, "pycocotools", 3, argv)


if __name__ == "__main__":
    main()
