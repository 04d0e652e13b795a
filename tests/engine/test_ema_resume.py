"""A run with a weight EMA resumed from a checkpoint — mid-epoch or at an epoch boundary — ends
bit-identical to an uninterrupted one: raw weights, the average (batch norm statistics
included) and its update count. The setting is compared on resume like every run setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from structpred.engine import TrainConfig
from structpred.engine import checkpoint as ckpt
from structpred.engine.ema import ema_state
from structpred.engine.run import ResumeMismatch, resume, train

DATA = {"num_images": 8, "size": 48}  # 8 train items of 48 px: 2 steps of 4 per epoch
MODEL = {"min_size": 64, "max_size": 64}  # yolo_lite: batch norms, so the average has buffers
EMA = "0.9,tau=2"


def _config(ema: str | None, epochs: int = 2) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=4, lr=0.004, optimizer="adamw", progress=False, checkpoint_every=1,
        keep_last=0, log_every=1000, eval_every=2, seed=7, ema=ema, device="cpu", amp="bf16",
    )  # fmt: skip


def _train(out: Path, ema: str | None = EMA, epochs: int = 2) -> None:
    train("yolo_lite", "shapes", _config(ema, epochs), out, model_kwargs=MODEL, data_kwargs=DATA)


def _cut(run: Path, keep_step: int) -> None:
    """Leave the run as a kill after ``keep_step`` would: later checkpoints gone."""
    for path in ckpt.list_checkpoints(run):
        if int(path.stem.split("-")[1]) > keep_step:
            path.with_name(str(ckpt._weights_name(path))).unlink()
            path.unlink()
    (run / "best.json").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], dict]:
    run = tmp_path_factory.mktemp("straight")
    _train(run)
    tensors, meta = ckpt.load_checkpoint(run)
    return tensors, meta


@pytest.mark.parametrize("keep_step", [3, 2], ids=["mid-epoch", "epoch-boundary"])
def test_resume_with_ema_is_bit_exact(straight: tuple[dict, dict], keep_step: int, tmp_path: Path) -> None:
    _train(tmp_path)
    _cut(tmp_path, keep_step)
    trainer, _ = resume(tmp_path)
    assert trainer.ema is not None and trainer.ema.updates == 4
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    expected, expected_meta = straight
    assert meta["ema"] == expected_meta["ema"] == {"decay": 0.9, "tau": 2.0, "updates": 4}
    assert meta["metrics"] == expected_meta["metrics"]  # validation (of the average) equal too
    averaged = ema_state(tensors)
    assert any("running_mean" in k for k in averaged)
    for k, v in expected.items():
        if k.startswith(("model/", "ema/")):
            assert torch.equal(v, tensors[k]), k


def test_a_changed_ema_is_refused_on_resume_and_override_adds_one(tmp_path: Path) -> None:
    _train(tmp_path, ema=None, epochs=1)
    with pytest.raises(ResumeMismatch, match="ema: checkpoint None, given '0.99,tau=2000'"):
        resume(tmp_path, {"ema": "0.99", "epochs": 2})
    said: list[str] = []
    trainer, _ = resume(tmp_path, {"ema": "0.99", "epochs": 2}, override=True, report=said.append)
    assert "the checkpoint holds no weight EMA: the average starts from its weights" in said
    assert trainer.ema is not None and trainer.ema.updates == 2  # epoch 2's two steps
    _, meta = ckpt.load_checkpoint(tmp_path)
    assert meta["config"]["ema"] == "0.99,tau=2000"
    assert meta["config"]["overrides"][-1]["changes"]["ema"] == [None, "0.99,tau=2000"]
