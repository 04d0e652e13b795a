"""engine.run: the image-size rule, resume's comparison of settings, a resumed optimizer change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from structpred.data.digits import Digits
from structpred.data.shapes import ShapesWorld
from structpred.engine import TrainConfig, Trainer
from structpred.engine import checkpoint as ckpt
from structpred.engine.run import ResumeMismatch, _LongerSide, config_differences, image_size_rule, resume
from structpred.models import get_model


def test_image_size_rule_one_rule_three_kinds_of_model() -> None:
    # Detectors resize inside: min_size = max_size = N makes the longer side N.
    assert image_size_rule("fasterrcnn_narrow_fpn", {"width": 8}, 96) == (
        {"width": 8, "min_size": 96, "max_size": 96},
        False,
    )
    assert image_size_rule("digits_cnn", {}, 24) == ({"input_size": 24}, False)  # resamples to N x N
    assert image_size_rule("fcn8s_narrow", {"num_classes": 7}, 64) == ({"num_classes": 7}, True)  # the data
    assert image_size_rule("fcn8s_narrow", {}, None) == ({}, False)
    with pytest.raises(ValueError, match="reads sequences"):
        image_size_rule("lstm_vowels", {}, 32, sample=torch.zeros(20, 12))  # [T, F]: not an image
    with pytest.raises(ValueError, match="too small"):
        image_size_rule("digits_cnn", {}, 4)


def test_image_size_a_builder_refuses_is_its_error_not_a_silent_resample() -> None:
    # yolo_v1_narrow has input_size but its 8 x 8 grid must divide it: its own message, up front
    with pytest.raises(ValueError, match=r"--image-size 100: yolo_v1_narrow refuses it: .*grid_size 8"):
        image_size_rule("yolo_v1_narrow", {}, 100)
    assert image_size_rule("yolo_v1_narrow", {}, 128) == ({"input_size": 128}, False)


def test_longer_side_resamples_images_and_label_maps() -> None:
    data = ShapesWorld("val", size=(64, 96), num_images=2)
    resized = _LongerSide(data, 48)
    image, target = resized[0]
    assert image.shape == (3, 32, 48)  # (64, 96) -> longer side 48, aspect kept
    assert target["semantic"].shape == (32, 48) and target["semantic"].dtype == torch.int64
    assert set(target["semantic"].unique().tolist()) <= set(data[0][1]["semantic"].unique().tolist())
    assert resized.label_map_classes == data.label_map_classes and len(resized) == 2  # passed through


def test_config_differences_compares_given_settings_only() -> None:
    c = TrainConfig(
        lr=0.01, optimizer="adamw", model_kwargs={"width": 8, "num_classes": 10}, data_kwargs={"size": 8}
    )
    assert config_differences(c, {"lr": 0.01, "optimizer": "adamw", "model_args": {"num_classes": 10}}) == []
    assert config_differences(c, {"lr": 0.02, "model_args": {"width": 16, "dropout": 0.2}}) == [
        ("lr", 0.01, 0.02),
        ("model_args.width", 8, 16),
        ("model_args.dropout", None, 0.2),  # not recorded: a change
    ]
    assert config_differences(c, {"milestones": [0.67, 0.89]}) == []  # JSON lists equal tuples
    with pytest.raises(ValueError, match="not a run setting"):
        config_differences(c, {"device": "cpu"})  # harmless settings are not compared


def _run(tmp_path: Path, optimizer: str) -> Trainer:
    torch.manual_seed(0)
    model = get_model("digits_cnn", width=4, input_size=8)
    data = Subset(Digits("train", size=8), range(32))
    config = TrainConfig(epochs=1, batch_size=16, optimizer=optimizer, progress=False)
    return Trainer(model, data, None, config, tmp_path)


def test_trainer_resumes_with_a_fresh_state_for_another_optimizer(tmp_path: Path) -> None:
    _run(tmp_path, "sgd").fit()
    lines: list[str] = []
    trainer = _run(tmp_path, "adamw")
    trainer.config.epochs = 2
    trainer.report = lines.append
    trainer.fit(resume=True)  # no KeyError: SGD's momentum is not AdamW's state
    assert "optimizer changed (sgd -> adamw): fresh optimizer state" in lines
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(trainer.optimizer.state.values())))


def test_resume_needs_a_checkpoint_that_records_its_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpoint"):
        resume(tmp_path)
    _run(tmp_path, "sgd").fit()  # a checkpoint that records no model name / data
    with pytest.raises(ValueError, match="records no model name or data spec"):
        resume(tmp_path)
    assert ckpt.latest_checkpoint(tmp_path) is not None


def test_resume_mismatch_lists_every_difference(tmp_path: Path) -> None:
    err = ResumeMismatch(tmp_path, [("lr", 0.01, 0.02), ("model_args.width", 8, 16)])
    assert err.differences == [("lr", 0.01, 0.02), ("model_args.width", 8, 16)]
    assert "lr: checkpoint 0.01, given 0.02" in str(err) and "model_args.width" in str(err)


def test_a_new_run_never_overwrites_a_run_directory(tmp_path: Path) -> None:
    from structpred.engine.run import train

    _run(tmp_path, "sgd").fit()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    config = TrainConfig(epochs=1, batch_size=16, progress=False)
    with pytest.raises(ValueError, match=r"already holds a run \(ckpt-.*--resume"):
        train("digits_cnn", "digits", config, tmp_path, model_kwargs={"width": 4, "input_size": 8},
              data_kwargs={"size": 8})  # fmt: skip
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # untouched


def test_evaluation_data_reads_data_on_disk_for_the_models_task(tmp_path: Path) -> None:
    from structpred.engine.run import evaluation_data
    from tests.data.layout_builders import coco2017

    root = coco2017(tmp_path / "coco")  # polygons / RLE in the json: boxes or instance masks
    spec = f"coco:{root}"
    for model, has_masks in (("maskrcnn_narrow_fpn", True), ("fasterrcnn_narrow_fpn", False)):
        config = TrainConfig(model_name=model, model_kwargs={"num_classes": 2}, data="other")
        used, dataset = evaluation_data(config, spec, "val")  # from Python: no task given
        assert used == spec and ("masks" in dataset[0][1]) == has_masks
