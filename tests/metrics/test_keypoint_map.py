"""Keypoint AP (OKS): ``MeanAveragePrecision(iou_type="keypoints")`` against pycocotools' COCOeval.

pycocotools runs in the test on the same data, written out here (flat ``[x, y, v] * K``
keypoints, ``num_keypoints``, ``bbox``, ``area``, ``iscrowd``; results with or without
``bbox``); its 10 ``stats`` must equal ours within 1e-6, and its precision / recall arrays
too. Cases: random sets (several images and classes, score ties, crowd gts, gts without a
labelled keypoint, images without detections or gts), no detections at all, no gts at all,
a naive OKS loop.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from structpred.metrics import MeanAveragePrecision
from structpred.metrics.keypoints import KEYPOINT_STAT_NAMES, oks_matrix

Dicts = list[dict[str, torch.Tensor]]


def coco_keypoint_eval(preds: Dicts, targets: Dicts, sigmas: list[float], with_bbox: bool) -> COCOeval:
    """pycocotools' keypoint evaluation of the same data (evaluate, accumulate, summarize)."""
    K = len(sigmas)
    images, anns, results = [], [], []
    cats: set[int] = set()
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        images.append({"id": i + 1})
        crowd = t.get("iscrowd", torch.zeros(t["labels"].numel(), dtype=torch.int64))
        for j, label in enumerate(t["labels"].tolist()):
            cats.add(label)
            x1, y1, x2, y2 = t["boxes"][j].double().tolist()
            kp = t["keypoints"][j].double()
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": label, "iscrowd": int(crowd[j]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(t["area"][j]) if "area" in t else (x2 - x1) * (y2 - y1),
                "keypoints": kp.reshape(-1).tolist(), "num_keypoints": int((kp[:, 2] > 0).sum()),
            })  # fmt: skip
        for j, label in enumerate(p["labels"].tolist()):
            cats.add(label)
            kp = p["keypoints"][j].double()
            row: dict[str, Any] = {
                "image_id": i + 1, "category_id": label, "score": float(p["scores"][j]),
                "keypoints": torch.cat([kp[:, :2], torch.ones(K, 1).double()], 1).reshape(-1).tolist(),
            }  # fmt: skip
            if with_bbox:
                x1, y1, x2, y2 = p["boxes"][j].double().tolist()
                row["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            results.append(row)
    categories = [{"id": c, "name": str(c), "keypoints": [str(k) for k in range(K)]} for c in sorted(cats)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": categories}
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes refuses an empty list
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [], "categories": categories}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.array(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def random_set(seed: int, K: int, num_images: int = 5, classes: int = 3) -> tuple[Dicts, Dicts]:
    """Detector-like keypoint sets: noisy copies of gts, false positives, ties, crowd, no-keypoint gts."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(num_images):
        n = 0 if i == 1 else int(torch.randint(1, 7, (1,), generator=g))  # image 1: no gts
        xy = torch.rand(n, 2, generator=g) * 150
        wh = 4 + torch.rand(n, 2, generator=g) * torch.tensor([[120.0, 90.0]]).expand(n, 2)
        boxes = torch.cat([xy, xy + wh], 1)
        kxy = xy[:, None] + torch.rand(n, K, 2, generator=g) * wh[:, None]  # (N, K, 2) inside the box
        vis = torch.randint(0, 3, (n, K), generator=g).float()
        if n:
            vis[0] = 0.0  # a gt without any labelled keypoint (ignored; box-extended OKS)
        kpts = torch.cat([kxy * (vis[..., None] > 0), vis[..., None]], 2)  # unlabelled points at 0, as COCO
        labels = torch.randint(1, classes + 1, (n,), generator=g)
        t = {"boxes": boxes, "labels": labels, "keypoints": kpts,
             "iscrowd": (torch.rand(n, generator=g) < 0.15).long(),
             "area": (wh[:, 0] * wh[:, 1]) * (0.5 + torch.rand(n, generator=g) * 0.5)}  # fmt: skip
        # Detections: gts with pixel noise of several sizes, then false positives; image 3 has none.
        m = 0 if i == 3 else n
        noise = torch.rand(m, 1, 1, generator=g) * 12
        d_kxy = kxy[:m] + torch.randn(m, K, 2, generator=g) * noise
        fp = int(torch.randint(0, 4, (1,), generator=g)) if i != 3 else 0
        d_kxy = torch.cat([d_kxy, torch.rand(fp, K, 2, generator=g) * 250])
        d_labels = torch.cat([labels[:m], torch.randint(1, classes + 2, (fp,), generator=g)])
        scores = torch.rand(m + fp, generator=g)
        if m + fp >= 3:
            scores[1] = scores[2]  # a tie
        lo, hi = d_kxy.amin(1), d_kxy.amax(1)
        preds.append({
            "boxes": torch.cat([lo - 2, hi + 2], 1), "scores": scores, "labels": d_labels,
            "keypoints": torch.cat([d_kxy, torch.ones(m + fp, K, 1)], 2),
        })  # fmt: skip
        targets.append(t)
    return preds, targets


def ours(preds: Dicts, targets: Dicts, sigmas: list[float], with_bbox: bool) -> MeanAveragePrecision:
    if not with_bbox:
        preds = [{k: v for k, v in p.items() if k != "boxes"} for p in preds]
    metric = MeanAveragePrecision(iou_type="keypoints", keypoint_sigmas=sigmas)
    metric.update(preds[:2], targets[:2])  # two updates: the batches are joined
    metric.update(preds[2:], targets[2:])
    return metric


def assert_same(metric: MeanAveragePrecision, ev: COCOeval) -> None:
    out = metric.compute()
    got = [float(out[name]) for name in KEYPOINT_STAT_NAMES]
    np.testing.assert_allclose(got, ev.stats, rtol=0, atol=1e-6)
    full = metric.compute_full()
    np.testing.assert_allclose(full.precision.numpy(), ev.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(full.recall.numpy(), ev.eval["recall"], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("seed", "K", "with_bbox"), [(0, 5, True), (1, 5, False), (2, 17, True), (3, 1, False)]
)
def test_random_sets_match_pycocotools(seed: int, K: int, with_bbox: bool) -> None:
    sigmas = (0.025 + 0.1 * torch.rand(K, generator=torch.Generator().manual_seed(seed))).tolist()
    preds, targets = random_set(seed, K)
    ev = coco_keypoint_eval(preds, targets, sigmas, with_bbox)
    assert_same(ours(preds, targets, sigmas, with_bbox), ev)
    assert max(ev.stats) > 0.05  # the case is not degenerate: something matched


def test_more_than_20_detections_per_image_and_class() -> None:
    sigmas = [0.05] * 3
    preds, targets = random_set(7, 3, num_images=4, classes=1)
    g = torch.Generator().manual_seed(1)
    extra = 30
    p = preds[0]
    kp = targets[0]["keypoints"][:1, :, :2].expand(extra, 3, 2) + torch.randn(extra, 3, 2, generator=g) * 3
    p["keypoints"] = torch.cat([p["keypoints"], torch.cat([kp, torch.ones(extra, 3, 1)], 2)])
    p["scores"] = torch.cat([p["scores"], torch.rand(extra, generator=g)])
    p["labels"] = torch.cat([p["labels"], torch.full((extra,), int(targets[0]["labels"][0]))])
    p["boxes"] = torch.cat([p["boxes"], torch.tensor([[0.0, 0.0, 50.0, 50.0]]).expand(extra, 4)])
    ev = coco_keypoint_eval(preds, targets, sigmas, True)
    assert_same(ours(preds, targets, sigmas, True), ev)


def test_no_detections_at_all() -> None:
    sigmas = [0.05] * 4
    preds, targets = random_set(4, 4)
    none = torch.zeros(0, dtype=torch.int64)
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": none,
              "keypoints": torch.zeros(0, 4, 3)} for _ in preds]  # fmt: skip
    ev = coco_keypoint_eval(empty, targets, sigmas, True)
    assert_same(ours(empty, targets, sigmas, True), ev)
    assert ev.stats[0] == 0.0


def test_no_gts_at_all_gives_minus_one() -> None:
    sigmas = [0.05] * 2
    preds, targets = random_set(5, 2)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "keypoints": torch.zeros(0, 2, 3)} for _ in targets]  # fmt: skip
    ev = coco_keypoint_eval(preds, empty, sigmas, True)
    assert_same(ours(preds, empty, sigmas, True), ev)
    assert list(ev.stats) == [-1.0] * 10


def test_only_unlabelled_and_crowd_gts() -> None:
    """Every gt ignored (no labelled keypoint, or crowd): -1 everywhere, as pycocotools."""
    sigmas = [0.05] * 3
    preds, targets = random_set(6, 3)
    for i, t in enumerate(targets):
        t["keypoints"][..., 2] = 0.0
        t["iscrowd"] = torch.full_like(t["iscrowd"], i % 2)
    ev = coco_keypoint_eval(preds, targets, sigmas, False)
    assert_same(ours(preds, targets, sigmas, False), ev)


def test_perfect_keypoints_score_one() -> None:
    sigmas = [0.05] * 3
    kp = torch.tensor([[[10.0, 10.0, 2.0], [40.0, 12.0, 1.0], [20.0, 45.0, 2.0]]])
    target = {"boxes": torch.tensor([[5.0, 5.0, 50.0, 50.0]]), "labels": torch.tensor([1]), "keypoints": kp}
    pred = {"scores": torch.tensor([0.9]), "labels": torch.tensor([1]), "keypoints": kp[..., :2]}
    metric = MeanAveragePrecision(iou_type="keypoints", keypoint_sigmas=sigmas)
    metric.update([pred], [target])
    out = metric.compute()
    assert float(out["map"]) == pytest.approx(1.0) and float(out["mar"]) == pytest.approx(1.0)
    assert float(out["map_medium"]) == pytest.approx(1.0) and float(out["map_large"]) == -1.0


def naive_oks(det: np.ndarray, gt: np.ndarray, box: list[float], area: float, sigmas: list[float]) -> float:
    """OKS of one pair, written from the COCO definition, keypoint by keypoint."""
    x, y, w, h = box
    labelled = [k for k in range(len(sigmas)) if gt[k, 2] > 0]
    terms = []
    for k in labelled or range(len(sigmas)):
        if labelled:
            d2 = (det[k, 0] - gt[k, 0]) ** 2 + (det[k, 1] - gt[k, 1]) ** 2
        else:  # distance to the gt box doubled on every side
            ddx = max(0.0, x - w - det[k, 0]) + max(0.0, det[k, 0] - (x + 2 * w))
            ddy = max(0.0, y - h - det[k, 1]) + max(0.0, det[k, 1] - (y + 2 * h))
            d2 = ddx**2 + ddy**2
        terms.append(math.exp(-d2 / (2 * area * (2 * sigmas[k]) ** 2)))
    return sum(terms) / len(terms)


def test_oks_matrix_equals_a_naive_loop() -> None:
    g = np.random.default_rng(0)
    K, D, G = 4, 5, 3
    sigmas = list(g.uniform(0.02, 0.1, K))
    det = g.uniform(-50, 150, (D, K, 2))
    gt = np.concatenate([g.uniform(0, 100, (G, K, 2)), g.integers(0, 3, (G, K, 1))], 2).astype(np.float64)
    gt[0, :, 2] = 0  # box-extended
    boxes = g.uniform(0, 60, (G, 4))
    area = g.uniform(10, 900, G)
    got = oks_matrix(det, gt, boxes, area, np.array(sigmas))
    want = [[naive_oks(det[d], gt[j], list(boxes[j]), area[j], sigmas) for j in range(G)] for d in range(D)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_bad_input_is_one_line_value_error() -> None:
    with pytest.raises(ValueError, match="keypoint_sigmas"):
        MeanAveragePrecision(iou_type="keypoints", keypoint_sigmas=[0.1, -1.0])
    with pytest.raises(ValueError, match="keypoint_sigmas is for"):
        MeanAveragePrecision(iou_type="bbox", keypoint_sigmas=[0.1])
    metric = MeanAveragePrecision(iou_type="keypoints", keypoint_sigmas=[0.1, 0.1])
    target = {"boxes": torch.tensor([[0.0, 0.0, 9.0, 9.0]]), "labels": torch.tensor([1]),
              "keypoints": torch.zeros(1, 3, 3)}  # fmt: skip
    pred = {"scores": torch.tensor([0.5]), "labels": torch.tensor([1]), "keypoints": torch.zeros(1, 2, 3)}
    with pytest.raises(ValueError, match=r"targets\[0\]\['keypoints'\] must have shape \[1, 2, 3\]"):
        metric.update([pred], [target])
    target["keypoints"] = torch.full((1, 2, 3), float("nan"))
    with pytest.raises(ValueError, match="finite"):
        metric.update([pred], [target])
