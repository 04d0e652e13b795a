"""`structpred predict` on a flow checkpoint: frame pairs -> .flo + colour PNG (the pair rule),
videos -> drawn trajectories (+ mp4), bad inputs -> one line, exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from structpred.cli import main
from structpred.data.formats.flo import read_flo
from structpred.data.images import read_image, write_image
from structpred.data.registry import build_dataset
from structpred.data.shakespeare import data_root
from structpred.engine.run import load_model
from structpred.tasks.flow_predict import check_pair, predict_pair
from structpred.tasks.video_frames import VideoWriter, iter_frames
from tests.tasks.predict_cases import make_video


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pwcnet_narrow trained one step through the CLI, as a user's run."""
    out = tmp_path_factory.mktemp("flow_run")
    torch.manual_seed(0)
    argv = ["train", "--model", "pwcnet_narrow", "--data", "shapes-flow", "--data-arg", "num_images=2",
            "--data-arg", "size=64", "--epochs", "1", "--batch-size", "2", "--out", str(out),
            "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three PNG frames: a shapes-flow pair and a third frame."""
    folder = tmp_path_factory.mktemp("frames")
    views, _ = build_dataset("shapes-flow", "val", num_images=2, size=(48, 64))[0]
    other, _ = build_dataset("shapes-flow", "val", num_images=2, size=(48, 64))[1]
    paths = []
    for k, image in enumerate([views[0], views[1], other[1]]):
        paths.append(folder / f"f{k}.png")
        write_image(paths[-1], image)
    return paths


def _predict(run: Path, out: Path, *inputs: object) -> int:
    return main(["predict", "--checkpoint", str(run), *map(str, inputs), "--out", str(out), "--no-progress"])


def test_a_pair_writes_flo_and_colour_png(flow_run: Path, frames: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "pred"
    assert _predict(flow_run, out, frames[0], frames[1]) == 0
    assert "1 .flo, 1 pictures" in capsys.readouterr().out
    flow = read_flo(out / "f0.flo")
    assert flow.shape == (2, 48, 64)
    picture = read_image(out / "f0_flow.png")
    assert picture.shape == (3, 48, 64)
    rows = json.loads((out / "predictions.json").read_text())
    assert len(rows) == 1 and rows[0]["next_file"] == str(frames[1]) and rows[0]["flo"] == "f0.flo"
    assert rows[0]["mean_flow"] == pytest.approx(float(flow.norm(dim=0).mean()), abs=1e-3)
    # the file holds what the model computes on the two frames
    model, _ = load_model(flow_run)
    with torch.no_grad():
        direct = predict_pair(model.eval(), read_image(frames[0]), read_image(frames[1]))
    assert torch.allclose(flow, direct, atol=1e-5)
    assert not (out / "f1.flo").exists()  # the last frame starts no pair


def test_a_folder_is_a_sequence_of_pairs(flow_run: Path, frames: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "pred"
    assert _predict(flow_run, out, frames[0].parent) == 0
    assert sorted(p.name for p in out.glob("*.flo")) == ["f0.flo", "f1.flo"]
    rows = json.loads((out / "predictions.json").read_text())
    pairs = [(Path(r["file_name"]).name, Path(r["next_file"]).name) for r in rows]
    assert pairs == [("f0.png", "f1.png"), ("f1.png", "f2.png")]


def test_a_video_writes_drawn_trajectories_and_an_mp4(flow_run: Path, tmp_path: Path) -> None:
    video = make_video(tmp_path / "in" / "clip.mp4", frames=6)
    out = tmp_path / "pred"
    assert _predict(flow_run, out, video, "--video-out") == 0
    pictures = sorted((out / "clip").glob("frame_*.png"))
    assert [p.name for p in pictures] == [f"frame_{i:06d}.png" for i in range(1, 6)]
    rows = json.loads((out / "predictions.json").read_text())
    assert [r["frame"] for r in rows] == [1, 2, 3, 4, 5] and all(r["tracks_alive"] >= 0 for r in rows)
    assert sum(1 for _ in iter_frames(out / "clip_annotated.mp4")) == 5
    # the drawing changes the frame (points and tails on it) when tracks are alive
    _, _, frame1 = next(f for f in iter_frames(video) if f[0] == 1)
    if rows[0]["tracks_alive"]:
        assert (read_image(pictures[0]) - frame1).abs().max() > 0.2


@pytest.mark.skipif(
    not (data_root() / "opencv-doc" / "vtest.avi").is_file()
    and os.environ.get("STRUCTPRED_REQUIRE_DATA") != "1",
    reason="opencv-doc's vtest.avi not fetched (STRUCTPRED_REQUIRE_DATA=1 makes this fail)",
)
@pytest.mark.slow
def test_real_video_first_frames(flow_run: Path, tmp_path: Path) -> None:
    """vtest.avi's first 3 frames (re-encoded with PyAV), trajectories drawn (at half size, 384 x 288)."""
    clip = tmp_path / "in" / "vtest4.mp4"
    with VideoWriter(clip, fps=10) as writer:
        for k, _, frame in iter_frames(data_root() / "opencv-doc" / "vtest.avi"):
            if k == 3:
                break
            half = torch.nn.functional.interpolate(frame[None], scale_factor=0.5, mode="area")[0]
            writer.write((half * 255).round().to(torch.uint8))
    out = tmp_path / "pred"
    assert _predict(flow_run, out, clip) == 0
    assert len(list((out / "vtest4").glob("frame_*.png"))) == 2


def test_bad_inputs_are_one_line_exit_2(flow_run: Path, frames: list[Path], tmp_path: Path, capsys) -> None:
    assert _predict(flow_run, tmp_path / "a", frames[0]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs frame pairs, got one image" in err and "Traceback" not in err and len(err.splitlines()) == 1
    big = tmp_path / "big.png"
    write_image(big, torch.rand(3, 50, 64))
    assert _predict(flow_run, tmp_path / "b", frames[0], big) == 2
    err = capsys.readouterr().err.strip()
    assert "f0.png is 48 x 64 but the next frame" in err and "big.png is 50 x 64" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # nothing written
    one = make_video(tmp_path / "in" / "one.mp4", frames=1)
    assert _predict(flow_run, tmp_path / "c", one) == 2
    assert "one frame: no pair" in capsys.readouterr().err


def test_check_pair_refuses_wrong_channels_sizes_and_nan() -> None:
    ok = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="RGB image Tensor\\[3, H, W\\]"):
        check_pair(torch.rand(4, 8, 8), ok)
    with pytest.raises(ValueError, match="RGB image"):
        check_pair(ok, torch.rand(8, 8))
    bad = ok.clone()
    bad[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="frame1 holds NaN"):
        check_pair(ok, bad)
    with pytest.raises(ValueError, match="one size"):
        check_pair(ok, torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match="float"):
        check_pair(ok, (ok * 255).to(torch.uint8))
