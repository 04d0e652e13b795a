"""OTB one-pass evaluation against a per-frame loop of the OTB toolkit's MATLAB code and got10k's
``rect_iou`` / ``center_error`` / ``ExperimentOTB._calc_curves``."""

from __future__ import annotations

import ast
import functools
import importlib.util
import math
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from structpred.metrics.ope import PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS, center_error, ope, rect_iou


@functools.cache
def _got10k() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """got10k 0.1.3's ``rect_iou``, ``center_error`` and ``ExperimentOTB._calc_curves``.

    Its metrics module imports shapely (for polygons, unused here) and its experiments package
    needs six, wget, fire...: shapely is stubbed when missing, and ``_calc_curves`` is compiled
    from got10k's own source file (the function alone) rather than imported."""
    if importlib.util.find_spec("got10k") is None:  # the Makefile installs it: make test fails here
        if os.environ.get("STRUCTPRED_REQUIRE_DATA") == "1":
            pytest.fail("got10k is not installed (the Makefile installs it --no-deps)")
        pytest.skip("got10k is not installed (pip install --no-deps got10k==0.1.3)")
    stubs = {}
    if "shapely" not in sys.modules and importlib.util.find_spec("shapely") is None:
        geometry = types.ModuleType("shapely.geometry")
        geometry.box = geometry.Polygon = None  # type: ignore[attr-defined]
        shapely = types.ModuleType("shapely")
        shapely.geometry = geometry  # type: ignore[attr-defined]
        stubs = {"shapely": shapely, "shapely.geometry": geometry}
    sys.modules.update(stubs)
    try:
        from got10k.utils import metrics  # type: ignore[import-untyped]
    finally:  # the stub only serves this import: other tests must still see shapely missing
        for name in stubs:
            del sys.modules[name]

    spec = importlib.util.find_spec("got10k")
    assert spec is not None and spec.submodule_search_locations
    source = (Path(spec.submodule_search_locations[0]) / "experiments" / "otb.py").read_text()
    (cls,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "ExperimentOTB"]
    (fn,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "_calc_curves"]
    namespace: dict[str, Any] = {"np": np}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "got10k/experiments/otb.py", "exec"), namespace)  # noqa: S102
    this = types.SimpleNamespace(nbins_iou=21, nbins_ce=51)
    return (
        metrics.rect_iou,
        metrics.center_error,
        lambda ious, errors: namespace["_calc_curves"](this, ious, errors),
    )


def _otb_toolkit(results: np.ndarray, anno: np.ndarray) -> tuple[list[float], list[float]]:
    """The OTB toolkit frame by frame: calcSeqErrRobust.m (lost boxes carried, first frame = gt,
    invalid gt -> -1), calcRectInt.m (inclusive pixel edges), perfPlot.m (``>`` / ``<=``, all frames)."""
    results = results.copy()
    T = len(anno)
    for i in range(1, T):
        r, ra = results[i], anno[i]
        cond = [(math.isnan(r[k]) or r[2] <= 0 or r[3] <= 0) and not math.isnan(ra[k]) for k in range(4)]
        if all(cond):
            results[i] = results[i - 1]
    results[0] = anno[0]
    cov, err = [], []
    for i in range(T):
        a, b = results[i], anno[i]
        if not all(v > 0 for v in b):
            cov.append(-1.0)
            err.append(-1.0)
            continue
        left_a, bottom_a, right_a, top_a = a[0], a[1], a[0] + a[2] - 1, a[1] + a[3] - 1
        left_b, bottom_b, right_b, top_b = b[0], b[1], b[0] + b[2] - 1, b[1] + b[3] - 1
        inter = max(0.0, min(right_a, right_b) - max(left_a, left_b) + 1) * max(
            0.0, min(top_a, top_b) - max(bottom_a, bottom_b) + 1
        )
        cov.append(min(1.0, inter / (a[2] * a[3] + b[2] * b[3] - inter)))  # float rounding of equal boxes
        ca = (a[0] + (a[2] - 1) / 2, a[1] + (a[3] - 1) / 2)
        cb = (b[0] + (b[2] - 1) / 2, b[1] + (b[3] - 1) / 2)
        err.append(math.hypot(ca[0] - cb[0], ca[1] - cb[1]))
    success = [sum(c > t for c in cov) / T for t in [k * 0.05 for k in range(21)]]
    precision = [sum(e <= t for e in err) / T for t in range(51)]
    return success, precision


