"""The multi-task network end to end through the CLI, as a user runs it: train on the shapes world,
every head's metric from one `structpred eval`, every head's files from `structpred predict`
(images of two sizes, a video, --calib), a subset of the heads, ONNX export, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.cli import main
from structpred.data.images import read_image, write_image
from structpred.data.registry import build_dataset
from tests.tasks.predict_cases import make_video

TINY = ["--model-arg", "input_size=64", "--model-arg", "width=8", "--model-arg", "fpn_channels=16",
        "--model-arg", "dense_channels=16"]  # fmt: skip
DATA = ["--data", "shapes", "--data-arg", "num_images=4", "--data-arg", "size=64"]
TRAIN = ["--epochs", "1", "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.002", "--no-progress",
         "--device", "cpu"]  # fmt: skip
LABEL_MAPS = {"semantic": 7, "parts": 13}  # the shapes world's classes per label map, background included
FOCAL, BASELINE = 64.0, 0.1  # the shapes world's camera at 64 px: the depth head's own


def _train(out: Path, *extra: str) -> Path:
    torch.manual_seed(0)
    assert (
        main(["train", "--model", "multitask_narrow", *DATA, *TINY, *TRAIN, *extra, "--out", str(out)]) == 0
    )
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("multitask_run"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A shapes image (64 x 64), a photo of another size (40 x 56) and a 3-frame video (48 x 64)."""
    folder = tmp_path_factory.mktemp("inputs")
    image, _ = build_dataset("shapes", "val", num_images=1, size=64)[0]
    write_image(folder / "shapes.png", image)
    write_image(folder / "photo.png", torch.rand(3, 40, 56))
    return [folder / "shapes.png", folder / "photo.png", make_video(folder / "clip.mp4", frames=3)]


def _predict(run: Path, inputs: list[Path], out: Path, *extra: str) -> list[dict]:
    argv = ["predict", "--checkpoint", str(run), *map(str, inputs), "--out", str(out), "--no-progress"]
    assert main([*argv, "--score-threshold", "0", *extra]) == 0
    return json.loads((out / "predictions.json").read_text())


def _check_item(out: Path, row: dict, stem: str, size: tuple[int, int], heads: list[str]) -> np.ndarray:
    """One image's files and json row; returns its disparity."""
    H, W = size
    assert [h for h in row if h in ("detection", "semantic", "parts", "depth")] == heads
    assert read_image(out / f"{stem}.png").shape == (3, H, len(heads) * W + 2 * (len(heads) - 1))
    for det in row.get("detection", []):
        assert 1 <= det["category_id"] <= 6 and len(det["bbox"]) == 4 and 0 <= det["score"] <= 1
    for head, K in LABEL_MAPS.items():
        if head not in heads:
            assert not (out / f"{stem}_{head}.png").exists()
            continue
        assert row[f"{head}_png"] == f"{stem}_{head}.png"
        grey = np.asarray(Image.open(out / row[f"{head}_png"]))  # mode L: grey level = class id
        assert grey.shape == (H, W) and grey.dtype == np.uint8
        assert np.bincount(grey.reshape(-1), minlength=K).tolist() == row[head]["class_pixels"]
    assert row["disparity_npy"] == f"{stem}_disparity.npy"
    disparity = np.load(out / row["disparity_npy"])
    assert disparity.shape == (H, W) and disparity.dtype == np.float32 and (disparity > 0).all()
    assert row["depth"]["max_disparity"] == pytest.approx(float(disparity.max()), abs=1e-3)
    assert np.asarray(Image.open(out / row["disparity_png"]).convert("RGB")).shape == (H, W, 3)
    return disparity


