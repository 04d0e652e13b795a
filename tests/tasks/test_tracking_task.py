"""The single_object_tracking task: contract, dataset check, the OPE metric against ope() directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structpred.data.shapes_views import ShapesVideo
from structpred.metrics.ope import ope
from structpred.tasks.base import get_task
from structpred.tasks.tracking import OPEMetric, xyxy_to_xywh


def test_registered_with_clip_inputs_and_the_ope_headline() -> None:
    task = get_task("single_object_tracking")
    assert task.inputs == "clip" and task.headline.key == "success_auc" and task.headline.higher_is_better
    assert task.metric(torch.nn.Identity(), None) is OPEMetric


def test_sample_batch_keeps_the_contract() -> None:
    task = get_task("single_object_tracking")
    clips, targets = task.sample_batch(torch.nn.Identity(), 3, seed=1)
    assert len(clips) == 3 and all(c.shape == (4, 3, 32, 64) for c in clips)
    task.check_predictions({"boxes": torch.stack([t["boxes"] for t in targets])}, 3)
    with pytest.raises(AssertionError, match="boxes"):
        task.check_predictions({"boxes": torch.zeros(3, 4)}, 3)
    with pytest.raises(AssertionError, match="one dict"):
        task.check_predictions([{"boxes": torch.zeros(4, 4)}], 1)


def test_check_dataset_takes_shapes_video_tracks_and_refuses_other_data() -> None:
    task = get_task("single_object_tracking")
    task.check_dataset(ShapesVideo("val", num_images=1, length=3), {}, "--data shapes-video")
    images = [(torch.rand(3, 8, 8), {"boxes": torch.zeros(1, 4)})]
    with pytest.raises(ValueError, match="clip input"):
        task.check_dataset(images, {}, "--data x")  # type: ignore[arg-type]
    clips = [(torch.rand(2, 3, 8, 8), {"labels": torch.zeros(1)})]
    with pytest.raises(ValueError, match="needs 'boxes'"):
        task.check_dataset(clips, {}, "--data y")  # type: ignore[arg-type]


def test_metric_equals_ope_per_clip_averaged() -> None:
    g = torch.Generator().manual_seed(0)
    T = 12
    gts, preds, targets = [], [], []
    for _ in range(3):
        xy = torch.rand(T, 2, generator=g) * 50
        gt = torch.cat([xy, xy + 10 + 5 * torch.rand(T, 2, generator=g)], 1)  # (T, 4) xyxy
        visible = torch.rand(T, generator=g) > 0.2
        pred = gt + 4 * torch.randn(T, 4, generator=g)
        gts.append((gt, visible))
        preds.append(pred)
        targets.append({"boxes": gt, "visible": visible})
    metric = OPEMetric()
    metric.update({"boxes": torch.stack(preds[:2])}, targets[:2])
    metric.update({"boxes": torch.stack(preds[2:])}, targets[2:])
    got = metric.compute()
    want = []
    for pred, (gt, vis) in zip(preds, gts, strict=True):
        p = pred.double().numpy()
        q = gt.double().numpy()
        p_xywh = np.concatenate([p[:, :2], p[:, 2:] - p[:, :2]], 1)
        q_xywh = np.concatenate([q[:, :2], q[:, 2:] - q[:, :2]], 1)
        q_xywh[~vis.numpy()] = np.nan  # invisible frames are excluded
        want.append(ope(p_xywh, q_xywh))
    assert got["num_clips"] == 3
    assert got["success_auc"] == pytest.approx(np.mean([w["success_auc"] for w in want]), abs=1e-12)
    assert got["precision_20"] == pytest.approx(np.mean([w["precision_20"] for w in want]), abs=1e-12)


def test_perfect_tracks_score_one_and_empty_metric_is_nan() -> None:
    box = torch.tensor([[1.0, 2, 11, 22], [2, 3, 12, 23]])
    m = OPEMetric()
    m.update({"boxes": box[None]}, [{"boxes": box}])
    r = m.compute()
    # 20 of 21 thresholds are passed by IoU 1 (the last counts IoU > 1)
    assert r["success_auc"] == pytest.approx(20 / 21) and r["precision_20"] == 1.0
    assert np.isnan(OPEMetric().compute()["success_auc"])
    assert xyxy_to_xywh(box).tolist() == [[1, 2, 10, 20], [2, 3, 10, 20]]
    with pytest.raises(ValueError, match="2 targets for 1"):
        m.update({"boxes": box[None]}, [{"boxes": box}] * 2)
