"""The keypoint path of the CLI end to end: train on shapes_keypoints -> eval (OKS AP) -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structpred.cli import main
from structpred.data.images import read_image, write_image
from structpred.data.shapes_keypoints import NUM_KEYPOINTS, ShapesKeypoints

pytestmark = pytest.mark.slow

TINY = [
    "--model-arg", "width=8", "--model-arg", "fpn_channels=16",
    "--data-arg", "size=64", "--data-arg", "num_images=4",
]  # fmt: skip


def test_train_eval_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["train", "--model", "keypointrcnn_narrow_fpn", "--data", "shapes_keypoints", "--epochs", "1",
            "--batch-size", "2", "--lr", "0.01", "--no-progress", "--out", str(run), *TINY]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for key in ("map", "map_50", "mar", "box_map_50", "loss_keypoint"):
        assert f" {key} " in out or f" {key}\n" in out or f"{key} " in out, key
    config = json.loads(sorted(run.glob("ckpt-*.json"))[-1].read_text())["config"]
    assert config["model_kwargs"]["num_keypoints"] == NUM_KEYPOINTS  # from the dataset's keypoint_names

    argv = [
        "eval",
        "--checkpoint",
        str(run),
        "--split",
        "test",
        "--data-arg",
        "size=64",
        "--data-arg",
        "num_images=4",
    ]
    assert main(argv) == 0
    assert "map_medium" in capsys.readouterr().out

    world = ShapesKeypoints("test", size=64, num_images=2)
    files = []
    for i in range(2):
        files.append(tmp_path / "in" / f"img{i}.png")
        write_image(files[-1], world[i][0])
    pred_dir = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(run), "--out", str(pred_dir), "--score-threshold", "0.0"]
    assert main([*argv, *map(str, files)]) == 0
    for f in files:
        assert read_image(pred_dir / f"{f.stem}.png").shape == (3, 64, 64)
    results = json.loads((pred_dir / "predictions.json").read_text())
    assert results, "a random detector at score threshold 0 still writes rows"
    for r in results:
        assert set(r) >= {"image_id", "category_id", "bbox", "score", "keypoints", "keypoints_scores"}
        kp = r["keypoints"]
        assert len(kp) == 3 * NUM_KEYPOINTS and kp[2::3] == [1.0] * NUM_KEYPOINTS  # COCO's flat x, y, v
        assert len(r["keypoints_scores"]) == NUM_KEYPOINTS
