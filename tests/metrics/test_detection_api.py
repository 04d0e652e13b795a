"""MeanAveragePrecision's interface: clear ValueErrors for bad input, batching, reset, output keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from structpred.metrics import MeanAveragePrecision

from .coco_cases import STAT_NAMES, assert_matches_coco, coco_eval, ours, random_set

Dicts = list[dict[str, Any]]


def valid() -> tuple[Dicts, Dicts]:
    """Two images: the second one's inputs are the ones the bad cases break."""
    pred = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]),
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.tensor([1, 2]),
        "masks": torch.zeros(2, 24, 24, dtype=torch.uint8),
    }
    target = {
        "boxes": torch.tensor([[0.0, 0, 10, 10]]),
        "labels": torch.tensor([1]),
        "iscrowd": torch.tensor([0]),
        "masks": torch.zeros(1, 24, 24, dtype=torch.bool),
    }
    pred["masks"][0, :10, :10] = 1
    target["masks"][0, :10, :10] = True
    return [dict(pred), pred], [dict(target), target]


def set_(where: str, key: str, value: Any) -> Callable[[Dicts, Dicts], None]:
    def edit(preds: Dicts, targets: Dicts) -> None:
        d = (preds if where == "pred" else targets)[1]
        if value is None:
            del d[key]
        else:
            d[key] = value

    return edit


NAN = float("nan")
BAD_BOXES = [
    ("pred", "boxes", torch.zeros(2, 3), r"preds\[1\]\['boxes'\] must have shape \[2, 4\] \(xyxy\)"),
    ("pred", "boxes", torch.zeros(8), r"preds\[1\]\['boxes'\] must have shape \[2, 4\]"),
    ("target", "boxes", torch.zeros(2, 4), r"targets\[1\]\['boxes'\] must have shape \[1, 4\]"),
    ("pred", "boxes", torch.tensor([[0.0, 0, 10, 10], [9, 0, 8, 5]]), r"preds\[1\]\['boxes'\].*x2 >= x1"),
    ("target", "boxes", torch.tensor([[0.0, 5, 10, 4]]), r"targets\[1\]\['boxes'\].*y2 >= y1.*10.0, 4.0"),
    (
        "pred",
        "boxes",
        torch.tensor([[0.0, 0, 1, 1], [0, 0, NAN, 5]]),
        r"preds\[1\]\['boxes'\] must be finite",
    ),
    ("pred", "boxes", [[0, 0, 1, 1]] * 2, r"preds\[1\]\['boxes'\] must be a Tensor, got list"),
    ("pred", "boxes", None, r"preds\[1\] is missing the key 'boxes'"),
    ("target", "boxes", None, r"targets\[1\] is missing the key 'boxes'"),
]
BAD_VECTORS = [
    ("pred", "labels", torch.tensor([1]), r"preds\[1\]\['labels'\] must have shape \[2\], got \(1,\)"),
    ("pred", "labels", torch.tensor([1.0, 2.0]), r"preds\[1\]\['labels'\] must be an integer tensor"),
    ("pred", "scores", torch.tensor([1, 2]), r"preds\[1\]\['scores'\] must be a floating point tensor"),
    ("pred", "scores", torch.tensor([[0.9, 0.8]]), r"preds\[1\]\['scores'\] must have shape \[N\]"),
    ("pred", "scores", torch.tensor([0.9, float("inf")]), r"preds\[1\]\['scores'\] must be finite"),
    ("pred", "scores", None, r"preds\[1\] is missing the key 'scores'"),
    ("target", "labels", None, r"targets\[1\] is missing the key 'labels'"),
    ("target", "labels", torch.tensor([True]), r"targets\[1\]\['labels'\] must be an integer tensor"),
    ("target", "iscrowd", torch.tensor([0, 1]), r"targets\[1\]\['iscrowd'\] must have shape \[1\]"),
    ("target", "area", torch.tensor([-1.0]), r"targets\[1\]\['area'\] must be finite and >= 0, got -1"),
    ("target", "area", torch.tensor([1.0, 2.0]), r"targets\[1\]\['area'\] must have shape \[1\]"),
]
BAD_MASKS = [
    ("pred", "masks", None, r"preds\[1\] is missing the key 'masks'"),
    ("target", "masks", None, r"targets\[1\] is missing the key 'masks'"),
    ("pred", "masks", torch.zeros(3, 24, 24).byte(), r"preds\[1\]\['masks'\] must have shape \[2, H, W\]"),
    ("pred", "masks", torch.zeros(2, 24, 24), r"preds\[1\]\['masks'\] must be bool or uint8"),
    ("target", "masks", torch.zeros(1, 24, 20).bool(), r"\(24, 20\): masks of one image must have the same"),
]


