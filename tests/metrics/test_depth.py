"""Depth and stereo metrics against Godard et al.'s evaluation restated in numpy here, hand-computed
values, naive per-pixel loops, and their bad-input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from structpred.metrics.depth import (
    CROPS,
    DEPTH_KEYS,
    DEPTH_PRESETS,
    MIN_DISPARITY,
    DepthMetric,
    DepthPreset,
    DisparityMetric,
    crop_mask,
    depth_metrics,
    depth_to_disparity,
    disparity_metrics,
    disparity_to_depth,
)


def godard_errors(gt: np.ndarray, pred: np.ndarray) -> list[float]:
    """compute_errors of monodepth's utils/evaluation_utils.py, restated."""
    thresh = np.maximum(gt / pred, pred / gt)
    return [
        np.mean(np.abs(gt - pred) / gt),
        np.mean(((gt - pred) ** 2) / gt),
        np.sqrt(((gt - pred) ** 2).mean()),
        np.sqrt(((np.log(gt) - np.log(pred)) ** 2).mean()),
        (thresh < 1.25).mean(),
        (thresh < 1.25**2).mean(),
        (thresh < 1.25**3).mean(),
    ]


def godard_eval(gt: np.ndarray, pred: np.ndarray, lo: float, hi: float, crop: str | None, median: bool):
    """evaluate_kitti.py's per-image loop (eigen split) restated, plus Zhou et al.'s median scaling."""
    pred = pred.copy()
    mask = np.logical_and(gt > lo, gt < hi)
    if crop is not None:
        h, w = gt.shape
        c = np.array([CROPS[crop][0] * h, CROPS[crop][1] * h, CROPS[crop][2] * w, CROPS[crop][3] * w])
        c = c.astype(np.int32)
        crop_m = np.zeros(mask.shape)
        crop_m[c[0] : c[1], c[2] : c[3]] = 1
        mask = np.logical_and(mask, crop_m)
    p, g = pred[mask], gt[mask]
    if median:
        p = p * (np.median(g) / np.median(p))
    p[p < lo] = lo
    p[p > hi] = hi
    return godard_errors(g, p)


def random_depth(seed: int, shape=(2, 1, 40, 120), hi: float = 100.0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.0, hi, shape)
    gt[rng.random(shape) < 0.3] = 0.0  # sparse, like projected lidar
    pred = np.abs(gt + rng.normal(0, 5, shape)) + 0.01
    return torch.from_numpy(pred), torch.from_numpy(gt)


def test_hand_computed_two_pixels():
    out = depth_metrics(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 2.0]]))
    assert out["abs_rel"] == pytest.approx(0.5)
    assert out["sq_rel"] == pytest.approx(0.5)
    assert out["rmse"] == pytest.approx(math.sqrt(0.5))
    assert out["rmse_log"] == pytest.approx(math.log(2) / math.sqrt(2))
    # ratios 2 and 1: 2 fails all of 1.25, 1.5625, 1.953125
    assert (out["a1"], out["a2"], out["a3"]) == (0.5, 0.5, 0.5)
    assert set(out) == set(DEPTH_KEYS)


def test_no_preset_matches_compute_errors_over_gt_positive():
    pred, gt = random_depth(0, (1, 30, 50))
    g, p = gt.numpy()[0], pred.numpy()[0]
    mask = g > 0
    want = godard_errors(g[mask], p[mask])
    out = depth_metrics(pred, gt)
    assert [out[k] for k in DEPTH_KEYS] == pytest.approx(want, rel=1e-12)


def test_unknown_gt_is_ignored_nan_inf_and_negative():
    pred = torch.tensor([[1.0, 5.0, 5.0, 5.0, 2.0]])
    gt = torch.tensor([[1.0, float("nan"), float("inf"), -3.0, 4.0]])
    out = depth_metrics(pred, gt)
    assert out == pytest.approx(depth_metrics(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 4.0]])))


@pytest.mark.parametrize("name", sorted(DEPTH_PRESETS))
def test_presets_match_godard_and_zhou_loops(name):
    p = DEPTH_PRESETS[name]
    pred, gt = random_depth(1, (2, 1, 40, 120))
    got = depth_metrics(pred, gt, name)
    args = (p.min_depth, p.max_depth, p.crop, p.median_scaling)
    per = [godard_eval(gt[i, 0].numpy(), pred[i, 0].numpy(), *args) for i in range(2)]
    want = np.mean(per, axis=0)
    assert [got[k] for k in DEPTH_KEYS] == pytest.approx(want.tolist(), rel=1e-10)
    assert depth_metrics(pred, gt, p) == got  # the preset object works as its name


