"""Boundary band (trimap) and the engine's SegmentationMetric, against plain-Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.metrics import MeanIoU, SegmentationMetric, boundary_band

IGNORE = 255


def naive_band(t: torch.Tensor, width: int, ignore: int | None) -> torch.Tensor:
    """Pixel loop: within Chebyshev distance ``width`` of a pixel whose label differs from a 4-neighbour."""
    B, H, W = t.shape
    edge = torch.zeros(B, H, W, dtype=torch.bool)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                    a, c = i + di, j + dj
                    if 0 <= a < H and 0 <= c < W and t[b, a, c] != t[b, i, j]:
                        edge[b, i, j] = True
    band = torch.zeros_like(edge)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                lo_i, hi_i = max(0, i - width), min(H, i + width + 1)
                lo_j, hi_j = max(0, j - width), min(W, j + width + 1)
                band[b, i, j] = bool(edge[b, lo_i:hi_i, lo_j:hi_j].any())
                if ignore is not None and int(t[b, i, j]) == ignore:
                    band[b, i, j] = False
    return band


@pytest.mark.parametrize("width", [0, 1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_band_matches_the_pixel_loop(width: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 3, (2, 7, 9), generator=g)
    t[t == 2] = torch.randint(0, 2, (int((t == 2).sum()),), generator=g)  # coarser regions
    t[0, 0, 0] = IGNORE
    assert torch.equal(boundary_band(t, width, IGNORE), naive_band(t, width, IGNORE))


def test_band_of_a_flat_map_is_empty_and_a_square_gives_a_ring() -> None:
    t = torch.zeros(1, 20, 20, dtype=torch.int64)
    assert not boundary_band(t, 5).any()
    t[0, 8:12, 8:12] = 1
    band = boundary_band(t, 2)
    assert band[0, 10, 10] and band[0, 5, 10] and not band[0, 4, 10] and not band[0, 0, 0]


def test_metric_equals_meaniou_overall_and_in_the_band() -> None:
    g = torch.Generator().manual_seed(3)
    target = torch.zeros(2, 16, 16, dtype=torch.int64)
    target[:, 4:12, 3:9] = 1
    target[1, 10:14, 10:15] = 2
    target[0, 0, :4] = IGNORE
    logits = torch.randn(2, 3, 16, 16, generator=g)
    logits[:, 0] += 1.0
    metric = SegmentationMetric(3, "semantic", IGNORE, boundary_width=2)
    metric.update({"logits": logits, "label_map": logits.argmax(1)}, [{"semantic": t} for t in target])
    out = metric.compute()
    whole = MeanIoU(3, IGNORE)
    whole.update(logits, target)
    assert torch.allclose(out["miou"], whole.compute()["miou"])
    band = boundary_band(target, 2, IGNORE)
    banded = MeanIoU(3, IGNORE)
    banded.update(logits.argmax(1), torch.where(band, target, torch.full_like(target, IGNORE)))
    assert torch.allclose(out["boundary_miou"], banded.compute()["miou"])
    assert not math.isnan(float(out["boundary_miou"]))


def test_perfect_predictions_score_one_in_the_band_too() -> None:
    target = torch.zeros(1, 12, 12, dtype=torch.int64)
    target[0, 3:9, 3:9] = 1
    logits = (
        torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float()
    )  # (B, H, W, K) -> (B, K, H, W)
    metric = SegmentationMetric(2, boundary_width=5)
    metric.update({"logits": logits, "label_map": logits.argmax(1)}, [{"semantic": target[0]}])
    out = metric.compute()
    assert float(out["miou"]) == 1.0 and float(out["boundary_miou"]) == 1.0
    # The label map is what is scored (a refined one, e.g. a CRF's), not the arg-max of the logits.
    metric = SegmentationMetric(2, boundary_width=5)
    metric.update({"logits": -logits, "label_map": target}, [{"semantic": target[0]}])
    out = metric.compute()
    assert float(out["miou"]) == 1.0 and float(out["boundary_miou"]) == 1.0


def test_other_target_key_and_no_ignore() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, 2:6, 2:6] = 1
    logits = torch.zeros(1, 2, 8, 8)
    logits[:, 1, 2:6, 2:5] = 1.0  # misses one column of the square
    metric = SegmentationMetric(2, target_key="parts", ignore_index=None, boundary_width=1)
    metric.update({"label_map": logits.argmax(1)}, [{"parts": target[0]}])
    out = metric.compute()
    assert 0.0 < float(out["boundary_miou"]) < float(out["miou"]) < 1.0


@pytest.mark.parametrize(
    ("preds", "targets", "message"),
    [
        (torch.zeros(1, 4, 4), [{"semantic": torch.zeros(4, 4, dtype=torch.int64)}], "dict with 'label_map'"),
        (
            {"logits": torch.zeros(1, 2, 4, 4)},  # scores alone: the label map is the model's to make
            [{"semantic": torch.zeros(4, 4, dtype=torch.int64)}],
            "dict with 'label_map'",
        ),
        (
            {"label_map": torch.zeros(1, 4, 4, dtype=torch.int64)},
            [{"labels": torch.zeros(4, 4)}],
            "no 'semantic' label map",
        ),
    ],
)
def test_bad_inputs_raise_a_clear_error(preds: object, targets: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentationMetric(2).update(preds, targets)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "width"), [(torch.zeros(4, 4, dtype=torch.int64), 1), (torch.zeros(1, 4, 4), 1)]
)
def test_band_bad_target(target: torch.Tensor, width: int) -> None:
    with pytest.raises(ValueError, match="integer Tensor"):
        boundary_band(target, width)


def test_band_bad_width() -> None:
    with pytest.raises(ValueError, match="width"):
        boundary_band(torch.zeros(1, 4, 4, dtype=torch.int64), -1)
