"""Training augmentation in the engine: a run resumed mid-epoch ends bit-identical to an
uninterrupted one with augmentation on; the setting is recorded, compared on resume, and only
the training items are augmented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from structpred.data.augment import AugmentedDataset
from structpred.engine import TrainConfig
from structpred.engine import checkpoint as ckpt
from structpred.engine.run import ResumeMismatch, resume, train

DATA = {"num_images": 8, "size": 48}  # 8 train items of 48 px: 2 steps of 4 per epoch
MODEL = {"min_size": 64, "max_size": 64}
SPEC = "hflip,scale=0.3,translate=0.1,hsv=0.5"


def _config(augment: str | None) -> TrainConfig:
    return TrainConfig(
        epochs=2, batch_size=4, lr=0.004, optimizer="adamw", progress=False, checkpoint_every=3,
        keep_last=0, log_every=1000, eval_every=2, seed=7, augment=augment, device="cpu",
    )  # fmt: skip


def _train(out: Path, augment: str | None) -> None:
    train("yolo_lite", "shapes", _config(augment), out, model_kwargs=MODEL, data_kwargs=DATA)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_checkpoint(run)
    return ckpt.model_state(tensors)


def test_resume_mid_run_with_augmentation_is_bit_exact(tmp_path: Path) -> None:
    _train(tmp_path / "straight", SPEC)
    cut = tmp_path / "cut"
    _train(cut, SPEC)
    for path in ckpt.list_checkpoints(cut):  # keep steps 1..3: resume inside epoch 2
        if int(path.stem.split("-")[1]) > 3:
            path.unlink()
            path.with_suffix(".safetensors").unlink()
    (cut / "best.json").unlink(missing_ok=True)
    trainer, _ = resume(cut)
    assert isinstance(trainer.train_data, AugmentedDataset) and trainer.train_data.epoch == 1
    assert not isinstance(trainer.val_data, AugmentedDataset)  # validation is never augmented
    straight, resumed = _weights(tmp_path / "straight"), _weights(cut)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    data = trainer.train_data
    assert not torch.equal(data[0][0], data.dataset[0][0])  # the items are augmented


def test_the_spec_is_recorded_canonical_and_a_change_on_resume_is_refused(tmp_path: Path) -> None:
    config = _config("yolo_v1")
    config.epochs = 1
    train("yolo_lite", "shapes", config, tmp_path, model_kwargs=MODEL, data_kwargs=DATA)
    _, meta = ckpt.load_checkpoint(tmp_path)
    assert meta["config"]["augment"] == "hflip=0.5,scale=0.2,translate=0.2,hsv=0.5"
    with pytest.raises(ResumeMismatch, match="augment: checkpoint 'hflip=0.5,scale=0.2,.*', given None"):
        resume(tmp_path, {"augment": None, "epochs": 1})
    trainer, _ = resume(tmp_path, {"augment": "hflip=0.5,scale=0.2,translate=0.2,hsv=0.5", "epochs": 1})
    assert isinstance(trainer.train_data, AugmentedDataset)  # the same spec: no difference
