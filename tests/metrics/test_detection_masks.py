"""The bit-packed mask IoUs and areas against pycocotools' RLE ``iou`` / ``area``, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from structpred.metrics import MeanAveragePrecision, detection_masks
from structpred.metrics.detection_masks import mask_ious

from .coco_cases import assert_matches_coco, coco_eval, random_set


def _rles(masks: torch.Tensor) -> list[dict[str, object]]:
    return mask_utils.encode(np.asfortranarray(masks.bool().numpy().transpose(1, 2, 0).astype(np.uint8)))


def _peer(det: torch.Tensor, gt: torch.Tensor, crowd: torch.Tensor) -> tuple[np.ndarray, ...]:
    """pycocotools' IoU matrix [D, G] and the areas of the same masks."""
    d, g = _rles(det), _rles(gt)
    iou = np.asarray(mask_utils.iou(d, g, crowd.to(torch.uint8).tolist())).reshape(len(d), len(g))
    return iou, mask_utils.area(d).astype(np.float64), mask_utils.area(g).astype(np.float64)


def _random_masks(g: torch.Generator, n: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Blobs of varied density (some empty, some full), as ``dtype``; uint8 with values > 1."""
    density = torch.rand(n, 1, 1, generator=g)
    density[: min(n, 1)] = 0.0  # an empty mask
    density[1 : min(n, 2)] = 1.1  # a full one
    m = torch.rand(n, h, w, generator=g) < density
    if dtype == torch.uint8:
        return m.to(torch.uint8) * torch.randint(1, 256, (n, h, w), generator=g, dtype=torch.uint8)
    return m


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8])
@pytest.mark.parametrize("popcount", ["numpy", "table"])
def test_mask_ious_equal_pycocotools(
    dtype: torch.dtype, popcount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Odd sizes (pixels not a multiple of 8 or 64), crowd gts, empty and full masks, empty
    images, images of different sizes in one call, blocks of detections (a tiny block size)."""
    if popcount == "table":  # numpy 1.x has no bitwise_count
        monkeypatch.setattr(detection_masks, "_bitwise_count", None)
    monkeypatch.setattr(detection_masks, "_PAIR_WORDS", 7)
    g = torch.Generator().manual_seed(0)
    sizes = [(7, 13), (16, 16), (1, 1), (33, 65), (7, 13), (5, 3)]
    counts = [(5, 4), (9, 3), (2, 2), (6, 7), (0, 3), (4, 0)]
    dets, gts, crowds = [], [], []
    for (h, w), (nd, ng) in zip(sizes, counts, strict=True):
        dets.append(_random_masks(g, nd, h, w, dtype))
        gts.append(_random_masks(g, ng, h, w, dtype))
        crowds.append(torch.rand(ng, generator=g) < 0.4)
    ious, det_area, gt_area = mask_ious(dets, gts, crowds)
    for i, (d, t, c) in enumerate(zip(dets, gts, crowds, strict=True)):
        assert ious[i].dtype == det_area[i].dtype == gt_area[i].dtype == torch.float64
        assert ious[i].shape == (d.shape[0] * t.shape[0],)
        assert det_area[i].shape == (d.shape[0],) and gt_area[i].shape == (t.shape[0],)
        if d.shape[0] and t.shape[0]:
            iou, da, ga = _peer(d, t, c)
            np.testing.assert_array_equal(ious[i].reshape(d.shape[0], t.shape[0]).numpy(), iou)
            np.testing.assert_array_equal(det_area[i].numpy(), da)
            np.testing.assert_array_equal(gt_area[i].numpy(), ga)
        np.testing.assert_array_equal(det_area[i].numpy(), d.bool().sum((1, 2)).double().numpy())
        np.testing.assert_array_equal(gt_area[i].numpy(), t.bool().sum((1, 2)).double().numpy())


def test_segm_images_of_different_sizes_in_one_batch() -> None:
    small = random_set(32, "segm", num_images=4, dets_per_image=12, size=64)
    big = random_set(33, "segm", num_images=4, dets_per_image=12, size=97)
    preds = [x for pair in zip(small[0], big[0], strict=True) for x in pair]
    targets = [x for pair in zip(small[1], big[1], strict=True) for x in pair]
    metric = MeanAveragePrecision(iou_type="segm")
    metric.update(preds, targets)
    assert_matches_coco(metric, coco_eval(preds, targets, "segm"))


def test_non_contiguous_masks_give_the_same_result() -> None:
    preds, targets = random_set(34, "segm", num_images=4, dets_per_image=12, size=64)
    base = MeanAveragePrecision(iou_type="segm")
    base.update(preds, targets)
    for d in preds + targets:  # the same masks, stored transposed
        d["masks"] = d["masks"].transpose(1, 2).contiguous().transpose(1, 2)
    other = MeanAveragePrecision(iou_type="segm")
    other.update(preds, targets)
    a, b = base.compute_full(), other.compute_full()
    assert torch.equal(a.precision, b.precision) and torch.equal(a.recall, b.recall) and a.stats == b.stats


def test_soft_masks_of_a_mask_rcnn_are_read_at_one_half() -> None:
    preds, targets = random_set(35, "segm", num_images=3, dets_per_image=10, size=48)
    base = MeanAveragePrecision(iou_type="segm")
    base.update(preds, targets)
    g = torch.Generator().manual_seed(0)
    for d in preds:  # torchvision's form: [N, 1, H, W] probabilities, > 0.5 inside
        inside = d["masks"].bool()[:, None].float()
        d["masks"] = inside * (0.51 + 0.49 * torch.rand(inside.shape, generator=g)) + (1 - inside) * 0.5
    soft = MeanAveragePrecision(iou_type="segm")
    soft.update(preds, targets)
    assert base.compute_full().stats == soft.compute_full().stats
