"""The multi-object tracking task: its metric against mot_metrics on the same rows, clips kept
apart, the prediction contract, and a video detector trained and evaluated through the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from structpred.cli import main
from structpred.metrics import mot_metrics
from structpred.tasks import get_task
from structpred.tasks.multi_object_tracking import MOTMetric


def _clip(seed: int, M: int = 3, T: int = 6) -> tuple[dict, dict]:
    """Ground-truth tracks (one hidden in frames 2-3) and a tracker's noisy rows of them, one id swapped."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(M, 1, 2, generator=g) * 40 + torch.arange(T).view(1, T, 1) * 3.0  # (M, T, 2)
    tracks = torch.cat([xy, xy + 10], -1)  # (M, T, 4)
    tracks[0, 2:4] = float("nan")
    frames, ids, boxes = [], [], []
    for m in range(M):
        for t in range(T):
            if math.isnan(float(tracks[m, t, 0])):
                continue
            frames.append(t)
            ids.append(m + 1 if not (m == 1 and t >= 4) else 7)  # track 2 gets a new id at frame 4
            boxes.append(tracks[m, t] + torch.randn(4, generator=g) * 0.8)
    n = len(frames)
    pred = {"frames": torch.tensor(frames), "track_ids": torch.tensor(ids), "boxes": torch.stack(boxes),
            "scores": torch.ones(n), "labels": torch.ones(n, dtype=torch.int64)}  # fmt: skip
    return pred, {"tracks": tracks, "labels": torch.ones(M, dtype=torch.int64)}


def _rows(pred: dict, target: dict) -> tuple[np.ndarray, np.ndarray]:
    """The same clip as MOTChallenge rows, written out directly."""
    gt = []
    for m, track in enumerate(target["tracks"].double().numpy()):
        for t, (x1, y1, x2, y2) in enumerate(track):
            if np.isfinite(x1):
                gt.append([t + 1, m + 1, x1, y1, x2 - x1, y2 - y1])
    b = pred["boxes"].double().numpy()
    hyp = np.column_stack(
        [pred["frames"].numpy() + 1, pred["track_ids"].numpy(), b[:, :2], b[:, 2:] - b[:, :2]]
    )
    return np.array(gt), hyp


def test_one_clip_equals_mot_metrics_on_its_rows() -> None:
    pred, target = _clip(0)
    metric = MOTMetric()
    metric.update([pred], [target])
    ours = metric.compute()
    direct = mot_metrics(*_rows(pred, target))
    assert ours == pytest.approx(direct, abs=1e-12)
    assert ours["num_switches"] == 1 and ours["num_misses"] == 0 and 0 < ours["hota"] < 1


def test_clips_are_kept_apart_frames_and_identities() -> None:
    """Two clips: the same as two sequences placed one after the other, ids never shared."""
    (p0, t0), (p1, t1) = _clip(0), _clip(1)
    metric = MOTMetric()
    metric.update([p0, p1], [t0, t1])
    ours = metric.compute()
    g0, h0 = _rows(p0, t0)
    g1, h1 = _rows(p1, t1)
    g1[:, 0] += 6
    h1[:, 0] += 6
    g1[:, 1] += 100
    h1[:, 1] += 100
    direct = mot_metrics(np.concatenate([g0, g1]), np.concatenate([h0, h1]))
    assert ours == pytest.approx(direct, abs=1e-12)
    assert ours["num_switches"] == 2
    metric.reset()
    metric.update([p0], [t0])
    assert metric.compute()["num_objects"] == len(_rows(p0, t0)[0])


def test_visible_mask_and_bad_input() -> None:
    pred, target = _clip(2)
    hidden = torch.ones(3, 6, dtype=torch.bool)
    hidden[2] = False  # track 3 never counted
    metric = MOTMetric()
    metric.update([pred], [{**target, "visible": hidden}])
    assert metric.compute()["num_false_positives"] == int((pred["track_ids"] == 3).sum())
    with pytest.raises(ValueError, match="tracks"):
        MOTMetric().update([pred], [{"labels": target["labels"]}])
    with pytest.raises(ValueError, match="frames outside"):
        MOTMetric().update([{**pred, "frames": pred["frames"] + 6}], [target])
    with pytest.raises(ValueError, match="2 predictions for 1 clips"):
        MOTMetric().update([pred, pred], [target])


def test_contract_and_sample_batch() -> None:
    task = get_task("multi_object_tracking")
    assert task.inputs == "clip" and task.headline.key == "hota"
    clips, targets = task.sample_batch(torch.nn.Identity(), batch_size=2)
    assert clips[0].shape == (3, 3, 48, 64) and targets[0]["tracks"].shape == (2, 3, 4)
    pred, _ = _clip(0)
    task.check_predictions([pred, pred], 2)
    with pytest.raises(AssertionError):
        task.check_predictions([{**pred, "track_ids": pred["track_ids"].float()}] * 2, 2)


@pytest.mark.slow
def test_video_detector_trains_and_evaluates_through_the_cli(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    torch.manual_seed(0)
    argv = ["train", "--model", "video_detector", "--data", "shapes-video", "--data-arg", "num_images=2",
            "--data-arg", "size=64", "--data-arg", "length=3", "--epochs", "1", "--batch-size", "1",
            "--no-progress", "--device", "cpu", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    data = ["--data", "shapes-video", "--data-arg", "num_images=2", "--data-arg", "size=64",
            "--data-arg", "length=3"]  # fmt: skip
    code = main(["eval", "--checkpoint", str(run), *data, "--device", "cpu", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "hota" in printed and "mota" in printed
