"""FrozenBatchNorm2d against torchvision's and nn.BatchNorm2d in eval mode; freeze_batchnorm."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops.misc as tv_misc
from torch import nn

from structpred.layers.frozen_bn import FrozenBatchNorm2d, freeze_batchnorm


def _trained_bn(C: int, eps: float = 1e-5, seed: int = 0) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(C, eps=eps)
    with torch.no_grad():
        bn.weight.copy_(0.5 + torch.rand(C, generator=g))
        bn.bias.copy_(torch.randn(C, generator=g))
        bn.running_mean.copy_(torch.randn(C, generator=g))
        bn.running_var.copy_(0.1 + torch.rand(C, generator=g))
    bn.num_batches_tracked.fill_(123)
    return bn.eval()


def test_matches_torchvision_frozen_bn() -> None:
    theirs = tv_misc.FrozenBatchNorm2d(6, eps=1e-3)
    theirs.load_state_dict(_trained_bn(6).state_dict())
    ours = FrozenBatchNorm2d(6, eps=1e-3)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-5)
    assert list(ours.parameters()) == []


def test_loads_batchnorm_state_dict_strictly_and_matches_eval_mode() -> None:
    bn = _trained_bn(4)
    ours = FrozenBatchNorm2d(4)
    ours.load_state_dict(bn.state_dict())  # strict: num_batches_tracked is dropped
    x = torch.randn(3, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), bn(x), atol=1e-6, rtol=1e-5)


def test_gradcheck_float64() -> None:
    ours = FrozenBatchNorm2d(3).double()
    ours.load_state_dict(_trained_bn(3).double().state_dict())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))


def test_freeze_batchnorm_swaps_every_bn() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), _trained_bn(4, eps=1e-3, seed=1), nn.ReLU(), nn.Sequential(_trained_bn(4, seed=2))
    ).eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        expected = model(x)
    frozen = freeze_batchnorm(model)
    assert frozen is model
    assert isinstance(model[1], FrozenBatchNorm2d) and model[1].eps == 1e-3
    assert isinstance(model[3][0], FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    # Training mode changes nothing once frozen.
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_freeze_batchnorm_on_a_bn_returns_a_frozen_copy() -> None:
    bn = _trained_bn(5)
    frozen = freeze_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d)
    torch.testing.assert_close(frozen.running_var, bn.running_var)
    no_affine = nn.BatchNorm2d(5, affine=False)
    f2 = freeze_batchnorm(no_affine)
    assert isinstance(f2, FrozenBatchNorm2d)
    torch.testing.assert_close(f2.weight, torch.ones(5))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="running statistics"):
        freeze_batchnorm(nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match=r"expects \[B, 4, H, W\]"):
        FrozenBatchNorm2d(4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"expects \[B, 4, H, W\]"):
        FrozenBatchNorm2d(4)(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match="num_features"):
        FrozenBatchNorm2d(0)
