"""``structpred track``: a trained tracker's checkpoint on a video file; outputs and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import structpred.models.sint  # noqa: F401  (registers sint_narrow)
import structpred.tasks.tracking  # noqa: F401  (registers the task)
from structpred.cli import main
from structpred.cli.track import parse_box, run
from structpred.engine import checkpoint as ckpt
from structpred.models.registry import get_model
from structpred.models.sint import SINT
from structpred.tasks.video_frames import VideoWriter


def _argv_main(argv: list[str]) -> int:
    """``structpred track ...`` through the CLI's entry point."""
    return main(argv)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sint_run")
    torch.manual_seed(0)
    model = get_model("sint_narrow", num_radii=2, num_angles=4)
    ckpt.save_checkpoint(
        out,
        1,
        model,
        None,
        {"config": {"model_name": "sint_narrow", "model_kwargs": {"num_radii": 2, "num_angles": 4}}},
    )
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    with VideoWriter(path, 10) as w:
        for t in range(5):
            frame = torch.zeros(3, 48, 64, dtype=torch.uint8)
            frame[:, 10 + t : 22 + t, 8 + 2 * t : 20 + 2 * t] = 230
            w.write(frame)
    return path


def test_parse_box() -> None:
    assert parse_box("1,2.5,3,4") == (1.0, 2.5, 3.0, 4.0)
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,5", "1,2,0,4", "1,2,nan,4"):
        with pytest.raises(ValueError, match="--box"):
            parse_box(bad)


def test_track_writes_boxes_and_frames(run_dir: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "pngs"
    assert (
        _argv_main(
            ["track", str(video), "--checkpoint", str(run_dir), "--box", "8,10,12,12", "--out", str(out)]
        )
        == 0
    )
    rows = list(csv.reader(open(out / "boxes.csv", encoding="utf-8")))
    assert rows[0] == ["frame", "x", "y", "w", "h"] and len(rows) == 6
    assert [float(v) for v in rows[1][1:]] == [8.0, 10.0, 12.0, 12.0]  # frame 0: the given box
    data = json.loads((out / "boxes.json").read_text(encoding="utf-8"))
    assert len(data["boxes_xywh"]) == 5
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    vid = tmp_path / "mp4"
    assert (
        _argv_main(
            [
                "track",
                str(video),
                "--checkpoint",
                str(run_dir),
                "--box",
                "8,10,12,12",
                "--out",
                str(vid),
                "--video-out",
            ]
        )
        == 0
    )
    assert (vid / "square_tracked.mp4").stat().st_size > 0 and not (vid / "frames").exists()


@pytest.mark.parametrize(
    ("box", "match"),
    [("1,2,3", "four numbers"), ("100,10,12,12", "outside the 64x48"), ("8,10,-2,12", "width and height")],
)
def test_bad_box_is_one_error_line(run_dir: Path, video: Path, tmp_path: Path, box: str, match: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code = _argv_main(
        ["track", str(video), "--checkpoint", str(run_dir), f"--box={box}", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and match in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_undecodable_video_is_refused(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    code = _argv_main(
        ["track", str(bad), "--checkpoint", str(run_dir), "--box", "1,1,4,4", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "broken.mp4" in capsys.readouterr().err
    code = _argv_main(
        ["track", str(tmp_path / "missing.mp4"), "--checkpoint", str(run_dir), "--box", "1,1,4,4"]
    )
    assert code == 2 and "no such video" in capsys.readouterr().err


def test_a_model_of_another_task_is_refused(
    video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "flow_run"
    model = get_model("pwcnet_narrow")
    ckpt.save_checkpoint(out, 1, model, None, {"config": {"model_name": "pwcnet_narrow"}})
    code = _argv_main(
        ["track", str(video), "--checkpoint", str(out), "--box", "1,1,4,4", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "not a single-object tracker" in capsys.readouterr().err
    assert run is not None


def test_refine_gives_the_library_s_refined_track(run_dir: Path, video: Path, tmp_path: Path) -> None:
    from structpred.engine.run import load_model
    from structpred.tasks.video_frames import iter_frames

    out = tmp_path / "refined"
    argv = ["track", str(video), "--checkpoint", str(run_dir), "--box", "8,10,12,12", "--out", str(out)]
    assert _argv_main([*argv, "--refine", "--refine-lambda", "0.5"]) == 0
    rows = list(csv.reader(open(out / "boxes.csv", encoding="utf-8")))[1:]
    got = torch.tensor([[float(v) for v in r[1:]] for r in rows])  # (5, 4) x, y, w, h
    model = load_model(run_dir)[0]
    assert isinstance(model, SINT)
    model.config.refine, model.config.refine_lambda = True, 0.5
    frames = torch.stack([f for _, _, f in iter_frames(video)])  # (5, 3, H, W)
    want = model.track(frames, torch.tensor([8.0, 10, 20, 22]))  # xyxy
    want = torch.cat([want[:, :2], want[:, 2:] - want[:, :2]], 1)
    torch.testing.assert_close(got, want, atol=0.006, rtol=0)


def test_bad_refine_lambda_is_one_error_line(
    run_dir: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "track",
        str(video),
        "--checkpoint",
        str(run_dir),
        "--box",
        "8,10,12,12",
        "--out",
        str(tmp_path / "o"),
    ]
    code = _argv_main([*argv, "--refine", "--refine-lambda", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--refine-lambda" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    argv[argv.index("8,10,12,12")] = "8,10,0.5,12"  # a box the regressors cannot be fitted on
    code = _argv_main([*argv, "--refine"])
    err = capsys.readouterr().err
    assert code == 2 and "degenerate" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