def test_preset_table():
    assert DEPTH_PRESETS["kitti_eigen"] == DepthPreset(
        1e-3, 80.0, "eigen", False, DEPTH_PRESETS["kitti_eigen"].source
    )
    assert DEPTH_PRESETS["kitti_garg"].crop == "garg" and DEPTH_PRESETS["kitti_garg"].max_depth == 80.0
    assert DEPTH_PRESETS["kitti_eigen_median"].median_scaling
    assert DEPTH_PRESETS["cap50"].max_depth == 50.0
    assert all(p.source for p in DEPTH_PRESETS.values())


def test_crops_by_hand_on_kitti_size():
    garg = crop_mask(370, 1224, "garg")
    rows, cols = np.nonzero(garg)
    # int(0.40810811 * 370) = 151, int(0.99189189 * 370) = int(366.99999993) = 366,
    # int(0.03594771 * 1224) = int(43.99999704) = 43, int(0.96405229 * 1224) = 1180
    # (evaluate_kitti.py's comment rounds them to [-218, -3, 44, 1180])
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (151, 366, 43, 1180)
    eigen = crop_mask(370, 1224, "eigen")
    rows, cols = np.nonzero(eigen)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (122, 337, 43, 1180)
    assert crop_mask(4, 5, None).all()


def test_median_scaling_removes_scale():
    pred, gt = random_depth(2, (1, 40, 120), hi=60.0)
    preset = DepthPreset(1e-3, 80.0, None, True)
    scaled = depth_metrics(pred * 7.5, gt, preset)
    assert scaled == pytest.approx(depth_metrics(pred, gt, preset), rel=1e-12)
    exact = torch.where(gt > 0, gt, 1.0) * 3.0
    assert depth_metrics(exact, gt, preset)["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_cap_clamps_prediction_and_masks_gt():
    pred = torch.tensor([[100.0, 1e-6, 10.0]])
    gt = torch.tensor([[50.0, 2.0, 90.0]])  # 90 m is beyond the cap: not scored
    got = depth_metrics(pred, gt, DepthPreset(1.0, 80.0))
    want = godard_errors(np.array([50.0, 2.0]), np.array([80.0, 1.0]))
    assert [got[k] for k in DEPTH_KEYS] == pytest.approx(want)


def test_batch_is_mean_of_images_and_empty_images_left_out():
    pred, gt = random_depth(3, (3, 1, 20, 30))
    gt[1] = 0.0  # no evaluated pixel
    per = [depth_metrics(pred[i], gt[i]) for i in (0, 2)]
    got = depth_metrics(pred, gt)
    for k in DEPTH_KEYS:
        assert got[k] == pytest.approx((per[0][k] + per[1][k]) / 2)
    assert (
        depth_metrics(pred[1, 0], gt[1, 0])["abs_rel"] != depth_metrics(pred[1, 0], gt[1, 0])["abs_rel"]
    )  # NaN


def test_one_pixel_and_all_invalid():
    one = depth_metrics(torch.tensor([[3.0]]), torch.tensor([[2.0]]))
    assert one["abs_rel"] == pytest.approx(0.5) and one["rmse"] == pytest.approx(1.0) and one["a1"] == 0.0
    none = depth_metrics(torch.ones(1, 4, 4), torch.zeros(1, 4, 4))
    assert all(math.isnan(v) for v in none.values())


@pytest.mark.parametrize(
    ("pred", "gt", "preset", "match"),
    [
        (torch.ones(4, 5), torch.ones(4, 6), None, "one size"),
        (torch.ones(2, 4, 5), torch.ones(2, 4, 5), None, r"\[B, 1, H, W\]"),
        (torch.ones(0, 5), torch.ones(0, 5), None, "empty"),
        (torch.tensor([[1.0, float("nan")]]), torch.ones(1, 2), None, "NaN or inf"),
        (torch.tensor([[1.0, float("inf")]]), torch.ones(1, 2), None, "NaN or inf"),
        (torch.tensor([[1.0, 0.0]]), torch.ones(1, 2), None, "depth <= 0"),
        (torch.ones(2, 2), torch.ones(2, 2), "kitti", "preset must be"),
        (torch.zeros(2, 2), torch.ones(2, 2), DepthPreset(median_scaling=True), "positive median"),
        ("depth", torch.ones(2, 2), None, "pred must be a real"),
    ],
)
def test_depth_metrics_bad_input(pred, gt, preset, match):
    with pytest.raises(ValueError, match=match):
        depth_metrics(pred, gt, preset)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"min_depth": -1.0}, "min_depth"), ({"max_depth": 0.0}, "max_depth"), ({"crop": "kitti"}, "crop")],
)
def test_preset_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DepthPreset(**kwargs)


