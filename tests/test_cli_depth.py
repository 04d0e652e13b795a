"""The depth tasks end to end through the CLI, as a user runs them: train on the shapes world's
stereo pairs, evaluate on the real Middlebury pairs, predict disparity and metric depth from files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from structpred.cli import main
from structpred.data.images import write_image
from structpred.data.registry import build_dataset

EVAL_REAL = ["--data", "stereo-real", "--data-arg", "scale=8", "--data-arg", "pairs=motorcycle",
             "--split", "test", "--device", "cpu", "--no-progress"]  # fmt: skip
TRAIN = ["--data-arg", "num_images=2", "--data-arg", "size=64", "--epochs", "1", "--batch-size", "2",
         "--no-progress", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def stereo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stereo_run")
    torch.manual_seed(0)
    argv = ["train", "--model", "stereo_net_narrow", "--data", "shapes-stereo", *TRAIN, "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pair")
    views, _ = build_dataset("shapes-stereo", "val", num_images=1, size=(48, 64))[0]
    paths = [folder / "left.png", folder / "right.png"]
    for path, view in zip(paths, views, strict=True):
        write_image(path, view)
    return paths


@pytest.mark.slow
def test_stereo_train_eval_on_real_pairs_and_predict_metric_depth(
    stereo_run: Path, pair_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(stereo_run), *EVAL_REAL])
    printed = capsys.readouterr().out
    assert code == 0 and "epe" in printed and "bad2" in printed
    out = tmp_path / "pred"
    calib = "64,0.1,0"
    args = ["predict", "--checkpoint", str(stereo_run), *map(str, pair_files), "--out", str(out)]
    assert main([*args, "--calib", calib, "--no-progress"]) == 0
    disparity = np.load(out / "left_disparity.npy")
    depth = np.load(out / "left_depth.npy")
    assert disparity.shape[-2:] == depth.shape[-2:] == (48, 64)
    known = disparity > 0
    assert np.allclose(depth[known], 64 * 0.1 / disparity[known], rtol=1e-5)
    assert (out / "left_disparity.png").is_file() and (out / "left_depth.png").is_file()
    assert json.loads((out / "predictions.json").read_text())  # one row per pair
    # An odd number of images for a stereo model: one line, exit 2, nothing written.
    odd = tmp_path / "odd"
    args = [
        "predict",
        "--checkpoint",
        str(stereo_run),
        str(pair_files[0]),
        "--out",
        str(odd),
        "--no-progress",
    ]
    assert main([*args, "--no-progress"]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
    assert not (odd / "left_disparity.npy").exists()


@pytest.mark.slow
def test_monocular_trains_self_supervised_on_real_pairs_and_predicts_single_images(
    pair_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "mono_run"
    torch.manual_seed(0)
    argv = ["train", "--model", "monodepth_narrow", "--data", "stereo-real", "--data-arg", "scale=8",
            "--data-arg", "pairs=motorcycle", "--epochs", "1", "--batch-size", "1", "--no-progress",
            "--device", "cpu", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0  # the train split has no ground truth: self-supervised
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(run), *EVAL_REAL])
    printed = capsys.readouterr().out
    assert code == 0 and "abs_rel" in printed
    out = tmp_path / "pred"
    assert (
        main(["predict", "--checkpoint", str(run), str(pair_files[0]), "--out", str(out), "--no-progress"])
        == 0
    )
    assert np.load(out / "left_disparity.npy").shape[-2:] == (48, 64)
    assert not (out / "left_depth.npy").exists()  # no --calib: no metres


def test_calib_on_a_model_of_another_task_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "cls"
    argv = ["train", "--model", "pwcnet_narrow", "--data", "shapes-flow", *TRAIN, "--out", str(run)]
    assert main(argv) == 0
    frame = tmp_path / "f.png"
    write_image(frame, torch.rand(3, 32, 32))
    capsys.readouterr()
    code = main(["predict", "--checkpoint", str(run), str(frame), str(frame), "--calib", "64,0.1",
                 "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--calib is for the depth tasks" in err
