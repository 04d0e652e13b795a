"""FlowMetric's occluded / non-occluded split (``occluded`` or KITTI's ``noc`` masks) against
per-pixel sums written out here; the overall keys stay as they were."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.metrics.flow import FlowMetric


def case(seed: int = 0, h: int = 5, w: int = 7) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.randn(2, h, w, generator=g) * 6
    pred = gt + torch.randn(2, h, w, generator=g) * 3
    valid = torch.rand(h, w, generator=g) > 0.2
    occluded = torch.rand(h, w, generator=g) > 0.6
    return pred, {"flow": gt, "valid": valid, "occluded": occluded}


def naive(
    pred: torch.Tensor, target: dict[str, torch.Tensor], region: torch.Tensor
) -> tuple[float, float, int]:
    total, outliers, count = 0.0, 0, 0
    gt = target["flow"]
    for i in range(gt.shape[1]):
        for j in range(gt.shape[2]):
            if not (target["valid"][i, j] and region[i, j]):
                continue
            e = math.hypot(float(pred[0, i, j] - gt[0, i, j]), float(pred[1, i, j] - gt[1, i, j]))
            total += e
            count += 1
            outliers += e > 3 and e > 0.05 * math.hypot(float(gt[0, i, j]), float(gt[1, i, j]))
    return total, outliers, count


def test_split_matches_naive_sums_over_two_updates():
    metric = FlowMetric()
    sums = {"noc": [0.0, 0, 0], "occ": [0.0, 0, 0]}
    for seed in (1, 2):
        pred, target = case(seed)
        metric.update({"flow": pred[None]}, [target])
        for name, region in (("noc", ~target["occluded"]), ("occ", target["occluded"])):
            total, outliers, count = naive(pred, target, region)
            sums[name] = [sums[name][0] + total, sums[name][1] + outliers, sums[name][2] + count]
    out = metric.compute()
    for name in ("noc", "occ"):
        total, outliers, count = sums[name]
        assert out[f"{name}_pixels"] == count > 0
        assert out[f"epe_{name}"] == pytest.approx(total / count, rel=1e-5)
        assert out[f"fl_{name}"] == pytest.approx(outliers / count)
    assert out["noc_pixels"] + out["occ_pixels"] == out["valid_pixels"]
    weighted = (out["epe_noc"] * out["noc_pixels"] + out["epe_occ"] * out["occ_pixels"]) / out["valid_pixels"]
    assert out["epe"] == pytest.approx(weighted, rel=1e-5)


def test_noc_mask_is_the_complement_and_occluded_wins():
    pred, target = case(3)
    a, b, c = FlowMetric(), FlowMetric(), FlowMetric()
    a.update({"flow": pred[None]}, [target])
    noc_target = {k: v for k, v in target.items() if k != "occluded"} | {"noc": ~target["occluded"]}
    b.update({"flow": pred[None]}, [noc_target])
    both = noc_target | {"occluded": target["occluded"], "noc": torch.ones_like(target["valid"])}
    c.update({"flow": pred[None]}, [both])
    assert a.compute() == b.compute() == c.compute()


def test_without_occlusion_keys_the_output_is_unchanged():
    pred, target = case(4)
    plain = {k: v for k, v in target.items() if k != "occluded"}
    metric = FlowMetric()
    metric.update({"flow": pred[None]}, [plain])
    out = metric.compute()
    assert set(out) == {"epe", "px1", "px3", "px5", "fl_all", "valid_pixels"}
    with_occ = FlowMetric()
    with_occ.update({"flow": pred[None]}, [target])
    assert {k: with_occ.compute()[k] for k in out} == out


def test_mixed_batch_and_empty_region():
    pred, target = case(5)
    nothing_occluded = target | {"occluded": torch.zeros_like(target["valid"])}
    plain = {k: v for k, v in target.items() if k != "occluded"}
    metric = FlowMetric()
    metric.update({"flow": torch.stack([pred, pred])}, [nothing_occluded, plain])
    out = metric.compute()
    assert out["occ_pixels"] == 0 and math.isnan(out["epe_occ"]) and math.isnan(out["fl_occ"])
    assert out["noc_pixels"] == int(target["valid"].sum()) == out["valid_pixels"] // 2
    metric.reset()
    assert "epe_noc" not in metric.compute()


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("occluded", torch.zeros(5, 6, dtype=torch.bool), "occluded"),
        ("noc", torch.zeros(1, 5, 7, dtype=torch.bool), "noc"),
        ("valid", torch.zeros(7, 5, dtype=torch.bool), "valid"),
        ("occluded", [[True]], "occluded"),
    ],
)
def test_bad_masks(key, value, match):
    pred, target = case(6)
    if key == "noc":
        del target["occluded"]  # else ``occluded`` wins and ``noc`` is not read
    with pytest.raises(ValueError, match=match):
        FlowMetric().update({"flow": pred[None]}, [target | {key: value}])
