"""RAFT parity: ``from_torchvision(raft_small / raft_large)`` gives, through ``flow()``, the same list of
flow fields as torchvision's ``RAFT.forward`` within 1e-3 px in float32 (random weights, seeded;
frames in [-1, 1] on both sides), at several sizes and update counts, in eval and train mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from structpred.models import from_torchvision
from structpred.models.raft import RAFT

tvf = pytest.importorskip("torchvision.models.optical_flow")

TOL = 1e-3  # px, float32


def _frames(H: int, W: int, B: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(B, 3, H + 4, W + 4, generator=g)
    # frame1: frame0 moved by a couple of pixels plus noise, so the correlation has a peak to find
    a = base[:, :, 2 : 2 + H, 2 : 2 + W]
    b = base[:, :, 1 : 1 + H, 3 : 3 + W] + 0.05 * torch.rand(B, 3, H, W, generator=g)
    return 2 * a - 1, 2 * b.clamp(0, 1) - 1  # [-1, 1], as torchvision's OpticalFlow transform


_PAIRS: dict[str, tuple[Any, RAFT]] = {}


def _pair(name: str) -> tuple[Any, RAFT]:
    if name not in _PAIRS:
        torch.manual_seed(0)
        tv = getattr(tvf, name)(weights=None).eval()
        ours = from_torchvision(tv)
        assert isinstance(ours, RAFT) and not ours.training
        _PAIRS[name] = (tv, ours)
    return _PAIRS[name]


def _compare(theirs: list[torch.Tensor], ours: list[torch.Tensor]) -> float:
    assert len(theirs) == len(ours)
    worst = 0.0
    for t, o in zip(theirs, ours, strict=True):
        assert t.shape == o.shape
        assert torch.isfinite(o).all()
        worst = max(worst, float((t - o).abs().max()))
    return worst


@pytest.mark.parametrize("name", ["raft_small", "raft_large"])
@pytest.mark.parametrize("size", [(128, 128), (136, 200), (192, 128)])
def test_flow_equals_torchvision(name: str, size: tuple[int, int]) -> None:
    tv, ours = _pair(name)
    a, b = _frames(*size)
    for updates in (1, 3, 12):
        with torch.no_grad():
            theirs = tv(a, b, num_flow_updates=updates)
            mine = ours.flow(a, b, num_flow_updates=updates)
        assert len(mine) == updates
        assert _compare(theirs, mine) < TOL, (name, size, updates)
    assert float(theirs[-1].abs().max()) > 0.5  # the flow is not trivially zero on both sides


def test_batch_of_two_equals_torchvision() -> None:
    tv, ours = _pair("raft_small")
    a, b = _frames(128, 136, B=2, seed=1)
    with torch.no_grad():
        assert _compare(tv(a, b, num_flow_updates=4), ours.flow(a, b, num_flow_updates=4)) < TOL


def test_train_mode_flows_and_gradients_equal_torchvision() -> None:
    torch.manual_seed(1)
    tv = tvf.raft_large(weights=None).train()  # batch norm in the context encoder uses batch statistics
    ours = from_torchvision(tv)
    assert ours.training
    a, b = _frames(128, 128, B=2, seed=2)
    theirs, mine = tv(a, b, num_flow_updates=2), ours.flow(a, b, num_flow_updates=2)
    assert _compare([t.detach() for t in theirs], [m.detach() for m in mine]) < TOL
    sum(t.square().mean() for t in theirs).backward()  # type: ignore[union-attr]
    sum(m.square().mean() for m in mine).backward()  # type: ignore[union-attr]
    grads = dict(ours.named_parameters())
    for n, p in tv.named_parameters():
        torch.testing.assert_close(grads[n].grad, p.grad, atol=1e-3, rtol=1e-2, msg=n)


@pytest.mark.slow
def test_sintel_size_equals_torchvision() -> None:
    tv, ours = _pair("raft_small")
    a, b = _frames(368, 496)
    with torch.no_grad():
        assert _compare(tv(a, b, num_flow_updates=12), ours.flow(a, b, num_flow_updates=12)) < TOL


def test_torchvision_refuses_what_we_run() -> None:
    # What the pad / unpad rule buys: torchvision raises on these sizes; ours answers, finite.
    tv, ours = _pair("raft_small")
    for size in ((64, 64), (130, 128)):
        a, b = _frames(*size)
        with pytest.raises(ValueError):
            tv(a, b, num_flow_updates=1)
        with torch.no_grad():
            out = ours.flow(a, b, num_flow_updates=2)
        assert out[-1].shape == (1, 2, *size) and torch.isfinite(out[-1]).all()
