"""The user's own data through the CLI: each layout as another tool writes it (COCO from
Roboflow and CVAT, the VOC devkit, Ultralytics/Roboflow YOLO, image + mask folders) goes through
``train`` (1 epoch, tiny model) -> ``eval``; each broken layout stops with one ``error:`` line and
exit code 2 before any training step (no checkpoint written)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from structpred.cli import main
from structpred.cli._data_args import add_data_arguments, data_kwargs, split_options
from structpred.engine import checkpoint as ckpt
from tests.data import layout_builders as lb

SMALL = ["--model-arg", "width=8", "--model-arg", "fpn_channels=16", "--model-arg", "representation_size=32",
         "--model-arg", "min_size=64", "--model-arg", "max_size=96"]  # fmt: skip
DETECTOR = ["--model", "fasterrcnn_narrow_fpn", *SMALL]
MASKER = ["--model", "maskrcnn_narrow_fpn", *SMALL, "--model-arg", "mask_layers=[16,16]"]
SEGMENTER = ["--model", "fcn8s_narrow", "--model-arg", "width_div=16", "--model-arg", "fc_channels=16",
             "--optimizer", "adamw", "--lr", "0.003"]  # fmt: skip


def _train_eval(
    spec: str, model: list[str], run: Path, capsys, extra: tuple[str, ...] = ()
) -> tuple[str, str]:
    argv = ["train", *model, "--data", spec, "--epochs", "1", "--batch-size", "2", "--no-progress",
            "--out", str(run), *extra]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    trained = capsys.readouterr().out
    assert ckpt.latest_checkpoint(run) is not None
    assert main(["eval", "--checkpoint", str(run), "--data", spec, *extra]) == 0, capsys.readouterr().err
    return trained, capsys.readouterr().out


@pytest.mark.slow
def test_coco_from_roboflow_trains_a_detector(tmp_path: Path, capsys) -> None:
    root = lb.coco_roboflow(tmp_path / "rf", n_train=3)
    trained, evaluated = _train_eval(f"coco:{root}", DETECTOR, tmp_path / "run", capsys)
    assert "map_50" in trained and "map_50" in evaluated


@pytest.mark.slow
def test_coco_from_cvat_trains_mask_rcnn_with_a_carved_val_split(tmp_path: Path, capsys) -> None:
    root = lb.coco_cvat(tmp_path / "cvat", n=5)
    extra = ("--val-fraction", "0.4", "--split-seed", "1")
    trained, evaluated = _train_eval(f"coco:{root}", MASKER, tmp_path / "run", capsys, extra)
    assert "loss_mask" in trained and "map_50" in evaluated
    # The run records the split options: eval of the checkpoint alone gets the same val split.
    _, meta = ckpt.load_checkpoint(tmp_path / "run")
    recorded = meta["config"]["data_kwargs"]
    assert recorded == {"val_fraction": 0.4, "split_seed": 1, "task": "instance_segmentation"}
    assert main(["eval", "--checkpoint", str(tmp_path / "run")]) == 0
    assert "map_50" in capsys.readouterr().out


@pytest.mark.slow
def test_voc_devkit_trains_a_semantic_segmenter_on_segmentation_class(tmp_path: Path, capsys) -> None:
    lb.voc_devkit(tmp_path / "ds", n_train=3)
    trained, evaluated = _train_eval(f"voc:{tmp_path / 'ds'}", SEGMENTER, tmp_path / "run", capsys)
    assert "miou" in trained and "miou" in evaluated
    _, meta = ckpt.load_checkpoint(tmp_path / "run")
    assert meta["config"]["model_kwargs"]["num_classes"] == 21  # background + the 20 VOC classes


@pytest.mark.slow
def test_voc_devkit_trains_a_detector_on_its_boxes(tmp_path: Path, capsys) -> None:
    voc = lb.voc_devkit(tmp_path / "ds", n_train=3)
    (voc / "classes.txt").write_text("cat\ndog\n")
    trained, evaluated = _train_eval(f"voc:{voc}", DETECTOR, tmp_path / "run", capsys)
    assert "map_50" in evaluated


@pytest.mark.slow
def test_yolo_from_roboflow_trains_a_detector(tmp_path: Path, capsys) -> None:
    root = lb.yolo_roboflow(tmp_path / "y", n_train=3)
    trained, evaluated = _train_eval(f"yolo:{root / 'data.yaml'}", DETECTOR, tmp_path / "run", capsys)
    assert "map_50" in evaluated


@pytest.mark.slow
def test_mask_folders_train_a_semantic_segmenter(tmp_path: Path, capsys) -> None:
    root = lb.mask_folders(tmp_path / "m", n_train=3)
    trained, evaluated = _train_eval(f"masks:{root}", SEGMENTER, tmp_path / "run", capsys)
    assert "miou" in evaluated
    _, meta = ckpt.load_checkpoint(tmp_path / "run")
    assert meta["config"]["model_kwargs"]["num_classes"] == 3  # classes.txt: background, cat, dog


MODEL_OF = {"coco": DETECTOR, "voc": DETECTOR, "yolo": DETECTOR, "masks": SEGMENTER}


@pytest.mark.parametrize("kind", lb.BAD_LAYOUTS)
def test_bad_layout_is_one_error_line_before_training(kind: str, tmp_path: Path, capsys) -> None:
    spec, kwargs, message = lb.break_layout(kind, tmp_path)
    model = MASKER if kwargs.get("task") == "instance_segmentation" else MODEL_OF[spec.partition(":")[0]]
    if kwargs.get("task") == "semantic_segmentation":
        model = SEGMENTER
    run = tmp_path / "run"
    assert main(["train", *model, "--data", spec, "--epochs", "1", "--no-progress", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert ckpt.latest_checkpoint(run) is None and not list(run.glob("ckpt-*"))


def test_val_fraction_on_data_with_its_own_val_is_refused(tmp_path: Path, capsys) -> None:
    root = lb.coco2017(tmp_path / "c", n_train=2, n_val=1)
    argv = [
        "train",
        *DETECTOR,
        "--data",
        f"coco:{root}",
        "--val-fraction",
        "0.2",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    assert "has its own val split; --val-fraction is only for data without one" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("ckpt-*"))


def test_task_decides_what_voc_gives(tmp_path: Path, capsys) -> None:
    voc = lb.voc_devkit(tmp_path / "v", n_train=1, n_val=1)
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()  # a segmenter needs the Segmentation sets
    argv = ["train", *SEGMENTER, "--data", f"voc:{voc}", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "has no 'val' split; it has ['train', 'trainval']" in capsys.readouterr().err


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_data_arguments(p, required=False)
    p.add_argument("--model", default=None)
    return p.parse_args(argv)


def test_split_options_only_when_asked() -> None:
    assert split_options(_parse([])) == {}
    assert split_options(_parse(["--val-fraction", "0.25", "--split-seed", "7"])) == {
        "val_fraction": 0.25,
        "split_seed": 7,
    }


def test_the_model_task_goes_to_data_on_disk_only() -> None:
    args = _parse(["--data", "voc:x", "--model", "fcn8s_narrow", "--data-arg", "on_error=skip"])
    assert data_kwargs(args) == {"on_error": "skip", "task": "semantic_segmentation"}
    assert data_kwargs(_parse(["--data", "coco:x", "--model", "maskrcnn_narrow_fpn"]))["task"] == (
        "instance_segmentation"
    )
    assert data_kwargs(_parse(["--data", "shapes", "--model", "fcn8s_narrow"])) == {}
    assert data_kwargs(_parse(["--data", "coco:x", "--model", "no_such_model"])) == {}  # reported later
