"""`structpred predict`'s inputs and outputs: folders and globs in, mirrored outputs that never
land beside or over an input, same names in different folders kept apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from structpred.data.images import write_image
from structpred.engine import TrainConfig
from structpred.engine import run as engine_run
from structpred.engine.predict import predict_images
from structpred.tasks.outputs import expand_inputs, next_run_folder, output_stems


def _images(root: Path, names: list[str]) -> list[Path]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, torch.rand(3, 32, 40))
        paths.append(path)
    return paths


def test_folders_globs_and_files_expand_once_in_order(tmp_path: Path) -> None:
    a, b, c = _images(tmp_path, ["x/a.png", "x/deep/b.jpg", "y/c.png"])
    (tmp_path / "x" / "notes.txt").write_text("not an image")
    assert expand_inputs([tmp_path / "x"]) == [a, b]  # recursive, images only, sorted
    assert expand_inputs([str(tmp_path / "y" / "*.png"), a, str(a)]) == [c, a]  # each file once
    assert expand_inputs([str(tmp_path / "**" / "*.jpg")]) == [b]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("missing.png", "no such file or folder"),
        ("*.nothing", "matches no file"),
        ("empty", "holds no image"),
    ],
)
def test_bad_inputs_are_named(tmp_path: Path, spec: str, match: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=match):
        expand_inputs([str(tmp_path / spec)])


def test_same_names_in_different_folders_get_different_outputs(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "data", ["day/img.png", "night/img.png", "night/img.jpg"])
    stems = output_stems(inputs, tmp_path / "out")
    assert [str(s) for s in stems] == ["day/img", "night/img_png", "night/img_jpg"]
    assert len({str(s) for s in stems}) == 3


def test_outputs_never_land_beside_the_inputs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    inputs = _images(data, ["a.png", "sub/b.png"])
    with pytest.raises(ValueError, match="beside the inputs"):
        output_stems(inputs, data)  # data/a.png would be overwritten
    with pytest.raises(ValueError, match="beside the inputs"):
        output_stems(inputs, data / "sub")  # data/sub/a.png would sit beside data/sub/b.png
    assert [str(s) for s in output_stems(inputs, data / "predictions")] == ["a", "sub/b"]


def test_next_run_folder_never_reuses_one(tmp_path: Path) -> None:
    first = next_run_folder(tmp_path)
    assert first.name == "001"
    first.mkdir()
    assert next_run_folder(tmp_path).name == "002"


@pytest.mark.slow
def test_predict_mirrors_folders_and_keeps_inputs(tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=2, progress=False, device="cpu", log_every=1000)
    kwargs = {"num_images": 4, "size": 32}
    run = tmp_path / "run"
    engine_run.train("fcn8s_narrow", "shapes", config, run, data_kwargs=kwargs)
    inputs = _images(tmp_path / "in", ["day/img.png", "night/img.png"])
    before = {p: p.read_bytes() for p in inputs}
    with pytest.raises(ValueError, match="beside the inputs"):
        predict_images(run, [tmp_path / "in"], tmp_path / "in")
    summary = predict_images(run, [tmp_path / "in"], tmp_path / "out")
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["day/img.png", "day/img_labels.png", "night/img.png", "night/img_labels.png"]
    rows = json.loads(summary.read_text())
    assert [r["labels_png"] for r in rows] == ["day/img_labels.png", "night/img_labels.png"]
    assert {p: p.read_bytes() for p in inputs} == before  # the inputs are untouched
