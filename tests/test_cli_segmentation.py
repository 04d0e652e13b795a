"""The segmentation paths of the CLI end to end: train -> eval -> predict, for Mask R-CNN
(COCO segm mAP, masks as RLE in the json) and a semantic segmenter (mIoU, label-map PNGs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from structpred.cli import main
from structpred.data import ShapesWorld
from structpred.data.images import read_image, write_image

pytestmark = pytest.mark.slow

DATA = ["--data-arg", "size=64", "--data-arg", "num_images=4"]


def _images(tmp_path: Path) -> list[Path]:
    world = ShapesWorld("test", size=64, num_images=2)
    files = []
    for i in range(2):
        files.append(tmp_path / "in" / f"img{i}.png")
        write_image(files[-1], world[i][0])
    return files


def test_mask_rcnn_train_eval_predict(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    tiny = ["--model-arg", "width=8", "--model-arg", "fpn_channels=16",
            "--model-arg", "representation_size=32", "--model-arg", "mask_layers=[16,16]",
            "--model-arg", "box_score_thresh=0.0"]  # fmt: skip
    argv = ["train", "--model", "maskrcnn_narrow_fpn", "--data", "shapes", "--epochs", "1",
            "--batch-size", "2", "--lr", "0.01", "--no-progress", "--out", str(run),
            *tiny, *DATA]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "loss_mask" in out and "map_50" in out  # validation: losses and COCO segm mAP
    assert main(["eval", "--checkpoint", str(run), "--split", "test", *DATA]) == 0
    assert "map_75" in capsys.readouterr().out
    files = _images(tmp_path)
    pred_dir = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(run), "--out", str(pred_dir), "--score-threshold", "0.0"]
    assert main([*argv, *map(str, files)]) == 0
    for f in files:
        assert read_image(pred_dir / f"{f.stem}.png").shape == (3, 64, 64)
    results = json.loads((pred_dir / "predictions.json").read_text())
    assert results, "box_score_thresh=0 must leave detections to check"
    from pycocotools import mask as mask_utils

    for r in results:
        rle = r["segmentation"]
        assert rle["size"] == [64, 64]
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        assert decoded.shape == (64, 64) and set(np.unique(decoded)) <= {0, 1}


def test_semantic_segmenter_train_eval_predict(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--model", "fcn8s_narrow", "--data", "shapes", "--epochs", "1", "--batch-size", "2",
            "--lr", "0.003", "--optimizer", "adamw", "--no-progress", "--out", str(run),
            "--model-arg", "width_div=16", "--model-arg", "fc_channels=16", *DATA]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "miou" in out and "boundary_miou" in out and "loss_seg" in out
    assert main(["eval", "--checkpoint", str(run), "--split", "test", *DATA]) == 0
    assert "pixel_accuracy" in capsys.readouterr().out
    files = _images(tmp_path)
    pred_dir = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run), "--out", str(pred_dir), *map(str, files)]) == 0
    summary = json.loads((pred_dir / "predictions.json").read_text())
    assert [s["labels_png"] for s in summary] == ["img0_labels.png", "img1_labels.png"]
    for s in summary:
        labels = np.asarray(Image.open(pred_dir / s["labels_png"]))
        assert labels.shape == (64, 64) and int(labels.max()) < 7
        assert np.bincount(labels.reshape(-1), minlength=7).tolist() == s["class_pixels"]
