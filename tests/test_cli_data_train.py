"""The CLI's data and training commands, in-process: ``data export``, ``train``, ``eval``, specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from structpred.cli import main
from structpred.data import ShapesWorld, build_dataset, open_export
from structpred.engine import checkpoint as ckpt

SHAPES_ARGS = ["--data-arg", "size=48", "--data-arg", "num_images=3"]


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_data_export_shapes_reads_back_as_the_same_items(fmt: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / fmt
    argv = ["data", "export", "shapes", "--format", fmt, "--out", str(out), "--splits", "train", "val"]
    assert main([*argv, *SHAPES_ARGS]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["train", "val"]
    for split in ("train", "val"):
        world = ShapesWorld(split, size=48, num_images=3)
        files = build_dataset(f"{fmt}:{out}", split)  # the --data spec a user passes to train
        assert len(files) == 3
        assert files.categories.names == world.categories.names
        for i in range(3):
            (image, target), (file_image, file_target) = world[i], files[i]
            assert torch.equal(file_image, torch.round(image * 255) / 255)  # PNG keeps 8 bits
            assert torch.equal(file_target["labels"], target["labels"])
            tol = 1e-3 if fmt == "yolo" else 0.0  # YOLO stores normalised centres and sizes
            torch.testing.assert_close(file_target["boxes"], target["boxes"], atol=tol, rtol=0)


def test_data_export_limit_and_coco_masks(tmp_path: Path, capsys) -> None:
    argv = ["data", "export", "shapes", "--format", "coco", "--out", str(tmp_path), "--splits", "test"]
    assert main([*argv, "--limit", "2", *SHAPES_ARGS]) == 0
    files = open_export(tmp_path, "coco", "test", with_masks=True)
    assert len(files) == 2
    world = ShapesWorld("test", size=48, num_images=3)
    for i in range(2):
        assert torch.equal(files[i][1]["masks"], world[i][1]["masks"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "export", "nowhere", "--format", "coco", "--out", "x"], "unknown dataset 'nowhere'"),
        (["train", "--model", "digits_cnn", "--data", "coco"], "needs a directory"),
        (["train", "--model", "no_such_model", "--data", "digits"], "no_such_model"),
        (["eval", "--checkpoint", "no/such/run"], "no/such/run"),
    ],
)
def test_bad_specs_print_one_clear_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_train_from_missing_export_dir_is_a_clear_error(tmp_path: Path, capsys) -> None:
    spec = f"voc:{tmp_path / 'missing'}"
    assert main(["train", "--model", "digits_cnn", "--data", spec]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_bad_key_value_argument_exits(capsys) -> None:
    assert main(["data", "export", "shapes", "--format", "coco", "--out", "x", "--data-arg", "size"]) == 2
    assert capsys.readouterr().err == "error: --data-arg expects K=V, got 'size'\n"


def test_train_then_eval_the_checkpoint(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    argv = [
        "train", "--model", "digits_cnn", "--data", "digits", "--epochs", "3", "--batch-size", "32",
        "--lr", "0.01", "--optimizer", "adamw", "--no-progress", "--out", str(run),
        "--model-arg", "width=8", "--model-arg", "input_size=16", "--data-arg", "size=16",
    ]  # fmt: skip
    assert main(argv) == 0
    trained = _table(capsys.readouterr().out)
    assert trained["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert (run / "log.csv").is_file() and ckpt.latest_checkpoint(run) is not None

    # eval rebuilds the model from the checkpoint alone and gets the same validation figures.
    assert main(["eval", "--checkpoint", str(run), "--data-arg", "size=16"]) == 0
    evaluated = _table(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    assert evaluated["loss_cls"] == pytest.approx(trained["loss_cls"], rel=1e-5)
    # Without --data-arg, eval reads the data with the arguments the run recorded (size=16).
    assert main(["eval", "--checkpoint", str(run)]) == 0
    assert _table(capsys.readouterr().out)["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    # Another split of the same data gives other figures (the split really is used).
    assert main(["eval", "--checkpoint", str(run), "--split", "test", "--data-arg", "size=16"]) == 0
    assert _table(capsys.readouterr().out)["loss_cls"] != pytest.approx(trained["loss_cls"], rel=1e-6)


def _table(out: str) -> dict[str, float]:
    """The scalar rows of the CLI's metric table (``name  value``)."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                rows[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return rows
