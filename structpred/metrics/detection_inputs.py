"""Validation and flat storage of ``MeanAveragePrecision.update``'s inputs.

Each ``update`` becomes one :class:`ImageBatch`: the batch's detections and gts concatenated
(float64 boxes as pycocotools' x, y, w, h, areas, labels, crowd flags) plus per-image counts.
For masks the per-image IoU matrices are computed here and the masks themselves dropped, so
memory grows with the number of objects, not pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .detection_masks import mask_ious
from .keypoints import keypoint_extent_area, oks_matrix


@dataclass
class ImageBatch:
    """Detections and gts of some images, concatenated image after image."""

    det_boxes: Tensor  # (D, 4) float64 xywh (zeros for segm without boxes)
    det_scores: Tensor  # (D,) float64
    det_labels: Tensor  # (D,) int64
    det_area: Tensor  # (D,) float64: box area or mask pixel count
    det_counts: Tensor  # (I,) int64 detections per image
    gt_boxes: Tensor  # (G, 4) float64 xywh
    gt_labels: Tensor  # (G,) int64
    gt_crowd: Tensor  # (G,) bool
    gt_area: Tensor  # (G,) float64
    gt_counts: Tensor  # (I,) int64
    ious: Tensor  # (sum_i D_i * G_i,) float64 mask IoUs or OKS, row-major per image (segm, keypoints)
    gt_ignore: Tensor  # (G,) bool: ignored in every area range (keypoints: no labelled keypoint)

    @staticmethod
    def concat(batches: Sequence[ImageBatch]) -> ImageBatch:
        """All batches as one (an empty batch when there are none)."""
        if not batches:
            return _empty()
        if len(batches) == 1:  # nothing to join (nobody writes to a batch's tensors)
            return batches[0]
        return ImageBatch(*(torch.cat([getattr(b, f.name) for b in batches]) for f in fields(ImageBatch)))


def _empty() -> ImageBatch:
    f64, i64 = torch.float64, torch.int64
    return ImageBatch(
        torch.zeros(0, 4, dtype=f64), torch.zeros(0, dtype=f64), torch.zeros(0, dtype=i64),
        torch.zeros(0, dtype=f64), torch.zeros(0, dtype=i64), torch.zeros(0, 4, dtype=f64),
        torch.zeros(0, dtype=i64), torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=f64),
        torch.zeros(0, dtype=i64), torch.zeros(0, dtype=f64), torch.zeros(0, dtype=torch.bool),
    )  # fmt: skip


def xyxy_to_xywh64(boxes: Tensor) -> Tensor:
    """Boxes ``[N, 4]`` xyxy -> float64 xywh, the form pycocotools computes with."""
    b = boxes.to(torch.float64)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1)


def _tensor(d: dict[str, Tensor], key: str, where: str) -> Tensor:
    if key not in d:
        raise ValueError(f"{where} is missing the key {key!r} (has {sorted(d)})")
    t = d[key]
    if not isinstance(t, Tensor):
        raise ValueError(f"{where}[{key!r}] must be a Tensor, got {type(t).__name__}")
    return t.detach().cpu()


def _vector(d: dict[str, Tensor], key: str, where: str, n: int | None, kind: str) -> Tensor:
    """A 1-D tensor of length ``n`` (any when None); ``kind`` 'int', 'float' or 'any'."""
    t = _tensor(d, key, where)
    if t.dim() != 1 or (n is not None and t.shape[0] != n):
        want = f"[{n}]" if n is not None else "[N]"
        raise ValueError(f"{where}[{key!r}] must have shape {want}, got {tuple(t.shape)}")
    if kind == "int" and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise ValueError(f"{where}[{key!r}] must be an integer tensor, got {t.dtype}")
    if kind == "float" and not t.is_floating_point():
        raise ValueError(f"{where}[{key!r}] must be a floating point tensor, got {t.dtype}")
    return t


def _boxes(d: dict[str, Tensor], where: str, n: int) -> Tensor:
    t = _tensor(d, "boxes", where)
    if t.dim() != 2 or t.shape != (n, 4):
        raise ValueError(f"{where}['boxes'] must have shape [{n}, 4] (xyxy), got {tuple(t.shape)}")
    return t


def _masks(d: dict[str, Tensor], where: str, n: int) -> Tensor:
    t = _tensor(d, "masks", where)
    if t.is_floating_point() and t.dim() == 4 and t.shape[:2] == (n, 1):
        # A Mask R-CNN's soft masks, torchvision's [N, 1, H, W] probabilities: inside is > 0.5.
        t = t[:, 0] > 0.5  # (N, 1, H, W) -> (N, H, W)
    if t.dim() != 3 or t.shape[0] != n:
        raise ValueError(f"{where}['masks'] must have shape [{n}, H, W], got {tuple(t.shape)}")
    if t.dtype not in (torch.bool, torch.uint8):
        raise ValueError(
            f"{where}['masks'] must be bool or uint8 [N, H, W] (binary masks) or float [N, 1, H, W] "
            f"probabilities, got {t.dtype} {tuple(t.shape)}"
        )
    return t  # nonzero means inside (mask_ious reads them so)


def _keypoints(d: dict[str, Tensor], where: str, n: int, k: int, cols: tuple[int, ...]) -> Tensor:
    """``keypoints`` ``[n, k, c]`` (c in ``cols``), finite, as float64."""
    t = _tensor(d, "keypoints", where)
    if t.dim() != 3 or t.shape[:2] != (n, k) or t.shape[2] not in cols:
        want = " or ".join(f"[{n}, {k}, {c}]" for c in cols)
        raise ValueError(
            f"{where}['keypoints'] must have shape {want} (K = {k} sigmas), got {tuple(t.shape)}"
        )
    if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where}['keypoints'] must be finite floats, got {t.dtype}")
    return t.to(torch.float64)


def _cat_int64(parts: list[Tensor]) -> Tensor:
    return torch.cat(parts).to(torch.int64) if parts else torch.zeros(0, dtype=torch.int64)


def _check_values(boxes: Tensor, name: str, counts: list[int]) -> None:
    """Finite, ordered xyxy boxes; name the first bad image."""
    bad = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        image = int(torch.searchsorted(torch.tensor(counts).cumsum(0), first, right=True))
        raise ValueError(
            f"{name}[{image}]['boxes'] must be finite xyxy boxes with x2 >= x1 and y2 >= y1; "
            f"got {boxes[first].tolist()}"
        )


def check_batch(
    preds: list[dict[str, Tensor]],
    targets: list[dict[str, Tensor]],
    iou_type: str,
    sigmas: Tensor | None = None,
) -> ImageBatch:
    """Validate one ``update``'s inputs and store them flat; ``ValueError`` naming the culprit.

    ``sigmas`` (float64 ``[K]``) are the OKS sigmas, needed for ``iou_type="keypoints"``.
    """
    for name, arg in (("preds", preds), ("targets", targets)):
        if not isinstance(arg, (list, tuple)):
            raise ValueError(f"{name} must be a list of dicts (one per image), got {type(arg).__name__}")
    if len(preds) != len(targets):
        raise ValueError(
            f"preds and targets must have one dict per image: got {len(preds)} and {len(targets)}"
        )
    segm = iou_type == "segm"
    kpts = iou_type == "keypoints"
    if kpts and sigmas is None:
        raise ValueError("iou_type='keypoints' needs the per-keypoint sigmas")
    K = int(sigmas.numel()) if sigmas is not None else 0
    det: dict[str, list[Tensor]] = {k: [] for k in ("boxes", "scores", "labels", "masks", "keypoints")}
    gt: dict[str, list[Tensor]] = {k: [] for k in ("boxes", "labels", "crowd", "masks", "keypoints")}
    det_has_boxes: list[bool] = []
    given_area: list[Tensor | None] = []  # targets' ``area`` (None: from the masks or boxes)
    det_counts: list[int] = []
    gt_counts: list[int] = []
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        for name, d in (("preds", p), ("targets", t)):
            if not isinstance(d, dict):
                raise ValueError(f"{name}[{i}] must be a dict, got {type(d).__name__}")
        scores = _vector(p, "scores", f"preds[{i}]", None, "float")
        n = scores.shape[0]
        det["scores"].append(scores)
        det["labels"].append(_vector(p, "labels", f"preds[{i}]", n, "int"))
        labels = _vector(t, "labels", f"targets[{i}]", None, "int")
        g = labels.shape[0]
        gt["labels"].append(labels)
        crowd = _vector(t, "iscrowd", f"targets[{i}]", g, "any") if "iscrowd" in t else torch.zeros(g)
        gt["crowd"].append(crowd.bool())
        if segm:
            dm = _masks(p, f"preds[{i}]", n)
            gm = _masks(t, f"targets[{i}]", g)
            if n and g and dm.shape[1:] != gm.shape[1:]:
                raise ValueError(
                    f"preds[{i}]['masks'] is {tuple(dm.shape[1:])} but targets[{i}]['masks'] is "
                    f"{tuple(gm.shape[1:])}: masks of one image must have the same size"
                )
            det["masks"].append(dm)
            gt["masks"].append(gm)
            det["boxes"].append(_boxes(p, f"preds[{i}]", n) if "boxes" in p else torch.zeros(n, 4))
            gt["boxes"].append(_boxes(t, f"targets[{i}]", g) if "boxes" in t else torch.zeros(g, 4))
        elif kpts:  # detection boxes are optional (only their area is used, when given)
            det["keypoints"].append(_keypoints(p, f"preds[{i}]", n, K, (2, 3)))
            gt["keypoints"].append(_keypoints(t, f"targets[{i}]", g, K, (3,)))
            det_has_boxes.append("boxes" in p)
            det["boxes"].append(_boxes(p, f"preds[{i}]", n) if "boxes" in p else torch.zeros(n, 4))
            gt["boxes"].append(_boxes(t, f"targets[{i}]", g))
        else:
            det["boxes"].append(_boxes(p, f"preds[{i}]", n))
            gt["boxes"].append(_boxes(t, f"targets[{i}]", g))
        given_area.append(_vector(t, "area", f"targets[{i}]", g, "any") if "area" in t else None)
        det_counts.append(n)
        gt_counts.append(g)

    det_xyxy = torch.cat(det["boxes"]).to(torch.float64) if preds else torch.zeros(0, 4, dtype=torch.float64)
    gt_xyxy = torch.cat(gt["boxes"]).to(torch.float64) if preds else torch.zeros(0, 4, dtype=torch.float64)
    _check_values(det_xyxy, "preds", det_counts)
    _check_values(gt_xyxy, "targets", gt_counts)
    det_xywh, gt_xywh = xyxy_to_xywh64(det_xyxy), xyxy_to_xywh64(gt_xyxy)
    scores = torch.cat(det["scores"]).to(torch.float64) if preds else torch.zeros(0, dtype=torch.float64)
    if not bool(torch.isfinite(scores).all()):
        first = int((~torch.isfinite(scores)).nonzero()[0])
        image = int(torch.searchsorted(torch.tensor(det_counts).cumsum(0), first, right=True))
        raise ValueError(f"preds[{image}]['scores'] must be finite, got {scores[first].item()}")
    ious: list[Tensor] = []
    if segm:  # every image's IoU matrix and mask pixel counts, batched over the images
        ious, det_areas, gt_areas = mask_ious(det["masks"], gt["masks"], gt["crowd"])
        det_area = torch.cat(det_areas) if preds else torch.zeros(0, dtype=torch.float64)
    else:
        det_area = det_xywh[:, 2] * det_xywh[:, 3]
        gt_areas = [gt_xywh[:, 2] * gt_xywh[:, 3]]
    if not targets:
        gt_area = torch.zeros(0, dtype=torch.float64)
    elif all(a is None for a in given_area):  # every area from the masks (segm) or the boxes
        gt_area = torch.cat(gt_areas)
    else:  # given areas where there are: fill image by image
        if not segm:
            gt_areas = list(torch.split(gt_areas[0], gt_counts))
        parts = [a if a is not None else c for a, c in zip(given_area, gt_areas, strict=True)]
        gt_area = torch.cat([a.to(torch.float64) for a in parts])
    bad_area = ~(torch.isfinite(gt_area) & (gt_area >= 0))
    if bool(bad_area.any()):
        first = int(bad_area.nonzero()[0])
        image = int(torch.searchsorted(torch.tensor(gt_counts).cumsum(0), first, right=True))
        raise ValueError(f"targets[{image}]['area'] must be finite and >= 0, got {gt_area[first].item()}")
    gt_ignore = torch.zeros(gt_area.shape[0], dtype=torch.bool)
    if kpts:
        assert sigmas is not None
        ious, det_area, gt_ignore = _keypoint_pairs(
            det, gt, det_has_boxes, det_xywh, gt_xywh, gt_area, det_counts, gt_counts, sigmas
        )
    return ImageBatch(
        det_boxes=det_xywh,
        det_scores=scores,
        det_labels=_cat_int64(det["labels"]),
        det_area=det_area,
        det_counts=torch.tensor(det_counts, dtype=torch.int64),
        gt_boxes=gt_xywh,
        gt_labels=_cat_int64(gt["labels"]),
        gt_crowd=torch.cat(gt["crowd"]) if targets else torch.zeros(0, dtype=torch.bool),
        gt_area=gt_area,
        gt_counts=torch.tensor(gt_counts, dtype=torch.int64),
        ious=torch.cat(ious) if ious else torch.zeros(0, dtype=torch.float64),
        gt_ignore=gt_ignore,
    )


def _keypoint_pairs(
    det: dict[str, list[Tensor]],
    gt: dict[str, list[Tensor]],
    det_has_boxes: list[bool],
    det_xywh: Tensor,
    gt_xywh: Tensor,
    gt_area: Tensor,
    det_counts: list[int],
    gt_counts: list[int],
    sigmas: Tensor,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """Per image the ``[D, G]`` OKS matrix (flat), detection areas ``[D]`` and gt ignore flags ``[G]``."""
    sig = sigmas.numpy()
    det_boxes = torch.split(det_xywh, det_counts)
    gt_boxes, gt_areas = torch.split(gt_xywh, gt_counts), torch.split(gt_area, gt_counts)
    ious, det_area = [], []
    for i, (dk, gk) in enumerate(zip(det["keypoints"], gt["keypoints"], strict=True)):
        oks = oks_matrix(dk[..., :2].numpy(), gk.numpy(), gt_boxes[i].numpy(), gt_areas[i].numpy(), sig)
        ious.append(torch.from_numpy(oks.reshape(-1)))  # (D, G) -> (D*G,)
        box_area = det_boxes[i][:, 2] * det_boxes[i][:, 3]
        det_area.append(box_area if det_has_boxes[i] else keypoint_extent_area(dk))
    gt_all = torch.cat(gt["keypoints"]) if gt["keypoints"] else torch.zeros(0, sig.size, 3)
    no_labelled = ~(gt_all[..., 2] > 0).any(1)  # (G,) pycocotools' num_keypoints == 0
    det_area_t = torch.cat(det_area) if det_area else torch.zeros(0, dtype=torch.float64)
    return ious, det_area_t, no_labelled
