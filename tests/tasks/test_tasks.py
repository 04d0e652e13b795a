"""The task registry: each task's num_classes convention, dataset check and predict writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from structpred.data.images import write_image
from structpred.data.registry import build_dataset
from structpred.models import get_model, list_models
from structpred.tasks import get_task, list_tasks, task_of
from structpred.tasks.base import PredictJob


def test_every_task_describes_itself_and_has_models() -> None:
    for name in list_tasks():
        task = get_task(name)
        assert name in task.describe() and task.prediction_keys
        assert list_models(name), f"no model for task {name}"
    with pytest.raises(ValueError, match="unknown task 'tracking'; known: .*detection"):
        get_task("tracking")


def test_num_classes_conventions() -> None:
    shapes = build_dataset("shapes", "val", num_images=2, size=32)
    # Detection: object classes, background excluded.
    assert task_of("fasterrcnn_narrow_fpn").model_kwargs(shapes, {}) == {"num_classes": 6}
    # Semantic segmentation: the label map's classes, background included; target_key recorded.
    seg = task_of("fcn8s_narrow")
    assert seg.model_kwargs(shapes, {}) == {"target_key": "semantic", "num_classes": 7}
    assert seg.model_kwargs(shapes, {"target_key": "parts"})["num_classes"] == 13
    with pytest.raises(ValueError, match="no 'depth' label map"):
        seg.model_kwargs(shapes, {"target_key": "depth"})
    # The user's value wins.
    assert task_of("fasterrcnn_narrow_fpn").model_kwargs(shapes, {"num_classes": 3}) == {"num_classes": 3}
    # Classification: every class (the digits have 10, no background).
    assert task_of("digits_cnn").model_kwargs(build_dataset("digits", "val"), {})["num_classes"] == 10


def test_check_dataset_before_training() -> None:
    digits = build_dataset("digits", "val")
    with pytest.raises(ValueError, match="has no \\['boxes', 'labels'\\]|has no \\['boxes'\\]"):
        task_of("fasterrcnn_narrow_fpn").check_dataset(digits, {}, "--data digits")
    with pytest.raises(ValueError, match="no \\['parts'\\]"):
        task_of("fcn8s_narrow").check_dataset(
            build_dataset("digit-canvas", "val", num_images=2), {"target_key": "parts"}, "--data digit-canvas"
        )
    task_of("fasterrcnn_narrow_fpn").check_dataset(build_dataset("shapes", "val", num_images=2), {}, "ok")


def test_classification_predict_writer(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"in{k}.png")
        write_image(paths[-1], torch.rand(3, 20 + k, 24))
    model = get_model("digits_cnn").eval()
    out = tmp_path / "out"
    out.mkdir()
    names = [str(d) for d in range(10)]
    job = PredictJob(paths, out, names, batch_size=2)
    result = json.loads(task_of("digits_cnn").predict_files(model, job).read_text())
    assert [r["file_name"] for r in result] == [str(p) for p in paths]
    for r in result:
        assert 0 <= r["label"] < 10 and r["name"] == names[r["label"]] and 0 < r["score"] <= 1


def test_sequence_tasks_have_no_image_writer(tmp_path: Path) -> None:
    model = get_model("lstm_sunspots")
    with pytest.raises(ValueError, match="reads sequences, not image files"):
        task_of("lstm_sunspots").predict_files(model, PredictJob([tmp_path / "x.png"], tmp_path))


def test_trainer_runs_the_tasks_evaluation_loop() -> None:
    from structpred.engine import TrainConfig, Trainer
    from structpred.tasks.classification import ClassificationTask

    class CountingTask(ClassificationTask):
        """The classification task with an evaluation loop that counts its batches."""

        batches = 0

        def evaluate(self, run, batches, metric):  # type: ignore[no-untyped-def]
            def counted():  # type: ignore[no-untyped-def]
                for batch in batches:
                    CountingTask.batches += 1
                    yield batch

            return super().evaluate(run, counted(), metric)

    data = torch.utils.data.Subset(build_dataset("digits", "val"), range(10))
    model = get_model("digits_cnn")
    task = CountingTask()
    config = TrainConfig(batch_size=4, progress=False, device="cpu")
    metrics = Trainer(model, data, data, config, metric=task.metric(model, data), task=task).evaluate()
    assert CountingTask.batches == 3 and "loss_cls" in metrics and 0 <= metrics["accuracy"] <= 1