def test_preset_clamp_rescues_zero_prediction():
    out = depth_metrics(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 2.0]]), "kitti_garg")
    assert math.isnan(out["abs_rel"])  # 1 x 2 image: the Garg crop keeps no pixel
    pred, gt = torch.zeros(1, 40, 40), torch.full((1, 40, 40), 2.0)
    assert depth_metrics(pred, gt, DepthPreset(1e-3, 80.0))["abs_rel"] == pytest.approx(1 - 1e-3 / 2)


# ----------------------------------------------------------------------------- disparity


def naive_disparity(pred, gt, valid):
    total, n, b2, b3, d1 = 0.0, 0, 0, 0, 0
    for p, g, v in zip(pred.flatten().tolist(), gt.flatten().tolist(), valid.flatten().tolist(), strict=True):
        if not (v and g > 0 and math.isfinite(g)):
            continue
        e = abs(p - g)
        total, n, b2, b3 = total + e, n + 1, b2 + (e > 2), b3 + (e > 3)
        d1 += e > 3 and e > 0.05 * g
    return {"epe": total / n, "bad2": 100 * b2 / n, "bad3": 100 * b3 / n, "d1": 100 * d1 / n}


def test_disparity_metrics_against_naive_loop():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 1, 9, 11, generator=g) * 80
    gt[0, 0, 0, :3] = 0.0
    gt[1, 0, 1, 1] = float("nan")
    pred = gt.nan_to_num(5.0) + torch.randn(2, 1, 9, 11, generator=g) * 4
    valid = torch.rand(2, 1, 9, 11, generator=g) > 0.2
    got = disparity_metrics(pred, gt, valid)
    assert got == pytest.approx(naive_disparity(pred, gt, valid), rel=1e-12)
    assert disparity_metrics(pred, gt, valid[:, 0]) == got  # [B, H, W] valid too


def test_disparity_thresholds_are_strict():
    gt = torch.tensor([[10.0, 100.0, 100.0, 50.0]])
    pred = torch.tensor([[12.0, 103.0, 106.0, 53.5]])  # errors 2, 3, 6, 3.5
    got = disparity_metrics(pred, gt)
    assert got["epe"] == pytest.approx(14.5 / 4)
    assert got["bad2"] == 75.0 and got["bad3"] == 50.0
    assert got["d1"] == 50.0  # 6 > 5 % of 100, 3.5 > 5 % of 50; 3 is not > 3


