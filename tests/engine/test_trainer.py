"""Trainer behaviour on the real digits classifier and real digits (small subsets: fast)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from structpred.data.digits import Digits
from structpred.engine import NonFiniteLossError, TrainConfig, Trainer
from structpred.engine import checkpoint as ckpt
from structpred.engine.schedule import lr_at
from structpred.engine.trainer import seed_everything
from structpred.metrics.classification import Accuracy
from structpred.models import get_model


def _data(n: int, split: str = "train") -> Subset:
    return Subset(Digits(split, size=16), range(n))


def _trainer(tmp_path: Path, train_items: int = 128, **config: object) -> Trainer:
    seed_everything(0)
    model = get_model("digits_cnn", width=8, input_size=16)
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 16, "lr": 0.05, "progress": False, **config})  # type: ignore[arg-type]
    return Trainer(model, _data(train_items), _data(64, "val"), cfg, tmp_path, metric=lambda: Accuracy(10))


def test_fit_lowers_the_loss_and_logs(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, 256, epochs=6, lr=0.003, optimizer="adamw", warmup_steps=4, log_every=1)
    trainer.model.train(False)
    before = trainer.evaluate()
    metrics = trainer.fit()
    assert metrics["loss_cls"] < 0.8 * before["loss_cls"]
    assert float(metrics["accuracy"]) > float(before["accuracy"])
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert {r["phase"] for r in rows} == {"train", "val"}
    assert len([r for r in rows if r["phase"] == "train"]) == 6 * 16  # every step (log_every=1)
    assert all(float(r["images_per_s"]) > 0 for r in rows if r["phase"] == "train")
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert len(ckpt.list_checkpoints(tmp_path)) == 3  # keep_last=3 of the 6 epoch-end checkpoints


def test_eval_every_validates_every_nth_epoch_and_the_last(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, 32, epochs=5, eval_every=2)
    trainer.fit()
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert sorted({int(r["epoch"]) for r in rows if r["phase"] == "val"}) == [1, 3, 4]
    with pytest.raises(ValueError, match="eval_every must be an int >= 1"):
        TrainConfig(eval_every=0)


def test_validation_loss_comes_with_metrics(tmp_path: Path) -> None:
    out = _trainer(tmp_path).evaluate()
    assert {"loss_cls", "loss", "accuracy", "accuracy_per_class"} <= set(out)
    assert out["loss"] == pytest.approx(out["loss_cls"])
    assert out["accuracy_per_class"].shape == (10,)


def test_non_finite_loss_stops_with_step_and_term(tmp_path: Path) -> None:
    # A learning rate this large makes the real loss blow up within a few steps.
    trainer = _trainer(tmp_path, lr=1e8, momentum=0.0, weight_decay=0.0, checkpoint_every=1, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"step (\d+): loss term 'loss_cls' is (nan|inf)") as err:
        trainer.fit()
    failed_at = int(str(err.value).split("step ")[1].split(":")[0])
    newest = ckpt.latest_checkpoint(tmp_path)
    assert newest is not None
    tensors, meta = ckpt.load_checkpoint(newest)  # the last good checkpoint is intact
    assert meta["step"] == failed_at - 1
    assert all(torch.isfinite(v).all() for v in ckpt.model_state(tensors).values())


def test_gradient_clipping_bounds_the_update(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, lr=1.0, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e-3, epochs=1)
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.config.epochs = 1
    trainer.fit()
    moved = math.sqrt(
        sum(
            float((p.detach() - s).pow(2).sum())
            for p, s in zip(trainer.model.parameters(), start, strict=True)
        )
    )
    # 8 steps of lr 1.0 (cosine-decayed) x gradient norm <= 1e-3
    assert 0 < moved <= 8 * 1e-3 + 1e-6


def test_bf16_autocast_trains_on_cpu(tmp_path: Path) -> None:
    metrics = _trainer(tmp_path, amp="bf16", epochs=1).fit()
    assert math.isfinite(metrics["loss_cls"])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"epochs": 0}, "positive"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"amp": "fp8"}, "amp"),
    ],
)
def test_bad_config_raises(config: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**config)  # type: ignore[arg-type]


def test_fp16_needs_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: fp16 is allowed")
    with pytest.raises(ValueError, match="fp16"):
        _trainer(tmp_path, amp="fp16").fit()


def test_batch_larger_than_data_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="larger than the training set"):
        _trainer(tmp_path, batch_size=1000).fit()


def test_schedules() -> None:
    assert lr_at(0, 1.0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 100, warmup_steps=10) == pytest.approx(0.5)  # cosine midpoint
    assert lr_at(100, 1.0, 100, warmup_steps=10) == pytest.approx(0.0)
    assert lr_at(70, 1.0, 100, schedule="step", milestones=(0.5, 0.9), gamma=0.1) == pytest.approx(0.1)
    assert lr_at(95, 1.0, 100, schedule="step", milestones=(0.5, 0.9), gamma=0.1) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, 1.0, 10, schedule="linear")


def test_epoch_line() -> None:
    from structpred.engine.logs import epoch_line

    line = epoch_line(2, 10, 0.41234, {"loss": 0.398, "map": 0.61, "map_50": 0.8}, "map", True, 41.2)
    assert line == "epoch 3/10  train loss 0.4123  val loss 0.398  val map 0.61  (best)  41 s"
    assert epoch_line(0, 10, 0.5, {}, "map", False, 3.0) == "epoch 1/10  train loss 0.5  3 s"  # no validation
    assert (
        epoch_line(0, 1, 0.5, {"loss": 0.4}, "loss", True, 1)
        == "epoch 1/1  train loss 0.5  val loss 0.4  (best)  1 s"
    )


def test_fit_reports_one_line_per_epoch_and_keeps_the_best(tmp_path: Path) -> None:
    lines: list[str] = []
    trainer = _trainer(tmp_path, 64, epochs=2, keep_last=1)
    trainer.report = lines.append
    trainer.fit()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("val loss" in line for line in lines) and "(best)" in lines[0]
    assert trainer.best is not None and trainer.best["metric"] == "loss"  # no task given: validation loss
    assert ckpt.best_checkpoint(tmp_path) is not None
