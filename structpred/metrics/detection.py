"""COCO mean average precision (boxes, masks or keypoints), our own implementation of the COCO protocol.

Shape shorthand:
    N: detections or gts of one image, D / G: detections / gts of all images, K: classes seen,
    T: IoU thresholds, R: recall thresholds, A: area ranges (all, small, medium, large),
    M: max-detection limits.

Convention: inputs follow torchvision (boxes xyxy in absolute pixels). IoUs and areas are
computed in float64 the way pycocotools computes them from (x, y, w, h) boxes and RLE masks,
so results equal ``COCOeval(...).stats``. The class set is every label seen in predictions or
targets; a class with no gt is -1 everywhere and left out of the means, as in pycocotools.
Limits on detections apply per image *and class*, as in COCOeval. Keypoints (OKS in place of
IoU, COCO's keypoint area ranges and limit, gts without labelled keypoints ignored) are
described in :mod:`structpred.metrics.keypoints`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .detection_accumulate import accumulate, coco_iou_thresholds, coco_rec_thresholds, per_class, summarize
from .detection_inputs import ImageBatch, check_batch
from .detection_match import box_pair_iou, greedy_match, group_pairs, rank_in_groups
from .keypoints import (
    KEYPOINT_AREA_NAMES,
    KEYPOINT_AREA_RANGES,
    KEYPOINT_MAX_DETECTIONS,
    check_sigmas,
    summarize_keypoints,
)

logger = logging.getLogger(__name__)

AREA_NAMES = ("all", "small", "medium", "large")
# COCO's area ranges in pixels (both ends inclusive, as in COCOeval.evaluateImg).
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))


@dataclass
class COCOEvalResult:
    """Everything ``COCOeval.accumulate`` / ``summarize`` produce, in COCOeval's layout.

    ``precision[t, r, k, a, m]`` is the interpolated precision at ``rec_thresholds[r]`` for IoU
    threshold ``t``, class ``classes[k]``, area range ``area_names[a]`` and limit
    ``max_detection_thresholds[m]``; ``recall[t, k, a, m]`` the final recall. -1 where the
    class has no regular gt in that area range.
    """

    precision: Tensor  # (T, R, K, A, M) float64
    recall: Tensor  # (T, K, A, M) float64
    classes: Tensor  # (K,) int64 labels
    iou_thresholds: Tensor  # (T,) float64
    rec_thresholds: Tensor  # (R,) float64
    max_detection_thresholds: tuple[int, ...]
    stats: dict[str, float]
    area_names: tuple[str, ...] = AREA_NAMES  # keypoints: ("all", "medium", "large")


class MeanAveragePrecision:
    """COCO mAP / mAR over a dataset: ``update`` per batch, then ``compute``.

    Args:
        iou_type: ``"bbox"`` (boxes), ``"segm"`` (masks) or ``"keypoints"`` (OKS).
        iou_thresholds: IoU (OKS) thresholds; None means COCO's 0.5:0.05:0.95.
        rec_thresholds: recall points; None means COCO's 101 points 0:0.01:1.
        max_detection_thresholds: limits on detections per image and class; None means
            COCO's (1, 10, 100), or (20,) for keypoints.
        class_metrics: also return ``map_per_class`` and ``mar_<max>_per_class``.
        keypoint_sigmas: per-keypoint OKS sigmas ``[K]`` (keypoints only); None means
            COCO's 17 person sigmas.
    """

    def __init__(
        self,
        iou_type: str = "bbox",
        iou_thresholds: Sequence[float] | None = None,
        rec_thresholds: Sequence[float] | None = None,
        max_detection_thresholds: Sequence[int] | None = None,
        class_metrics: bool = False,
        keypoint_sigmas: Sequence[float] | Tensor | None = None,
    ) -> None:
        if iou_type not in ("bbox", "segm", "keypoints"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm' (or 'keypoints'), got {iou_type!r}")
        if keypoint_sigmas is not None and iou_type != "keypoints":
            raise ValueError(f"keypoint_sigmas is for iou_type='keypoints', not {iou_type!r}")
        self.iou_type = iou_type
        kpts = iou_type == "keypoints"
        self.keypoint_sigmas = check_sigmas(keypoint_sigmas) if kpts else None
        self.area_names = KEYPOINT_AREA_NAMES if kpts else AREA_NAMES
        self.area_ranges = KEYPOINT_AREA_RANGES if kpts else AREA_RANGES
        if max_detection_thresholds is None:
            max_detection_thresholds = KEYPOINT_MAX_DETECTIONS if kpts else (1, 10, 100)
        self.iou_thresholds = _thresholds(iou_thresholds, coco_iou_thresholds(), "iou_thresholds")
        self.rec_thresholds = _thresholds(rec_thresholds, coco_rec_thresholds(), "rec_thresholds")
        limits = list(max_detection_thresholds)
        if not limits or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in limits):
            raise ValueError(
                f"max_detection_thresholds must be positive ints, got {max_detection_thresholds!r}"
            )
        self.max_detection_thresholds = tuple(sorted(limits))
        self.class_metrics = class_metrics
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._batches: list[ImageBatch] = []
        self._result: COCOEvalResult | None = None

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Add a batch of images.

        Args:
            preds: one dict per image: ``boxes`` (Tensor[N, 4] xyxy; needed for bbox),
                ``scores`` (Tensor[N]), ``labels`` (Tensor[N] int), and for segm ``masks``
                (bool/uint8 Tensor[N, H, W]).
            targets: one dict per image: ``boxes`` (Tensor[N, 4] xyxy; needed for bbox),
                ``labels`` (Tensor[N] int), optional ``iscrowd`` (Tensor[N]), optional ``area``
                (Tensor[N]; default: box area, or mask pixel count for segm), and ``masks``
                for segm.

        For keypoints, preds carry ``keypoints`` (Tensor[N, K, 2 or 3], x, y first; ``boxes``
        optional) and targets ``keypoints`` (Tensor[N, K, 3], visibility > 0 = labelled)
        and ``boxes``.
        """
        self._batches.append(check_batch(preds, targets, self.iou_type, self.keypoint_sigmas))
        self._result = None

    def compute(self) -> dict[str, Tensor]:
        """COCO's summary under torchmetrics' names (float32 scalars; -1 where undefined).

        Keys: map, map_50, map_75, map_small, map_medium, map_large, mar_<m> for each limit,
        mar_small, mar_medium, mar_large, classes (keypoints: pycocotools' 10 numbers map,
        map_50, map_75, map_medium, map_large, mar, mar_50, mar_75, mar_medium, mar_large);
        with ``class_metrics`` also map_per_class and mar_<max>_per_class (one value per
        entry of ``classes``).
        """
        result = self.compute_full()
        out = {name: torch.tensor(v, dtype=torch.float32) for name, v in result.stats.items()}
        if self.class_metrics:
            ap, ar = per_class(result.precision, result.recall)
            out["map_per_class"] = ap.float()
            out[f"mar_{self.max_detection_thresholds[-1]}_per_class"] = ar.float()
        out["classes"] = result.classes.to(torch.int32)
        return out

    def compute_full(self) -> COCOEvalResult:
        """The full evaluation: COCOeval's precision / recall arrays and the summary."""
        if self._result is None:
            self._result = self._evaluate()
        return self._result

    def pr_curve(
        self, iou_threshold: float = 0.5, area: str = "all", max_detections: int | None = None
    ) -> dict[int, tuple[Tensor, Tensor]]:
        """Precision-recall curve of each class with gts, for plotting.

        Returns ``{label: (recall [R], precision [R])}`` at the recall thresholds, the
        interpolated precision COCO averages, at one IoU threshold, area range and limit
        (default: the largest).
        """
        result = self.compute_full()
        hit = torch.isclose(result.iou_thresholds, torch.tensor(float(iou_threshold), dtype=torch.float64))
        if not bool(hit.any()):
            raise ValueError(
                f"iou_threshold={iou_threshold} is not one of the metric's iou_thresholds "
                f"{[round(t, 4) for t in result.iou_thresholds.tolist()]}"
            )
        if area not in self.area_names:
            raise ValueError(f"area must be one of {self.area_names}, got {area!r}")
        limit = result.max_detection_thresholds[-1] if max_detections is None else max_detections
        if limit not in result.max_detection_thresholds:
            raise ValueError(
                f"max_detections={max_detections} is not one of {result.max_detection_thresholds}"
            )
        t = int(hit.nonzero()[0])
        a = self.area_names.index(area)
        m = result.max_detection_thresholds.index(limit)
        curves = {}
        for k, label in enumerate(result.classes.tolist()):
            prec = result.precision[t, :, k, a, m]
            if bool((prec > -1).all()):
                curves[label] = (result.rec_thresholds.clone(), prec.clone())
        return curves

    def _evaluate(self) -> COCOEvalResult:
        # numpy throughout (see detection_match): torch only for the stored inputs and results.
        T = self.iou_thresholds.numel()
        A = len(self.area_ranges)
        b = ImageBatch.concat(self._batches)
        det_labels, gt_labels = b.det_labels.numpy(), b.gt_labels.numpy()
        det_counts, gt_counts = b.det_counts.numpy(), b.gt_counts.numpy()
        det_scores = b.det_scores.numpy()
        classes = np.unique(np.concatenate([det_labels, gt_labels]))  # (K,) sorted
        K = classes.size
        num_images = det_counts.size
        logger.debug(
            "COCO eval: %d images, %d detections, %d gts, %d classes",
            num_images, det_labels.size, gt_labels.size, K,
        )  # fmt: skip
        det_image = np.repeat(np.arange(num_images), det_counts)  # (D,)
        gt_image = np.repeat(np.arange(num_images), gt_counts)  # (G,)
        det_cls = np.searchsorted(classes, det_labels)
        gt_cls = np.searchsorted(classes, gt_labels)
        det_group, gt_group = det_image * K + det_cls, gt_image * K + gt_cls

        # Detections by (image, class, rank); only the best max_det of each group count.
        order, rank = rank_in_groups(det_group, det_scores)
        top = rank < self.max_detection_thresholds[-1]
        det, rank = order[top], rank[top]  # (D',) indices into the concatenation
        gt = np.argsort(gt_group, kind="stable")  # (G,) gts by (image, class)
        pair_d, pair_g = group_pairs(det_group[det], gt_group[gt])
        d_idx, g_idx = det[pair_d], gt[pair_g]  # pairs as indices into the concatenations
        crowd = b.gt_crowd.numpy()
        gt_crowd = crowd[gt]
        if self.iou_type == "bbox":  # segm / keypoints: per-image matrices
            pair_iou = box_pair_iou(b.det_boxes.numpy()[d_idx], b.gt_boxes.numpy()[g_idx], crowd[g_idx])
        else:  # look the pairs up in each image's [N_det, N_gt] IoU matrix
            img = det_image[d_idx]
            det_start = np.cumsum(det_counts) - det_counts
            gt_start = np.cumsum(gt_counts) - gt_counts
            mat_start = np.cumsum(det_counts * gt_counts) - det_counts * gt_counts
            flat = mat_start[img] + (d_idx - det_start[img]) * gt_counts[img] + (g_idx - gt_start[img])
            pair_iou = b.ious.numpy()[flat]

        # Evaluation order: class, then score descending, then image and rank (stable sorts).
        # The matching is done in this order directly (detections of one rank step are in
        # different groups, so their order within the step does not matter).
        by_score = np.argsort(-det_scores[det], kind="stable")
        ev = by_score[np.argsort(det_cls[det][by_score], kind="stable")]
        det, rank = det[ev], rank[ev]  # (D',) now in evaluation order
        position = np.empty_like(ev)
        position[ev] = np.arange(ev.size)  # old position in det -> evaluation position
        pair_d = position[pair_d]

        lo = np.array([r[0] for r in self.area_ranges], dtype=np.float64)[:, None]  # (A, 1)
        hi = np.array([r[1] for r in self.area_ranges], dtype=np.float64)[:, None]
        gt_area = b.gt_area.numpy()[gt]
        always = gt_crowd | b.gt_ignore.numpy()[gt]  # crowd, or keypoints without a labelled one
        gt_ignore = always[None, :] | (gt_area[None, :] < lo) | (gt_area[None, :] > hi)  # (A, G)
        iou_thresholds = self.iou_thresholds.numpy()
        matched = greedy_match(pair_d, pair_g, pair_iou, rank, gt_ignore, gt_crowd, iou_thresholds)
        is_matched = matched >= 0  # (A, T, D')
        if gt.size:
            idx = np.maximum(matched, 0).reshape(A, -1)  # (A, T, D') -> (A, T*D')
            matched_ignored = np.take_along_axis(gt_ignore, idx, axis=1).reshape(matched.shape) & is_matched
        else:
            matched_ignored = np.zeros_like(is_matched)
        det_area = b.det_area.numpy()[det]
        outside = ((det_area[None, :] < lo) | (det_area[None, :] > hi))[:, None, :]  # (A, 1, D')
        tp = is_matched & ~matched_ignored
        fp = ~(is_matched | outside)

        num_pos = np.zeros((K, A), dtype=np.int64)
        np.add.at(num_pos, gt_cls[gt], (~gt_ignore).T.astype(np.int64))  # (K, A) regular gts
        precision_np, recall_np = accumulate(
            det_cls[det], rank, tp, fp, num_pos, self.max_detection_thresholds, self.rec_thresholds.numpy()
        )
        precision, recall = torch.from_numpy(precision_np), torch.from_numpy(recall_np)
        if self.iou_type == "keypoints":
            stats = summarize_keypoints(precision, recall, self.iou_thresholds)
        else:
            stats = summarize(precision, recall, self.iou_thresholds, self.max_detection_thresholds)
        assert precision.shape == (T, self.rec_thresholds.numel(), K, A, len(self.max_detection_thresholds))
        return COCOEvalResult(
            precision=precision,
            recall=recall,
            classes=torch.from_numpy(classes.astype(np.int64)),
            iou_thresholds=self.iou_thresholds.clone(),
            rec_thresholds=self.rec_thresholds.clone(),
            max_detection_thresholds=self.max_detection_thresholds,
            stats=stats,
            area_names=self.area_names,
        )


def _thresholds(values: Sequence[float] | None, default: Tensor, name: str) -> Tensor:
    """Validated float64 thresholds in [0, 1], ascending (the default when None)."""
    if values is None:
        return default
    t = torch.as_tensor(list(values), dtype=torch.float64)
    if t.dim() != 1 or t.numel() == 0 or not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(f"{name} must be a non-empty sequence of values in [0, 1], got {list(values)!r}")
    return torch.sort(t).values