def _sequence(rng: np.random.Generator, T: int, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    gt = np.c_[rng.uniform(1, 300, (T, 2)), rng.uniform(5, 80, (T, 2))]
    pred = gt + rng.normal(0, 8, (T, 4)) * np.r_[1, 1, 0.5, 0.5]
    pred[:, 2:] = np.abs(pred[:, 2:]) + 1
    if integer:
        gt, pred = np.round(gt), np.round(pred)
    return pred, gt


@pytest.mark.parametrize("seed", range(5))
def test_equals_got10k(seed: int) -> None:
    got_iou, got_center, got_curves = _got10k()
    pred, gt = _sequence(np.random.default_rng(seed), 60, integer=False)
    pred[0] = gt[0]  # got10k's report() puts the first box on the ground truth
    np.testing.assert_allclose(rect_iou(pred, gt), got_iou(pred.copy(), gt.copy()), rtol=0, atol=1e-12)
    np.testing.assert_allclose(center_error(pred, gt), got_center(pred, gt), rtol=0, atol=1e-12)
    succ, prec = got_curves(got_iou(pred.copy(), gt.copy()), got_center(pred, gt))
    for convention in ("exclude", "otb"):
        ours = ope(pred, gt, convention=convention)
        np.testing.assert_array_equal(ours["success_curve"], succ)
        np.testing.assert_array_equal(ours["precision_curve"], prec)
        assert ours["success_auc"] == pytest.approx(np.mean(succ), abs=1e-12)
        assert ours["precision_20"] == prec[20]


@pytest.mark.parametrize("seed", range(6))
def test_otb_convention_equals_the_toolkit_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, gt = _sequence(rng, 80, integer=seed % 2 == 0)
    gt[rng.choice(80, 6, replace=False)[:3], 2] = 0  # empty ground truth
    gt[rng.choice(80, 3, replace=False), :] = np.nan  # object absent
    gt[5, 0] = 0  # x = 0: the toolkit's 1-based check rejects it too
    pred[rng.choice(np.arange(1, 80), 8, replace=False), :] = np.nan  # tracker lost, carried forward
    pred[10, 3] = -2.0
    success, precision = _otb_toolkit(pred, gt)
    ours = ope(pred, gt, convention="otb")
    np.testing.assert_allclose(ours["success_curve"], success, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ours["precision_curve"], precision, rtol=0, atol=1e-15)
    assert ours["num_frames"] == 80


def test_exclude_convention_against_a_loop() -> None:
    rng = np.random.default_rng(7)
    pred, gt = _sequence(rng, 50, integer=True)
    gt[[3, 9]] = np.nan
    gt[12, 3] = 0
    pred[[4, 20]] = np.nan
    pred[21, 2] = -1
    ours = ope(pred, gt)
    kept = [t for t in range(50) if np.all(np.isfinite(gt[t])) and gt[t, 2] > 0 and gt[t, 3] > 0]
    assert ours["num_frames"] == len(kept) == 47
    ious, errs = [], []
    for t in kept:
        p, g = pred[t], gt[t]
        if not (np.all(np.isfinite(p)) and p[2] > 0 and p[3] > 0):
            ious.append(0.0)
            errs.append(math.inf)
            continue
        w = max(0.0, min(p[0] + p[2], g[0] + g[2]) - max(p[0], g[0]))
        h = max(0.0, min(p[1] + p[3], g[1] + g[3]) - max(p[1], g[1]))
        ious.append(w * h / (p[2] * p[3] + g[2] * g[3] - w * h))
        errs.append(math.hypot(p[0] + p[2] / 2 - g[0] - g[2] / 2, p[1] + p[3] / 2 - g[1] - g[3] / 2))
    for k, thr in enumerate(SUCCESS_THRESHOLDS):
        assert ours["success_curve"][k] == sum(i > thr for i in ious) / len(kept)
    for k, thr in enumerate(PRECISION_THRESHOLDS):
        assert ours["precision_curve"][k] == sum(e <= thr + 1e-9 for e in errs) / len(kept)
    assert np.isnan(ours["iou"][3]) and ours["iou"][4] == 0.0 and ours["center_error"][4] == math.inf


def test_rules_at_the_thresholds() -> None:
    gt = np.array([[0.0, 0.0, 10.0, 10.0]] * 3)
    pred = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 0.0, 10.0, 10.0]])  # IoU 1, .5, 0
    out = ope(pred, gt)
    np.testing.assert_array_equal(out["iou"], [1.0, 0.5, 0.0])
    assert out["success_curve"][0] == pytest.approx(2 / 3)  # IoU 0 is not > 0
    assert out["success_curve"][10] == pytest.approx(1 / 3)  # IoU 0.5 is not > 0.5
    assert out["success_curve"][20] == 0.0  # nothing is > 1
    np.testing.assert_array_equal(out["center_error"], [0.0, 2.5, 20.0])
    assert out["precision_20"] == 1.0 and out["precision_curve"][2] == pytest.approx(1 / 3)  # 20 <= 20
    assert out["success_auc"] == pytest.approx(np.mean(out["success_curve"]))


def test_inputs_are_not_changed_and_tensors_work() -> None:
    pred, gt = _sequence(np.random.default_rng(1), 10, integer=False)
    pred[3] = np.nan
    before = pred.copy()
    a = ope(torch.from_numpy(pred), gt.tolist(), convention="otb")
    np.testing.assert_array_equal(pred, before)
    assert a["success_auc"] == ope(pred, gt, convention="otb")["success_auc"]


def test_no_usable_ground_truth() -> None:
    out = ope(np.ones((3, 4)), np.full((3, 4), np.nan))
    assert out["num_frames"] == 0 and math.isnan(out["success_auc"]) and math.isnan(out["precision_20"])


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "message"),
    [
        (np.zeros((3, 4)), np.zeros((4, 4)), {}, r"one box per frame in both"),
        (np.zeros((3, 5)), np.zeros((3, 5)), {}, r"pred_boxes: expected boxes \[T, 4\]"),
        (np.zeros((0, 4)), np.zeros((0, 4)), {}, r"with T >= 1"),
        (np.zeros((3, 4)), [["a", 1, 2, 3]] * 3, {}, r"gt_boxes: expected numbers"),
        (np.zeros((3, 4)), np.zeros((3, 4)), {"convention": "vot"}, r"convention must be one of"),
    ],
)
def test_bad_input(pred: object, gt: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ope(pred, gt, **kwargs)