@pytest.mark.parametrize("where,key,value,message", BAD_BOXES + BAD_VECTORS)
def test_bad_bbox_inputs_raise_a_clear_error(where: str, key: str, value: Any, message: str) -> None:
    preds, targets = valid()
    set_(where, key, value)(preds, targets)
    metric = MeanAveragePrecision()
    with pytest.raises(ValueError, match=message):
        metric.update(preds, targets)


@pytest.mark.parametrize("where,key,value,message", BAD_MASKS + BAD_VECTORS[:5])
def test_bad_segm_inputs_raise_a_clear_error(where: str, key: str, value: Any, message: str) -> None:
    preds, targets = valid()
    set_(where, key, value)(preds, targets)
    with pytest.raises(ValueError, match=message):
        MeanAveragePrecision(iou_type="segm").update(preds, targets)


def test_the_valid_inputs_are_valid() -> None:
    """The base of the bad cases above passes, for both IoU types (so each case tests its flaw)."""
    for iou_type in ("bbox", "segm"):
        metric = MeanAveragePrecision(iou_type=iou_type)
        metric.update(*valid())
        assert float(metric.compute()["map"]) == pytest.approx(1.0)


def test_bad_lists_raise_a_clear_error() -> None:
    (p, q), (t, u) = valid()
    metric = MeanAveragePrecision()
    with pytest.raises(ValueError, match=r"one dict per image: got 2 and 1"):
        metric.update([p, q], [t])
    with pytest.raises(ValueError, match=r"preds must be a list of dicts \(one per image\), got dict"):
        metric.update(p, [t])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"targets must be a list of dicts"):
        metric.update([p], t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"targets\[1\] must be a dict, got Tensor"):
        metric.update([p, q], [t, u["boxes"]])  # type: ignore[list-item]
    metric.update([p], [t])  # a failed update leaves nothing behind
    assert len(metric._batches) == 1 and float(metric.compute()["map"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"iou_type": "kpts"}, r"iou_type must be 'bbox' or 'segm'"),
        ({"iou_type": "BBOX"}, r"iou_type must be 'bbox' or 'segm'"),
        ({"max_detection_thresholds": ()}, r"max_detection_thresholds must be positive ints"),
        ({"max_detection_thresholds": (0, 10)}, r"max_detection_thresholds must be positive ints"),
        ({"max_detection_thresholds": (1.5,)}, r"max_detection_thresholds must be positive ints"),
        (
            {"iou_thresholds": [0.5, 1.2]},
            r"iou_thresholds must be a non-empty sequence of values in \[0, 1\]",
        ),
        ({"iou_thresholds": []}, r"iou_thresholds must be a non-empty sequence"),
        ({"rec_thresholds": [-0.1]}, r"rec_thresholds must be a non-empty sequence"),
    ],
)
def test_bad_settings_raise_a_clear_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MeanAveragePrecision(**kwargs)


