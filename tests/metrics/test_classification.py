"""Accuracy against counts made item by item in plain Python."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.metrics.classification import Accuracy


def items(labels: list[int] | torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"labels": torch.tensor(int(v))} for v in labels]


def random_labels(seed: int, n: int, K: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, K, (n,), generator=g)
    right = torch.rand(n, generator=g) < 0.6
    pred = torch.where(right, true, torch.randint(0, K, (n,), generator=g))
    return pred.tolist(), true.tolist()


def naive(pred: list[int], true: list[int], K: int) -> tuple[float, list[float]]:
    correct, total = [0] * K, [0] * K
    for p, t in zip(pred, true, strict=True):
        total[t] += 1
        correct[t] += p == t
    per_class = [c / n if n else math.nan for c, n in zip(correct, total, strict=True)]
    return sum(correct) / sum(total), per_class


@pytest.mark.parametrize("seed", range(3))
def test_matches_the_item_loop(seed: int) -> None:
    pred, true = random_labels(seed, 50, 6)
    metric = Accuracy(6)
    metric.update(items(pred), items(true))
    out = metric.compute()
    overall, per_class = naive(pred, true, 6)
    assert 0 < overall < 1
    assert float(out["accuracy"]) == pytest.approx(overall, abs=1e-6)
    torch.testing.assert_close(out["accuracy_per_class"], torch.tensor(per_class), equal_nan=True)


def test_unseen_classes_are_nan_and_a_wrong_out_of_range_prediction_counts_as_wrong() -> None:
    metric = Accuracy(4)
    metric.update(items([0, 0, 9, 2]), items([0, 1, 1, 2]))  # 9 is no class: simply wrong
    out = metric.compute()
    assert float(out["accuracy"]) == pytest.approx(0.5)
    per_class = out["accuracy_per_class"]
    assert per_class[:3].tolist() == pytest.approx([1.0, 0.0, 1.0]) and math.isnan(float(per_class[3]))


def test_updates_accumulate_and_reset_forgets() -> None:
    pred, true = random_labels(5, 40, 3)
    metric = Accuracy(3)
    for s in (slice(0, 7), slice(7, 7), slice(7, 40)):
        metric.update(items(pred[s]), items(true[s]))
    overall, per_class = naive(pred, true, 3)
    out = metric.compute()
    assert float(out["accuracy"]) == pytest.approx(overall, abs=1e-6)
    assert out["accuracy_per_class"].tolist() == pytest.approx(per_class, abs=1e-6)
    metric.reset()
    assert int(metric.total.sum()) == 0 and metric.compute()["accuracy_per_class"].isnan().all()


def test_label_shapes_and_dtypes() -> None:
    """Scalars or one-element vectors, any integer dtype: the same counts."""
    metric = Accuracy(3)
    preds = [{"labels": torch.tensor([1], dtype=torch.int32)}, {"labels": torch.tensor(2, dtype=torch.uint8)}]
    targets = [{"labels": torch.tensor(1)}, {"labels": torch.tensor([0])}]
    metric.update(preds, targets)
    assert metric.total.tolist() == [1, 1, 0] and metric.correct.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    "preds,targets,message",
    [
        (items([1, 2]), items([1]), r"2 predictions for 1 targets"),
        (items([1]), items([3]), r"target labels must be in \[0, 3\), got \[3\]"),
        (items([1]), items([-1]), r"target labels must be in \[0, 3\)"),
        (items([1]), [{"labels": torch.tensor(1.0)}], r"targets\[0\]\['labels'\] must be one integer class"),
        ([{"labels": torch.tensor(1.5)}], items([1]), r"preds\[0\]\['labels'\] must be one integer class"),
        (items([1, 1]), [*items([1]), {"labels": torch.tensor([1, 2])}], r"targets\[1\].*\(2,\)"),
        ([{"label": torch.tensor(1)}], items([1]), r"preds\[0\] must be a dict with a Tensor 'labels'"),
        ([{"labels": 1}], items([1]), r"preds\[0\] must be a dict with a Tensor 'labels'"),
        (items([1]), [torch.tensor(1)], r"targets\[0\] must be a dict"),
    ],
)
def test_bad_inputs_raise_a_clear_error(preds: list, targets: list, message: str) -> None:
    metric = Accuracy(3)
    with pytest.raises(ValueError, match=message):
        metric.update(preds, targets)
    assert int(metric.total.sum()) == 0


@pytest.mark.parametrize("num_classes", [0, -2, 2.5, True])
def test_bad_num_classes(num_classes: object) -> None:
    with pytest.raises(ValueError, match=r"num_classes must be a positive int"):
        Accuracy(num_classes)  # type: ignore[arg-type]
