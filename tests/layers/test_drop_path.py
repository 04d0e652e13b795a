"""Stochastic depth: equal to torchvision.ops.stochastic_depth under the same seed, row and batch modes."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import stochastic_depth as tv_stochastic_depth

from structpred.layers.drop_path import StochasticDepth, stochastic_depth


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(1, 3), (8, 5, 4), (6, 2, 3, 3)])
def test_equals_torchvision(mode: str, p: float, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, requires_grad=True)
    torch.manual_seed(7)
    ours = stochastic_depth(x, p, mode, training=True)
    torch.manual_seed(7)
    theirs = tv_stochastic_depth(x, p, mode, training=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    g = torch.randn(shape)
    (ga,) = torch.autograd.grad(ours, x, g)
    (gb,) = torch.autograd.grad(theirs, x, g)
    torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_rows_are_dropped_whole_and_kept_rows_scaled() -> None:
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 2)
    y = stochastic_depth(x, 0.25, "row")
    per_row = y.flatten(1)
    assert bool(((per_row == 0).all(1) | (per_row == 1 / 0.75).all(1)).all())
    dropped = float((per_row[:, 0] == 0).float().mean())
    assert abs(dropped - 0.25) < 0.03  # 4,000 coins: within ~4.5 standard deviations
    assert abs(float(y.mean()) - 1.0) < 0.05  # expectation kept


def test_batch_mode_one_coin() -> None:
    torch.manual_seed(1)
    outcomes = {float(stochastic_depth(torch.ones(5, 2), 0.5, "batch").sum()) for _ in range(50)}
    assert outcomes == {0.0, 20.0}


def test_eval_and_zero_are_identity() -> None:
    x = torch.randn(3, 4)
    layer = StochasticDepth(0.9).eval()
    assert layer(x) is x
    assert stochastic_depth(x, 0.0, "row") is x
    assert "p=0.9" in repr(layer)


@pytest.mark.parametrize(
    ("p", "mode", "match"),
    [(-0.1, "row", "in \\[0, 1\\]"), (1.5, "row", "in \\[0, 1\\]"), (0.1, "col", "'row' or 'batch'")],
)
def test_bad_arguments(p: float, mode: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StochasticDepth(p, mode)
    with pytest.raises(ValueError, match=match):
        stochastic_depth(torch.ones(2, 2), p, mode)
