"""Object detection and instance segmentation: boxes (and masks) per image, COCO AP.

Shape shorthand: B images, N detections of an image, K object classes (background excluded),
H x W an image's own size.

Targets (torchvision's keys): ``boxes`` float ``[N, 4]`` xyxy absolute pixels, ``labels``
int64 ``[N]`` in ``1..K``; instance segmentation adds ``masks`` uint8 ``[N, H, W]``.
Predictions: a list of B dicts, ``boxes`` float ``[N, 4]`` (xyxy, the input image's pixels),
``scores`` float ``[N]``, ``labels`` int64 ``[N]`` in ``1..K``; instance segmentation adds
``masks`` float ``[N, 1, H, W]`` (probabilities).

``num_classes`` counts object classes, background excluded (``len(dataset.categories)``);
the models add their background class themselves.

``structpred predict`` writes ``<stem>.png`` per image or frame (boxes with class names and
scores at or above the threshold, masks tinted under them) and ``predictions.json``, a COCO
*results* list (``image_id``, ``file_name``, ``category_id`` — the data's own ids when known —
``bbox`` ``[x, y, w, h]``, ``score``, and for masks ``segmentation`` as compressed COCO RLE)
holding every detection, so pycocotools' ``loadRes`` + ``COCOeval`` score it at any threshold
(:mod:`structpred.tasks.predict_loop`). On a video, the detections at or above the threshold are
also linked into tubes (:meth:`DetectionTask.finish_video`): rows get a ``track_id`` and
``<video stem>_tubes.txt`` lists the tubes as MOTChallenge rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.formats.coco import mask_to_rle
from ..ops.linking import link_online, tubes_to_mot_rows
from ..viz import draw_boxes, draw_masks, to_uint8_image
from .base import (
    Headline,
    ItemOutput,
    Metric,
    PredictJob,
    Targets,
    Task,
    expect_items,
    expect_tensor,
    register_task,
)

logger = logging.getLogger(__name__)


def _num_object_classes(model: nn.Module) -> int:
    k = getattr(model, "num_classes", None)
    if not isinstance(k, int):
        raise ValueError(f"{type(model).__name__} has no int num_classes (object classes)")
    return k


#: The online linker of ``structpred predict`` on a video (tubes): IoU gate, frames a track
#: survives unmatched, frames before it is confirmed (experiments/RESULTS_tubes.md: the best
#: online setting on re-linked TUD and shapes-video boxes).
TUBE_LINKER: dict[str, Any] = {"iou_threshold": 0.3, "max_age": 5, "min_hits": 2}


class DetectionTask(Task):
    """Boxes, scores and labels per image; COCO box AP."""

    name = "detection"
    target_keys = {"boxes": "float[N, 4] xyxy pixels", "labels": "int64[N] in 1..K"}
    prediction_keys = {
        "boxes": "float[N, 4] xyxy pixels of the input image",
        "scores": "float[N]",
        "labels": "int64[N] in 1..K",
    }
    num_classes_rule = "object classes, background excluded (len(dataset.categories))"
    iou_type = "bbox"
    headline = Headline("map", True, "box AP (COCO)")

    def model_kwargs(self, dataset: Dataset | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        categories = getattr(dataset, "categories", None)
        if categories is not None:
            out.setdefault("num_classes", len(categories))
        return out

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics import MeanAveragePrecision

        iou_type = self.iou_type
        return lambda: MeanAveragePrecision(iou_type=iou_type)

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        for i, p in enumerate(expect_items(predictions, batch_size, list(self.prediction_keys), self.name)):
            n = p["boxes"].shape[0] if isinstance(p["boxes"], Tensor) else -1
            expect_tensor(p["boxes"], f"predictions[{i}]['boxes']", [n, 4], "float")
            expect_tensor(p["scores"], f"predictions[{i}]['scores']", [n], "float")
            expect_tensor(p["labels"], f"predictions[{i}]['labels']", [n], "int")
            if "masks" in p:
                expect_tensor(p["masks"], f"predictions[{i}]['masks']", [n, 1, None, None], "float")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        K = _num_object_classes(model)
        images, targets = [], []
        for b in range(batch_size):
            H, W = 64 + 8 * b, 80 - 8 * b  # sizes differ within the batch
            images.append(torch.rand(3, H, W, generator=g))
            xy = torch.rand(3, 2, generator=g) * torch.tensor([W / 2, H / 2])  # (N, 2) top-left corners
            wh = 8 + torch.rand(3, 2, generator=g) * torch.tensor([W / 3, H / 3])
            boxes = torch.cat([xy, xy + wh], 1)  # (N, 4) xyxy, inside the image
            target: dict[str, Any] = {
                "boxes": boxes,
                "labels": torch.randint(1, K + 1, (3,), generator=g),
                "image_id": torch.tensor(b),
            }
            if self.iou_type == "segm":
                masks = torch.zeros(3, H, W, dtype=torch.uint8)
                for n, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
                    masks[n, y1:y2, x1:x2] = 1
                target["masks"] = masks
            targets.append(target)
        return images, targets

    def predict_batch(self, model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
        preds, _ = model(images)
        ids = list(job.category_ids) or list(range(1, len(job.class_names) + 1))
        names = list(job.class_names) or None
        outputs = []
        for image, pred in zip(images, preds, strict=True):
            boxes, scores, labels = (pred[key].cpu() for key in ("boxes", "scores", "labels"))
            rows: list[dict[str, Any]] = []
            for (x1, y1, x2, y2), score, label in zip(
                boxes.tolist(), scores.tolist(), labels.tolist(), strict=True
            ):
                category = ids[label - 1] if 0 < label <= len(ids) else label
                rows.append(
                    {"category_id": int(category), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
                )
            picture = to_uint8_image(image)
            if "masks" in pred:
                masks = pred["masks"][:, 0].cpu() > 0.5  # (N, 1, H, W) probabilities -> (N, H, W)
                for row, mask in zip(rows, masks, strict=True):
                    row["segmentation"] = mask_to_rle(mask)
                picture = draw_masks(picture, masks[scores >= job.score_threshold])
            picture = draw_boxes(
                picture, boxes, labels, scores, class_names=names, score_threshold=job.score_threshold
            )
            outputs.append(ItemOutput(rows, picture))
        return outputs

    def finish_video(self, rows: list[dict[str, Any]], stem: Path, job: PredictJob) -> list[str]:
        """Link a video's detections into tubes: the online linker (Hungarian on IoU, same class,
        :class:`~structpred.ops.linking.OnlineLinker` with ``TUBE_LINKER``) over the detections at
        or above ``job.score_threshold``; each linked row gets its ``track_id``, and
        ``<video stem>_tubes.txt`` holds the tubes as MOTChallenge rows
        (``frame, id, x, y, w, h, score, -1, -1, -1``; frames 1-based)."""
        frames = [int(row["frame"]) for row in rows]
        count = max(frames, default=-1) + 1
        per_frame: list[list[dict[str, Any]]] = [[] for _ in range(count)]
        for row in rows:
            if row["score"] >= job.score_threshold:
                per_frame[int(row["frame"])].append(row)
        boxes, scores, labels = [], [], []
        for kept in per_frame:
            xywh = torch.tensor([r["bbox"] for r in kept], dtype=torch.float32).reshape(-1, 4)
            boxes.append(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))  # (N, 4) xyxy
            scores.append(torch.tensor([r["score"] for r in kept], dtype=torch.float32))
            labels.append(torch.tensor([r["category_id"] for r in kept], dtype=torch.int64))
        tubes = link_online(boxes, scores, labels, **TUBE_LINKER)
        for tube in tubes:
            for frame, index in zip(tube.frames.tolist(), tube.detections.tolist(), strict=True):
                per_frame[frame][index]["track_id"] = tube.track_id
        path = job.out / f"{stem}_tubes.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"{int(f)},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.5f},-1,-1,-1"
            for f, i, x, y, w, h, s in tubes_to_mot_rows(tubes, first_frame=1).tolist()
        ]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        logger.info("%d tubes over %d frames -> %s", len(tubes), count, path)
        return [str(path.relative_to(job.out))]


class InstanceSegmentationTask(DetectionTask):
    """Detection plus a mask per object; COCO mask AP."""

    name = "instance_segmentation"
    target_keys = {**DetectionTask.target_keys, "masks": "uint8[N, H, W]"}
    prediction_keys = {**DetectionTask.prediction_keys, "masks": "float[N, 1, H, W] probabilities"}
    iou_type = "segm"
    headline = Headline("map", True, "mask AP (COCO)")


register_task(DetectionTask())
register_task(InstanceSegmentationTask())
