"""The detection path of the CLI end to end: train on shapes -> eval (COCO table + PR plot) -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structpred.cli import main
from structpred.data import ShapesWorld
from structpred.data.images import read_image, write_image

pytestmark = pytest.mark.slow

TINY = [
    "--model-arg", "width=8", "--model-arg", "fpn_channels=16", "--model-arg", "representation_size=32",
    "--data-arg", "size=64", "--data-arg", "num_images=4",
]  # fmt: skip


def test_train_eval_predict(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--model", "fasterrcnn_narrow_fpn", "--data", "shapes", "--epochs", "1",
            "--batch-size", "2", "--lr", "0.01", "--no-progress", "--out", str(run), *TINY]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for key in ("map", "map_50", "mar_100", "loss_classifier", "loss_objectness"):
        assert f"{key} " in out or f"{key}\n" in out, key

    plot = tmp_path / "pr.png"
    argv = ["eval", "--checkpoint", str(run), "--split", "test", "--pr-plot", str(plot),
            "--data-arg", "size=64", "--data-arg", "num_images=4"]  # fmt: skip
    assert main(argv) == 0
    assert "map_75" in capsys.readouterr().out

    world = ShapesWorld("test", size=64, num_images=2)
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
    assert isinstance(results, list)
    for r in results:
        assert set(r) >= {"image_id", "category_id", "bbox", "score", "file_name"}
        assert r["image_id"] in (0, 1) and 1 <= r["category_id"] <= len(world.categories)
        x, y, w, h = r["bbox"]
        assert w >= 0 and h >= 0 and 0 <= x <= 64 and 0 <= y <= 64


def test_demo_trains_evaluates_and_draws(tmp_path: Path) -> None:
    from structpred.demo import run_demo

    tiny_model = {"width": 8, "fpn_channels": 16, "representation_size": 32}
    metrics = run_demo(tmp_path, epochs=1, pictures=2, data_kwargs={"size": 64, "num_images": 8},
                       model_kwargs=tiny_model)  # fmt: skip
    assert {"map", "map_50", "mar_100"} <= set(metrics)
    assert (tmp_path / "pr_curve.png").is_file() or metrics["map_50"] <= 0  # no curve without detections
    for sub in ("predictions", "ground_truth"):
        assert sorted(p.name for p in (tmp_path / sub).glob("*.png")) == ["test_000.png", "test_001.png"]
    assert (tmp_path / "predictions" / "predictions.json").is_file()


def test_segmentation_demo_trains_evaluates_and_draws_label_maps(tmp_path: Path) -> None:
    from structpred.demo import run_segmentation_demo

    tiny_model = {"width_div": 16, "fc_channels": 16}
    metrics = run_segmentation_demo(tmp_path, epochs=1, pictures=2, data_kwargs={"size": 64, "num_images": 8},
                                    model_kwargs=tiny_model)  # fmt: skip
    assert {"miou", "boundary_miou", "pixel_accuracy"} <= set(metrics)
    root = tmp_path / "segmentation"
    assert sorted(p.name for p in (root / "ground_truth").glob("*.png")) == ["test_000.png", "test_001.png"]
    predicted = sorted(p.name for p in (root / "predictions").glob("*.png"))
    assert predicted == ["test_000.png", "test_000_labels.png", "test_001.png", "test_001_labels.png"]
    summary = json.loads((root / "predictions" / "predictions.json").read_text())
    assert [sum(s["class_pixels"]) for s in summary] == [64 * 64, 64 * 64]
    assert all(len(s["class_pixels"]) == 7 for s in summary)


def test_demo_command_keeps_the_demo_default_epochs(monkeypatch, tmp_path: Path) -> None:
    import structpred.demo

    calls: list[dict] = []

    def fake_demo(out, **kwargs):  # records what the CLI passes on
        calls.append(kwargs)
        return {"map": 0.5}

    monkeypatch.setattr(structpred.demo, "run_demo", fake_demo)
    assert main(["demo", "--out", str(tmp_path), "--seg-epochs", "0"]) == 0
    assert main(["demo", "--out", str(tmp_path), "--epochs", "4", "--seg-epochs", "0"]) == 0
    assert "epochs" not in calls[0] and calls[1]["epochs"] == 4
