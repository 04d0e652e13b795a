"""Data parallel training equals one process with the same global batch.

The pieces in this process (sharding, synchronised batch norm on a one-process gloo group, the
gradient of a mean loss over halves), then one real ``torchrun`` run as two *nodes* (two agents,
c10d rendezvous on localhost: global ranks 0 and 1, local rank 0 on both) of a batch-norm model
against the same training in this process. Run as a script, this file is that worker:
``torchrun ... tests/engine/test_ddp.py OUT BATCH``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Subset

from structpred.data.digits import Digits
from structpred.engine import TrainConfig, Trainer, distributed
from structpred.engine import checkpoint as ckpt
from structpred.engine.trainer import seed_everything
from structpred.layers.frozen_bn import FrozenBatchNorm2d
from structpred.models.classifier import ClassifierConfig, SmallClassifier

ITEMS, GLOBAL_BATCH, EPOCHS = 48, 16, 2


def _bn_classifier() -> SmallClassifier:
    """The digits classifier with trainable batch norm and no dropout (deterministic)."""
    seed_everything(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    return SmallClassifier(ClassifierConfig(10, width=4, input_size=16, dropout=0.0), features=features)


def _fit(out: Path, batch: int) -> Trainer:
    """Train the batch-norm classifier on 48 real digits (per-process ``batch``)."""
    model = _bn_classifier()
    cfg = TrainConfig(epochs=EPOCHS, batch_size=batch, lr=0.2, progress=False, seed=5, weight_decay=0.0)
    trainer = Trainer(model, Subset(Digits("train", size=16), range(ITEMS)), None, cfg, out)
    trainer.fit()
    return trainer


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_checkpoint(run)
    return ckpt.model_state(tensors)


# ------------------------------------------------------------------------------- sharding
@pytest.mark.parametrize(
    ("n", "world", "batch"), [(48, 2, 8), (50, 2, 8), (37, 3, 4), (9, 4, 2), (16, 1, 16)]
)
def test_the_ranks_batches_together_are_one_process_batch(n: int, world: int, batch: int) -> None:
    one = distributed.global_batches(n, world * batch, 1, 0, seed=7, epoch=2)
    ranks = [distributed.global_batches(n, batch, world, r, seed=7, epoch=2) for r in range(world)]
    assert len(one) == n // (world * batch) and all(len(b) == len(one) for b in ranks)
    for k, step in enumerate(one):
        assert [i for r in ranks for i in r[k]] == step  # rank r holds items r*b .. (r+1)*b - 1
    used = [i for step in one for i in step]
    assert len(set(used)) == len(used)  # never an item twice (no padding with repeats)


def test_one_process_order_is_distributed_samplers() -> None:
    # Unchanged for one process: runs (and their resume points) from before keep their order.
    sampler: DistributedSampler = DistributedSampler(range(37), 1, 0, shuffle=True, seed=4)  # type: ignore[arg-type]
    sampler.set_epoch(3)
    order = list(sampler)
    assert distributed.global_batches(37, 5, 1, 0, seed=4, epoch=3) == [
        order[i : i + 5] for i in range(0, 35, 5)
    ]
    with pytest.raises(ValueError, match="rank 2"):
        distributed.global_batches(37, 5, 2, 2, seed=4, epoch=3)


def test_checkpoints_and_logs_follow_the_global_rank(tmp_path: Path) -> None:
    assert distributed.Context(rank=0, world_size=2, local_rank=1).is_main
    assert not distributed.Context(rank=1, world_size=2, local_rank=0).is_main  # node 2's local 0
    items = [(torch.rand(3, 16, 16), {"labels": torch.tensor(k % 10)}) for k in range(16)]
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False)
    trainer = Trainer(_bn_classifier(), items, None, cfg, tmp_path)  # type: ignore[arg-type]
    trainer.ctx = distributed.Context(rank=1, world_size=1, local_rank=0)
    trainer._save(0, 1)
    assert ckpt.list_checkpoints(tmp_path) == []


def test_a_steps_draws_are_a_function_of_seed_step_and_rank() -> None:
    # Under torchrun the trainer seeds each step so: a resumed run draws what the uninterrupted
    # one drew on every rank (the checkpoint holds rank 0's RNG state only).
    draws: dict[tuple[int, int, int], list[torch.Tensor]] = {}
    for key in ((3, 5, 0), (3, 5, 1), (3, 6, 0), (4, 5, 0), (3, 5, 0)):
        distributed.seed_step(*key)
        torch.rand(10)  # the stream then continues as usual
        draws.setdefault(key, []).append(torch.rand(3))
    assert torch.equal(*draws[(3, 5, 0)])
    firsts = [v[0] for v in draws.values()]
    assert all(not torch.equal(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1 :])


# ------------------------------------------------------------------------------- batch norm
def test_synced_batch_norm_swaps_in_place_and_back() -> None:
    inner = nn.Sequential(nn.BatchNorm1d(3), FrozenBatchNorm2d(2))
    model = nn.Sequential(nn.BatchNorm2d(4), inner)
    params = [id(p) for p in model.parameters()] + [id(b) for b in model.buffers()]
    assert distributed.sync_batchnorm(model) == 2
    assert isinstance(model[0], distributed.SyncedBatchNorm2d) and isinstance(model[0], nn.BatchNorm2d)
    assert isinstance(inner[0], distributed.SyncedBatchNorm1d)
    assert isinstance(inner[1], FrozenBatchNorm2d)  # no batch statistics: left alone
    assert [id(p) for p in model.parameters()] + [id(b) for b in model.buffers()] == params
    assert distributed.local_batchnorm(model) == 2
    assert type(model[0]) is nn.BatchNorm2d and type(inner[0]) is nn.BatchNorm1d


def test_synced_batch_norm_equals_batch_norm_on_a_one_process_group(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(5, momentum=0.3)
    nn.init.uniform_(ref.weight)
    nn.init.uniform_(ref.bias)
    ours = distributed.SyncedBatchNorm2d(5, momentum=0.3)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 4, 6) * 3 + 1
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        outs = [m(xi) for m, xi in ((ref, xs[0]), (ours, xs[1]))]  # ours: the all-reduce path
        for o in outs:
            (o * torch.linspace(-1, 2, o.numel()).view_as(o)).sum().backward()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, atol=1e-5, rtol=1e-5)
    for a, b in ((ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------- gradients
def _grads(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    _, losses = model(images, [{"labels": y} for y in labels], predict=False)
    sum(losses.values()).backward()
    return [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]


def test_mean_loss_over_halves_averaged_is_the_whole_batch_gradient() -> None:
    # DDP averages the processes' gradients (sum / world size); with a loss that is a mean over
    # the batch's images the average of the halves' gradients is the whole batch's. Batch norm
    # in training mode breaks it unless its statistics are the whole batch's.
    digits = Digits("train", size=16)
    images = torch.stack([digits[i][0] for i in range(8)])  # (8, 3, 16, 16)
    labels = torch.tensor([int(digits[i][1]["labels"]) for i in range(8)])
    plain = SmallClassifier(ClassifierConfig(10, width=4, input_size=16, dropout=0.0))
    for model, equal in ((plain, True), (_bn_classifier(), False)):
        whole = _grads(model, images, labels)
        halves = [_grads(model, images[s], labels[s]) for s in (slice(0, 4), slice(4, 8))]
        gap = max(float((w - (a + b) / 2).abs().max()) for w, a, b in zip(whole, *halves, strict=True))
        assert (gap < 1e-6) == equal, gap


# ------------------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_two_nodes_equal_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    from tests.engine._torchrun import launch_two_nodes, wait_all

    two = tmp_path / "two"
    agents = launch_two_nodes(__file__, [str(two), str(GLOBAL_BATCH // 2)], "t")
    one = _fit(tmp_path / "one", GLOBAL_BATCH)  # meanwhile, here
    wait_all(agents)
    ranks = sorted(json.loads(p.read_text())["ranks"] for p in tmp_path.glob("rank-*.json"))
    assert ranks == [[0, 0, 2], [1, 0, 2]]  # global rank, local rank, world size
    for epoch in range(EPOCHS):  # rank r's batch k is block r of one process's batch k
        shards = [json.loads((tmp_path / f"rank-{r}.json").read_text())["batches"][epoch] for r in (0, 1)]
        assert [a + b for a, b in zip(*shards, strict=True)] == one._epoch_batches(epoch)
    assert [p.name for p in ckpt.list_checkpoints(two)] == [
        p.name for p in ckpt.list_checkpoints(tmp_path / "one")
    ]
    assert len((two / "log.csv").read_text().splitlines()) == len(
        (tmp_path / "one" / "log.csv").read_text().splitlines()
    )
    w1, w2 = _weights(tmp_path / "one"), _weights(two)
    assert w1.keys() == w2.keys() and any("running_var" in k for k in w1)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=0, msg=name)


if __name__ == "__main__":  # a torchrun worker of the test above (and of experiments/ddp_equality.py)
    out_dir, per_process = Path(sys.argv[1]), int(sys.argv[2])
    if sys.argv[3:] == ["local-bn"]:  # per-process batch statistics: what synchronising fixes
        distributed.sync_batchnorm = distributed.local_batchnorm = lambda module: 0
    trainer = _fit(out_dir, per_process)
    c = trainer.ctx
    record = {
        "ranks": [c.rank, c.local_rank, c.world_size],
        "batches": [trainer._epoch_batches(e) for e in range(EPOCHS)],
    }
    (out_dir.parent / f"rank-{c.rank}.json").write_text(json.dumps(record))
    distributed.shutdown()
