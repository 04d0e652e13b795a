"""The optimizer exempts what a model's ``no_weight_decay()`` names (timm's convention), also on resume."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from structpred.engine.trainer import TrainConfig, Trainer


class _Scaled(nn.Module):
    """y = w x; loss = mean((y - 1)^2) + 0 * s; ``s`` is exempt from decay."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.s = nn.Parameter(torch.ones(1))

    def no_weight_decay(self) -> set[str]:
        return {"s"}

    def forward(self, images: list[Tensor], targets: object = None, *, predict: bool = True) -> tuple:
        x = torch.stack(images).mean()
        return None, {"loss_fit": (self.w * x - 1.0) ** 2 + 0.0 * self.s.sum()}


class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[Tensor, dict]:
        return torch.full((3, 4, 4), 0.5), {}


def _trainer(out: Path, epochs: int, optimizer: str) -> Trainer:
    config = TrainConfig(
        epochs=epochs, batch_size=2, optimizer=optimizer, lr=0.1, weight_decay=0.5, progress=False
    )
    return Trainer(_Scaled(), _Items(), None, config, out_dir=out)


def test_exempt_parameters_get_no_decay_and_keep_it_on_resume(tmp_path: Path) -> None:
    for optimizer in ("adamw", "sgd"):
        trainer = _trainer(tmp_path / optimizer, 1, optimizer)
        groups = trainer.optimizer.param_groups
        assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
        assert groups[1]["params"][0] is trainer.model.s
        trainer.fit()
        # s has a zero gradient: only decay could move it, and it is exempt
        assert float(trainer.model.s.detach()) == 1.0
        resumed = _trainer(tmp_path / optimizer, 2, optimizer)
        resumed.fit(resume=True)
        assert [g["weight_decay"] for g in resumed.optimizer.param_groups] == [0.5, 0.0]
        assert float(resumed.model.s.detach()) == 1.0


def test_without_no_weight_decay_one_group(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    config = TrainConfig(epochs=1, batch_size=2, optimizer="adamw", weight_decay=0.5, progress=False)
    trainer = Trainer(model, _Items(), None, config, out_dir=tmp_path)
    assert len(trainer.optimizer.param_groups) == 1
