"""``structpred train --augment SPEC``: a bad spec is one line naming the item, before any data is
read; the spec is recorded in its canonical form; a resume compares it and refuses a change
unless ``--override``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structpred.cli import main
from structpred.engine import checkpoint as ckpt

TRAIN = [
    "train", "--model", "digits_cnn", "--data", "digits", "--data-arg", "size=8", "--model-arg", "width=4",
    "--model-arg", "input_size=8", "--epochs", "1", "--batch-size", "512", "--lr", "0.01", "--no-progress",
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ("scale=2", "error: --augment scale=2: scale must be in [0.0, 0.9], got 2"),
        ("flip", "error: --augment flip: unknown item 'flip' (fields: hflip, scale, translate, hsv, hue, "
                 "min_visible; presets: yolo, yolo_v1, none)"),
        ("hflip,hsv=lots", "error: --augment hflip,hsv=lots: hsv must be a number in [0.0, 4.0], got 'lots'"),
    ],
)  # fmt: skip
def test_a_bad_spec_is_one_line_before_anything_is_read(
    spec: str, line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TRAIN, "--augment", spec, "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "run").exists()  # no run folder made


@pytest.mark.slow
def test_recorded_canonical_and_compared_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main([*TRAIN, "--augment", "yolo,scale=0.2", "--out", str(run)]) == 0
    config = json.loads(ckpt.latest_checkpoint(run).read_text())["config"]  # type: ignore[union-attr]
    assert config["augment"] == "hflip=0.5,scale=0.2,translate=0.1,hsv=0.5,hue=0.015"
    capsys.readouterr()

    # the same setting in another spelling is no change; another value is refused, naming the flag
    assert main(["train", "--resume", str(run), "--augment", "hflip,yolo,scale=0.2", "--no-progress"]) == 0
    assert main(["train", "--resume", str(run), "--augment", "hflip", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--augment: checkpoint 'hflip=0.5,scale=0.2,translate=0.1,hsv=0.5,hue=0.015', command line " in err
    assert "'hflip=0.5'" in err and "--override" in err
    assert main(["train", "--resume", str(run), "--augment", "none", "--epochs", "2", "--override",
                 "--no-progress"]) == 0  # fmt: skip
    meta = json.loads(ckpt.latest_checkpoint(run).read_text())  # type: ignore[union-attr]
    assert meta["config"]["augment"] is None
    assert meta["config"]["overrides"][-1]["changes"]["augment"][1] is None