def test_eval_measures_every_head_in_one_pass(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for key in ("semantic/miou", "parts/miou", "detection/map", "depth/abs_rel", "score"):
        assert f" {key} " in printed, key


def test_predict_writes_every_heads_output_for_images_and_video_frames(
    run: Path, inputs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    rows = _predict(run, inputs, out)
    assert [(Path(r["file_name"]).name, r.get("frame")) for r in rows] == [
        ("shapes.png", None), ("photo.png", None), ("clip.mp4", 0), ("clip.mp4", 1), ("clip.mp4", 2),
    ]  # fmt: skip
    heads = ["detection", "semantic", "parts", "depth"]
    items = [("shapes", (64, 64)), ("photo", (40, 56))] + [
        (f"clip/frame_00000{k}", (48, 64)) for k in range(3)
    ]
    for row, (stem, size) in zip(rows, items, strict=True):
        disparity = _check_item(out, row, stem, size, heads)
        # the depth head's own camera (the shapes world's): metres beside the disparity
        assert row["depth"]["camera"] == {
            "focal": FOCAL,
            "baseline": BASELINE,
            "doffs": 0.0,
            "source": "model",
        }
        depth = np.load(out / row["depth_npy"])
        assert np.allclose(depth, FOCAL * BASELINE / disparity, rtol=1e-5)
        png16 = np.asarray(Image.open(out / row["depth_png"]))
        assert png16.dtype == np.uint16 and np.abs(png16 - depth.astype(np.float64) * 256).max() <= 0.501
    images = json.loads((out / "images.json").read_text())
    assert [i["output"] for i in images] == [f"{stem}.png" for stem, _ in items]


def test_predict_calib_gives_depth_in_the_given_cameras_metres(
    run: Path, inputs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    (row,) = _predict(run, inputs[:1], out, "--calib", "32,0.5,1")
    disparity = np.load(out / row["disparity_npy"])
    assert np.allclose(np.load(out / row["depth_npy"]), 16.0 / (disparity + 1.0), rtol=1e-5)
    assert row["depth"]["camera"] == {"focal": 32.0, "baseline": 0.5, "doffs": 1.0, "source": "--calib"}


@pytest.mark.slow  # ~15 s: a second training run and an ONNX export checked in onnxruntime
def test_a_subset_of_heads_trains_predicts_and_exports(
    inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _train(tmp_path / "run", "--model-arg", "heads=semantic,depth")
    out = tmp_path / "pred"
    (row,) = _predict(run, inputs[:1], out)
    _check_item(out, row, "shapes", (64, 64), ["semantic", "depth"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["images.json", "predictions.json", "shapes.png", "shapes_semantic.png", "shapes_disparity.png",
         "shapes_disparity.npy", "shapes_depth.png", "shapes_depth.npy"]
    )  # fmt: skip
    capsys.readouterr()
    onnx = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(onnx)]) == 0
    printed = capsys.readouterr().out
    assert "output semantic_logits, semantic_label_map, depth_disparity" in printed
    import onnx as onnx_lib

    graph = onnx_lib.load(str(onnx)).graph
    assert [o.name for o in graph.output] == ["semantic_logits", "semantic_label_map", "depth_disparity"]


def test_bad_input_is_one_line_naming_the_head_and_the_key(
    run: Path, inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "masks"  # a masks: folder holds label maps (the semantic key) only
    for split in ("train", "val"):
        write_image(root / "images" / split / "a.png", torch.rand(3, 32, 32))
        (root / "masks" / split).mkdir(parents=True)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 1
        Image.fromarray(mask).save(root / "masks" / split / "a.png")
    (root / "classes.txt").write_text("background\nsquare\n")
    capsys.readouterr()
    argv = ["train", "--model", "multitask_narrow", "--data", f"masks:{root}", *TINY, *TRAIN]
    assert main([*argv, "--out", str(tmp_path / "bad_run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "head 'detection' needs the target 'boxes'" in err and "item 0 has ['image_id', 'semantic']" in err
    assert not (tmp_path / "bad_run").exists()
    # An unreadable image among the inputs: one line naming it, before the model runs.
    bad = tmp_path / "in" / "broken.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    argv = ["predict", "--checkpoint", str(run), str(inputs[0]), str(bad), "--out", str(tmp_path / "o")]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {bad}") and "Traceback" not in err
    assert not (tmp_path / "o").exists()
