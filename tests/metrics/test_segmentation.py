"""MeanIoU against a confusion matrix counted pixel by pixel in plain Python."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.metrics import MeanIoU

IGNORE = 255


def naive_confusion(preds: torch.Tensor, target: torch.Tensor, K: int, ignore: int | None) -> list[list[int]]:
    """``C[true][pred]`` by a loop over every pixel, skipping ``ignore`` targets."""
    C = [[0] * K for _ in range(K)]
    for p, t in zip(preds.reshape(-1).tolist(), target.reshape(-1).tolist(), strict=True):
        if t != ignore:
            C[t][p] += 1
    return C


def naive_metrics(C: list[list[int]]) -> dict[str, float | list[float]]:
    """IoU / accuracy per class from the definitions; NaN where a class is absent."""
    K = len(C)
    iou, acc = [], []
    for k in range(K):
        tp = C[k][k]
        in_target = sum(C[k])
        in_pred = sum(C[t][k] for t in range(K))
        union = in_target + in_pred - tp
        iou.append(tp / union if union else math.nan)
        acc.append(tp / in_target if in_target else math.nan)
    total = sum(map(sum, C))
    present = [v for v in iou if not math.isnan(v)]
    seen = [v for v in acc if not math.isnan(v)]
    return {
        "iou_per_class": iou,
        "accuracy_per_class": acc,
        "miou": sum(present) / len(present) if present else math.nan,
        "mean_accuracy": sum(seen) / len(seen) if seen else math.nan,
        "pixel_accuracy": sum(C[k][k] for k in range(K)) / total if total else math.nan,
    }


def random_maps(
    seed: int, B: int = 2, K: int = 5, H: int = 7, W: int = 9, p_ignore: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores ``[B, K, H, W]``, their arg-max labels and a target with ``IGNORE`` pixels."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, K, H, W, generator=g)
    target = torch.randint(0, K, (B, H, W), generator=g)
    target[torch.rand(B, H, W, generator=g) < p_ignore] = IGNORE
    return scores, scores.argmax(1), target


def assert_metrics(out: dict[str, torch.Tensor], C: list[list[int]]) -> None:
    assert out["confusion_matrix"].dtype == torch.int64 and out["confusion_matrix"].tolist() == C
    ref = naive_metrics(C)
    for key, value in ref.items():
        expected = torch.tensor(value, dtype=torch.float64)
        torch.testing.assert_close(out[key], expected, rtol=1e-12, atol=1e-12, equal_nan=True, msg=key)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_pixel_loop(seed: int) -> None:
    scores, labels, target = random_maps(seed)
    metric = MeanIoU(5)
    metric.update(labels, target)
    C = naive_confusion(labels, target, 5, IGNORE)
    assert 0 < sum(map(sum, C)) < labels.numel()  # some pixels ignored, some not
    assert_metrics(metric.compute(), C)


def test_scores_give_the_same_as_their_argmax() -> None:
    scores, labels, target = random_maps(10)
    from_scores, from_labels = MeanIoU(5), MeanIoU(5)
    from_scores.update(scores, target)
    from_labels.update(labels, target)
    assert torch.equal(from_scores.confusion, from_labels.confusion)
    assert from_scores.confusion.sum() > 0


def test_ignored_pixels_count_for_nothing_whatever_is_predicted_there() -> None:
    _, labels, target = random_maps(11)
    ignored = target == IGNORE
    metric = MeanIoU(5)
    metric.update(labels, target)
    other = labels.clone()
    other[ignored] = 1000  # out of range, but at ignored pixels: never looked at
    again = MeanIoU(5)
    again.update(other, target)
    assert torch.equal(metric.confusion, again.confusion)
    assert int(metric.confusion.sum()) == int((~ignored).sum())


def test_ignore_index_none_counts_every_pixel() -> None:
    _, labels, target = random_maps(12, p_ignore=0.0)
    metric = MeanIoU(5, ignore_index=None)
    metric.update(labels, target)
    assert int(metric.confusion.sum()) == labels.numel()
    assert_metrics(metric.compute(), naive_confusion(labels, target, 5, None))
    with pytest.raises(ValueError, match=r"target holds label 255, outside 0..4 \(ignore_index=None\)"):
        metric.update(labels, torch.full_like(target, IGNORE))


def test_other_ignore_index() -> None:
    _, labels, target = random_maps(13, p_ignore=0.0)
    target[:, 0] = -1
    metric = MeanIoU(5, ignore_index=-1)
    metric.update(labels, target)
    assert_metrics(metric.compute(), naive_confusion(labels, target, 5, -1))


def test_absent_classes_are_nan_and_left_out_of_the_means() -> None:
    """Class 3 is in neither map: NaN. Class 2 is only predicted: IoU 0, counted in mIoU."""
    target = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, IGNORE]]])
    preds = torch.tensor([[[0, 2, 1, 1], [0, 1, 0, 3]]])  # the 3 sits on an ignored pixel
    metric = MeanIoU(4)
    metric.update(preds, target)
    out = metric.compute()
    iou = out["iou_per_class"]
    assert iou[:3].tolist() == pytest.approx([2 / 4, 3 / 4, 0.0]) and math.isnan(float(iou[3]))
    assert float(out["miou"]) == pytest.approx((2 / 4 + 3 / 4 + 0.0) / 3)
    acc = out["accuracy_per_class"]
    assert acc[:2].tolist() == pytest.approx([2 / 3, 3 / 4]) and acc[2:].isnan().all()
    assert float(out["mean_accuracy"]) == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert float(out["pixel_accuracy"]) == pytest.approx(5 / 7)


def test_nothing_counted_is_nan() -> None:
    metric = MeanIoU(3)
    out = metric.compute()
    assert all(math.isnan(float(out[k])) for k in ("miou", "pixel_accuracy", "mean_accuracy"))
    metric.update(torch.zeros(1, 2, 2, dtype=torch.int64), torch.full((1, 2, 2), IGNORE))
    assert int(metric.confusion.sum()) == 0 and math.isnan(float(metric.compute()["miou"]))


def test_updates_accumulate_and_reset_forgets() -> None:
    scores, labels, target = random_maps(14, B=4)
    _, small_labels, small_target = random_maps(15, B=1, H=3, W=4)  # another size
    metric = MeanIoU(5)
    metric.update(labels[:1], target[:1])
    metric.update(scores[1:], target[1:])
    metric.update(small_labels, small_target)
    C = naive_confusion(torch.cat([labels.flatten(), small_labels.flatten()]),
                        torch.cat([target.flatten(), small_target.flatten()]), 5, IGNORE)  # fmt: skip
    assert_metrics(metric.compute(), C)
    metric.reset()
    assert int(metric.confusion.sum()) == 0
    metric.update(labels, target)
    assert_metrics(metric.compute(), naive_confusion(labels, target, 5, IGNORE))


def test_compute_returns_a_copy_of_the_confusion_matrix() -> None:
    _, labels, target = random_maps(16)
    metric = MeanIoU(5)
    metric.update(labels, target)
    metric.compute()["confusion_matrix"].zero_()
    assert int(metric.confusion.sum()) > 0


def ints(*shape: int, fill: int = 0) -> torch.Tensor:
    return torch.full(shape, fill, dtype=torch.int64)


@pytest.mark.parametrize(
    "preds,target,message",
    [
        (ints(2, 4, 5), ints(2, 4, 6), r"preds labels \(2, 4, 5\) and target \(2, 4, 6\) differ in shape"),
        (torch.zeros(2, 5, 4, 5), ints(1, 4, 5), r"\(2, 4, 5\) and target \(1, 4, 5\) differ in shape"),
        (torch.zeros(2, 4, 4, 5), ints(2, 4, 5), r"preds has 4 channels but num_classes=5"),
        (ints(2, 5, 4, 5), ints(2, 4, 5), r"preds as \[B, K, H, W\] must hold float scores"),
        (torch.zeros(2, 4, 5), ints(2, 4, 5), r"preds as \[B, H, W\] must hold integer labels"),
        (ints(2, 4, 5).bool(), ints(2, 4, 5), r"preds as \[B, H, W\] must hold integer labels"),
        (ints(20), ints(1, 4, 5), r"preds must be int\[B, H, W\] labels or float\[B, K, H, W\] scores"),
        (ints(4, 5), ints(4, 5), r"target must be an integer Tensor\[B, H, W\], got torch.int64 \(4, 5\)"),
        (
            ints(1, 4, 5),
            torch.zeros(1, 4, 5),
            r"target must be an integer Tensor\[B, H, W\], got torch.float",
        ),
        (ints(1, 4, 5), ints(1, 4, 5).bool(), r"target must be an integer Tensor\[B, H, W\], got torch.bool"),
        (ints(1, 4, 5), ints(1, 4, 5, fill=5), r"target holds label 5, outside 0..4 \(ignore_index=255\)"),
        (ints(1, 4, 5), ints(1, 4, 5, fill=-2), r"target holds label -2"),
        (ints(1, 4, 5, fill=7), ints(1, 4, 5), r"preds holds label 7, outside 0..4"),
        (ints(1, 4, 5, fill=-1), ints(1, 4, 5), r"preds holds label -1"),
        ([[0]], ints(1, 1, 1), r"preds and target must be Tensors, got list and Tensor"),
    ],
)
def test_bad_inputs_raise_a_clear_error(preds: torch.Tensor, target: torch.Tensor, message: str) -> None:
    metric = MeanIoU(5)
    with pytest.raises(ValueError, match=message):
        metric.update(preds, target)
    assert int(metric.confusion.sum()) == 0  # nothing half-counted


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_classes": 0}, r"num_classes must be a positive int, got 0"),
        ({"num_classes": 2.0}, r"num_classes must be a positive int"),
        ({"num_classes": True}, r"num_classes must be a positive int"),
        ({"num_classes": 300, "ignore_index": 255}, r"ignore_index=255 is a valid class label \(0..299\)"),
    ],
)
def test_bad_settings_raise_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MeanIoU(**kwargs)