def test_pr_curve_rejects_settings_it_does_not_have() -> None:
    metric = ours(*random_set(0, num_images=3))
    with pytest.raises(ValueError, match=r"iou_threshold=0.52 is not one of the metric's iou_thresholds"):
        metric.pr_curve(iou_threshold=0.52)
    with pytest.raises(ValueError, match=r"area must be one of .*got 'huge'"):
        metric.pr_curve(area="huge")
    with pytest.raises(ValueError, match=r"max_detections=7 is not one of \(1, 10, 100\)"):
        metric.pr_curve(max_detections=7)
    curves = metric.pr_curve(iou_threshold=0.75, max_detections=10)
    full = metric.compute_full()
    for label, (recall, precision) in curves.items():
        k = full.classes.tolist().index(label)
        assert torch.equal(precision, full.precision[5, :, k, 0, 1]) and recall.shape == (101,)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_batches_equal_one_update(iou_type: str) -> None:
    preds, targets = random_set(3, iou_type, num_images=7, dets_per_image=12, size=64)
    whole = ours(preds, targets, iou_type).compute_full()
    metric = MeanAveragePrecision(iou_type=iou_type)
    for s in (slice(0, 2), slice(2, 3), slice(3, 3), slice(3, 9)):  # including an empty batch
        metric.update(preds[s], targets[s])
    split = metric.compute_full()
    assert torch.equal(split.precision, whole.precision) and torch.equal(split.recall, whole.recall)
    assert split.stats == whole.stats and torch.equal(split.classes, whole.classes)


def test_segm_images_of_different_sizes_in_separate_batches() -> None:
    small = random_set(30, "segm", num_images=4, dets_per_image=12, size=64)
    big = random_set(31, "segm", num_images=4, dets_per_image=12, size=160)
    metric = MeanAveragePrecision(iou_type="segm")
    metric.update(*small)
    metric.update(*big)
    assert_matches_coco(metric, coco_eval(small[0] + big[0], small[1] + big[1], "segm"))


def test_compute_sees_later_updates_and_reset_forgets() -> None:
    first, second = (
        random_set(4, num_images=4, dets_per_image=10),
        random_set(5, num_images=4, dets_per_image=10),
    )
    metric = ours(*first)
    before = metric.compute()
    metric.update(*second)
    after = metric.compute()
    both = ours(first[0] + second[0], first[1] + second[1]).compute()
    assert float(after["map"]) != float(before["map"])
    assert all(float(after[k]) == float(both[k]) for k in STAT_NAMES)
    metric.reset()
    assert float(metric.compute()["map"]) == -1.0
    metric.update(*second)
    assert all(float(metric.compute()[k]) == float(ours(*second).compute()[k]) for k in STAT_NAMES)


def test_output_keys_dtypes_and_inputs_untouched() -> None:
    preds, targets = random_set(6, num_images=4)
    copies = [{k: v.clone() for k, v in d.items()} for d in preds + targets]
    out = ours(preds, targets, class_metrics=True).compute()
    assert set(out) == {*STAT_NAMES, "classes", "map_per_class", "mar_100_per_class"}
    assert all(out[k].dtype == torch.float32 and out[k].dim() == 0 for k in STAT_NAMES)
    assert out["classes"].dtype == torch.int32 and out["classes"].tolist() == [1, 2, 3, 4, 99]
    assert out["map_per_class"].shape == out["mar_100_per_class"].shape == (5,)
    assert float(out["map_per_class"][-1]) == -1.0  # the class seen only in predictions
    assert "map_per_class" not in ours(preds, targets).compute()
    assert MeanAveragePrecision(class_metrics=True).compute()["map_per_class"].shape == (0,)
    for d, c in zip(preds + targets, copies, strict=True):
        assert all(torch.equal(d[k], c[k]) for k in c)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_input_dtypes_do_not_change_the_result(iou_type: str) -> None:
    """Integer boxes, int32 labels, float64 scores, bool masks: the same numbers."""
    preds, targets = random_set(7, "segm", num_images=4, dets_per_image=12, size=64)
    for d in preds + targets:
        d["boxes"] = d["boxes"].round()
    base = ours(preds, targets, iou_type).compute_full()
    for d in preds + targets:
        d["boxes"] = d["boxes"].to(torch.int64)
        d["labels"] = d["labels"].to(torch.int32)
        d["masks"] = d["masks"].bool()
        if "scores" in d:
            d["scores"] = d["scores"].double()
    other = ours(preds, targets, iou_type).compute_full()
    assert torch.equal(other.precision, base.precision) and other.stats == base.stats
