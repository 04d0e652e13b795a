"""The weight EMA under data parallel: a real ``torchrun`` of two nodes (one process each) of a
batch-norm model with ``ema`` on holds, on both ranks, the same average as one process with the
same global batch. Run as a script, this file is that worker:
``torchrun ... tests/engine/test_ema_ddp.py OUT BATCH``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from structpred.data.digits import Digits
from structpred.engine import TrainConfig, Trainer, distributed
from structpred.engine import checkpoint as ckpt
from structpred.engine.ema import ema_state
from structpred.engine.trainer import seed_everything
from structpred.models.classifier import ClassifierConfig, SmallClassifier

pytestmark = pytest.mark.slow

ITEMS, GLOBAL_BATCH = 48, 16


def _fit(out: Path, batch: int) -> Trainer:
    """Two epochs of a batch-norm digits classifier (no dropout) with an EMA (decay 0.8, tau 2)."""
    seed_everything(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    model = SmallClassifier(ClassifierConfig(10, width=4, input_size=16, dropout=0.0), features=features)
    cfg = TrainConfig(
        epochs=2, batch_size=batch, lr=0.2, progress=False, seed=5, weight_decay=0.0, ema="0.8,tau=2"
    )
    trainer = Trainer(model, Subset(Digits("train", size=16), range(ITEMS)), None, cfg, out)
    trainer.fit()
    return trainer


def test_two_nodes_hold_the_one_process_average(tmp_path: Path) -> None:
    from tests.engine._torchrun import launch_two_nodes, wait_all

    two = tmp_path / "two"
    agents = launch_two_nodes(__file__, [str(two), str(GLOBAL_BATCH // 2)], "ema")
    one = _fit(tmp_path / "one", GLOBAL_BATCH)  # meanwhile, here
    wait_all(agents)
    assert one.ema is not None
    expected = {k: v.detach() for k, v in one.ema.module.state_dict().items()}
    ranks = [torch.load(tmp_path / f"ema-rank-{r}.pt", weights_only=True) for r in (0, 1)]
    assert any("running_var" in k for k in expected)
    for name, value in expected.items():  # every rank holds the average one process holds
        for held in ranks:
            torch.testing.assert_close(held[name], value, atol=1e-5, rtol=0, msg=name)
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # the ranks: bit-equal
    tensors, meta = ckpt.load_checkpoint(two)
    assert meta["ema"]["updates"] == one.ema.updates == 2 * ITEMS // GLOBAL_BATCH
    saved = ema_state(tensors)
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)  # rank 0 saved its average


if __name__ == "__main__":  # a torchrun worker of the test above
    out_dir, per_process = Path(sys.argv[1]), int(sys.argv[2])
    trainer = _fit(out_dir, per_process)
    assert trainer.ema is not None
    state = {k: v.detach().clone() for k, v in trainer.ema.module.state_dict().items()}
    torch.save(state, out_dir.parent / f"ema-rank-{trainer.ctx.rank}.pt")
    distributed.shutdown()