def test_disparity_all_invalid_is_nan_and_bad_input():
    assert all(math.isnan(v) for v in disparity_metrics(torch.ones(3, 3), torch.zeros(3, 3)).values())
    with pytest.raises(ValueError, match="valid must be a bool"):
        disparity_metrics(torch.ones(3, 3), torch.ones(3, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="does not match"):
        disparity_metrics(torch.ones(3, 3), torch.ones(3, 3), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN or inf"):
        disparity_metrics(torch.full((3, 3), float("nan")), torch.ones(3, 3))


def test_disparity_depth_conversion():
    disp = torch.tensor([[0.0, -1.0, 10.0, 20.0, float("nan")]])
    depth = disparity_to_depth(disp, 500.0, 0.1)
    assert depth[0].tolist() == pytest.approx([0.0, 0.0, 5.0, 2.5, 0.0])
    # Middlebury Motorcycle-like calibration: doffs shifts disparity before the division.
    z = disparity_to_depth(torch.tensor([50.0]), torch.tensor(3979.911), torch.tensor(0.193001), 124.343)
    assert float(z) == pytest.approx(3979.911 * 0.193001 / (50.0 + 124.343))
    back = depth_to_disparity(depth, 500.0, 0.1)
    assert back[0].tolist() == pytest.approx([0.0, 0.0, 10.0, 20.0, 0.0])
    d = torch.rand(4, 5, dtype=torch.float64) * 60 + 1
    assert torch.allclose(depth_to_disparity(disparity_to_depth(d, 700.0, 0.5, 3.0), 700.0, 0.5, 3.0), d)
    assert torch.equal(disparity_to_depth(disp, np.float32(500.0), np.float64(0.1)), depth)  # numpy scalars
    with pytest.raises(ValueError, match="focal"):
        disparity_to_depth(disp, 0.0, 0.1)
    with pytest.raises(ValueError, match="focal"):
        disparity_to_depth(disp, True, 0.1)
    with pytest.raises(ValueError, match="baseline"):
        disparity_to_depth(disp, 1.0, torch.ones(2))
    with pytest.raises(ValueError, match="baseline"):
        depth_to_disparity(depth, 1.0, float("nan"))
    with pytest.raises(ValueError, match="disp must be a float"):
        disparity_to_depth(torch.ones(2, dtype=torch.int64), 1.0, 1.0)


# ----------------------------------------------------------------------------- engine metrics


def stereo_case(seed: int, b: int = 2, h: int = 12, w: int = 20, calib: bool = True):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 1, h, w, generator=g) * 30 + 1
    pred = gt + torch.randn(b, 1, h, w, generator=g) * 3
    targets = []
    for i in range(b):
        t = {"disparity": gt[i], "valid": torch.rand(h, w, generator=g) > 0.25}
        if calib:
            t.update(focal=torch.tensor(400.0), baseline=torch.tensor(0.1))
        targets.append(t)
    return {"disparity": pred}, targets


def test_disparity_metric_pixel_weighted_and_depth_through_calibration():
    m = DisparityMetric()
    preds_a, targets_a = stereo_case(0, h=12, w=20)
    preds_b, targets_b = stereo_case(1, b=1, h=7, w=9)
    m.update(preds_a, targets_a)
    m.update(preds_b, targets_b)
    out = m.compute()
    preds = [preds_a["disparity"][0], preds_a["disparity"][1], preds_b["disparity"][0]]
    floored = [p.clamp(min=MIN_DISPARITY) for p in preds]  # the metric's "infinitely far"
    targets = targets_a + targets_b
    sums = [naive_disparity(p, t["disparity"], t["valid"]) for p, t in zip(preds, targets, strict=True)]
    counts = [int(t["valid"].sum()) for t in targets]
    assert out["epe"] == pytest.approx(
        sum(s["epe"] * c for s, c in zip(sums, counts, strict=True)) / sum(counts)
    )
    assert out["valid_pixels"] == sum(counts) and out["images"] == 3
    depths = [
        depth_metrics(
            disparity_to_depth(p, 400.0, 0.1), disparity_to_depth(t["disparity"] * t["valid"], 400.0, 0.1)
        )
        for p, t in zip(floored, targets, strict=True)
    ]
    for k in DEPTH_KEYS:
        assert out[k] == pytest.approx(np.mean([d[k] for d in depths]))
    assert out["protocol"] == "metric" and out["depth_images"] == 3


def test_disparity_metric_list_of_dicts_equals_batch_and_no_calibration():
    preds, targets = stereo_case(2, calib=False)
    a, b = DisparityMetric(), DisparityMetric()
    a.update(preds, targets)
    b.update([{"disparity": preds["disparity"][i]} for i in range(2)], targets)
    assert a.compute() == b.compute()
    assert "abs_rel" not in a.compute()
    a.reset()
    assert a.compute()["valid_pixels"] == 0 and math.isnan(a.compute()["epe"])


@pytest.mark.parametrize(
    ("preds", "targets", "match"),
    [
        (
            {"depth": torch.ones(1, 1, 4, 4)},
            [{"disparity": torch.ones(1, 4, 4)}],
            r"preds\[0\]\['disparity'\]",
        ),
        ({"disparity": torch.ones(2, 1, 4, 4)}, [{"disparity": torch.ones(1, 4, 4)}], "2 predicted"),
        (
            {"disparity": torch.ones(1, 1, 4, 4)},
            [{"valid": torch.ones(4, 4, dtype=torch.bool)}],
            "no 'disparity'",
        ),
        (
            {"disparity": torch.ones(1, 1, 4, 4)},
            [{"disparity": torch.ones(1, 4, 5)}],
            r"targets\[0\]\['disparity'\]",
        ),
        ({"disparity": torch.full((1, 1, 4, 4), float("nan"))}, [{"disparity": torch.ones(1, 4, 4)}], "NaN"),
        (
            {"disparity": torch.ones(1, 1, 4, 4)},
            [{"disparity": torch.ones(1, 4, 4), "focal": torch.tensor(-1.0), "baseline": 0.1}],
            "focal",
        ),
        ({"disparity": torch.ones(1, 1, 4, 4)}, {"disparity": torch.ones(1, 4, 4)}, "list of dicts"),
    ],
)
def test_disparity_metric_bad_input(preds, targets, match):
    with pytest.raises(ValueError, match=match):
        DisparityMetric().update(preds, targets)


def test_depth_metric_protocols():
    preds, targets = stereo_case(3, b=1)
    pred, t = preds["disparity"], targets[0]
    gt_depth = disparity_to_depth(t["disparity"], 400.0, 0.1)
    fl = pred.clamp(min=MIN_DISPARITY)  # the metric's floor on predicted disparity

    metric = DepthMetric()  # calibrated, against the target depth
    metric.update(preds, [{**t, "depth": gt_depth}])
    out = metric.compute()
    want = depth_metrics(disparity_to_depth(fl, 400.0, 0.1), gt_depth * t["valid"])
    assert [out[k] for k in DEPTH_KEYS] == pytest.approx([want[k] for k in DEPTH_KEYS])
    assert out["protocol"] == "metric"
    assert out["epe"] == pytest.approx(naive_disparity(pred, t["disparity"], t["valid"])["epe"])

    metric = DepthMetric()  # depth, no calibration: 1 / disparity median-scaled
    metric.update(preds, [{"depth": gt_depth}])
    out = metric.compute()
    want = depth_metrics(1.0 / fl, gt_depth, DepthPreset(median_scaling=True))
    assert out["abs_rel"] == pytest.approx(want["abs_rel"]) and out["protocol"] == "depth_median"
    assert math.isnan(out["epe"])

    metric = DepthMetric()  # disparity only: inverse disparities median-scaled
    metric.update(preds, [{"disparity": t["disparity"]}])
    out = metric.compute()
    want = depth_metrics(1.0 / fl, 1.0 / t["disparity"], DepthPreset(median_scaling=True))
    assert out["rmse_log"] == pytest.approx(want["rmse_log"]) and out["protocol"] == "disparity_median"
    # the scale of the calibration does not matter to a median-scaled protocol
    assert out["abs_rel"] == pytest.approx(
        depth_metrics(
            disparity_to_depth(fl, 9.0, 3.0),
            disparity_to_depth(t["disparity"], 9.0, 3.0),
            DepthPreset(median_scaling=True),
        )["abs_rel"]
    )


def test_depth_metric_batching_equivalence_and_mixed_protocols():
    preds, targets = stereo_case(4, b=3)
    targets[2] = {"disparity": targets[2]["disparity"]}
    whole, split = DepthMetric("kitti_garg"), DepthMetric("kitti_garg")
    whole.update(preds, targets)
    for i in range(3):
        split.update({"disparity": preds["disparity"][i : i + 1]}, [targets[i]])
    assert whole.compute() == split.compute()
    assert whole.compute()["protocol"] == "disparity_median+metric"


def test_depth_metric_target_without_ground_truth_and_zero_prediction():
    metric = DepthMetric()
    metric.update({"disparity": torch.zeros(1, 1, 4, 4)}, [{}])
    out = metric.compute()
    assert out["images"] == 1 and out["depth_images"] == 0 and out["protocol"] == "none"
    assert math.isnan(out["abs_rel"])
    # a zero predicted disparity is "infinitely far": scored at MIN_DISPARITY, finite and large
    metric.update(
        {"disparity": torch.zeros(1, 1, 4, 4)},
        [{"disparity": torch.full((1, 4, 4), 5.0), "focal": 10.0, "baseline": 1.0}],
    )
    out = metric.compute()
    assert out["depth_images"] == 1 and math.isfinite(out["abs_rel"]) and out["abs_rel"] > 100
    with pytest.raises(ValueError, match=r"targets\[0\]\['depth'\]"):
        metric.update({"disparity": torch.ones(1, 1, 4, 4)}, [{"depth": torch.ones(2, 4, 4)}])


def test_engine_metrics_one_pixel_all_invalid_and_empty():
    one = {"disparity": torch.tensor([[[2.0]]]), "focal": 10.0, "baseline": 1.0}  # gt 2 px = 5 m
    m = DisparityMetric()
    m.update({"disparity": torch.full((1, 1, 1, 1), 4.5)}, [one])  # 4.5 px = 2.222 m
    out = m.compute()
    assert out["epe"] == 2.5 and out["bad2"] == 100.0 and out["d1"] == 0.0 and out["valid_pixels"] == 1
    assert out["abs_rel"] == pytest.approx(abs(5.0 - 10.0 / 4.5) / 5.0)
    invalid = {**one, "valid": torch.zeros(1, 1, dtype=torch.bool)}
    for metric in (DisparityMetric(), DepthMetric()):
        metric.update({"disparity": torch.ones(1, 1, 1, 1)}, [invalid])
        out = metric.compute()
        assert out["valid_pixels"] == 0 and math.isnan(out["epe"]) and math.isnan(out["abs_rel"])
        assert out["depth_images"] == 0
        with pytest.raises(ValueError, match="empty"):
            metric.update({"disparity": torch.ones(1, 1, 0, 3)}, [{"disparity": torch.ones(1, 0, 3)}])
