"""Backbone tests. ``randomize_norms_`` is shared with ``tests/layers``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)


def build_uninitialised(make: Callable[[], M]) -> M:
    """``make()`` on the meta device, then moved to uninitialised CPU memory.

    For models whose every tensor is about to be overwritten by ``load_state_dict``: skips the
    random init, most of a parity test's time. (It also checks the builder works on ``meta``.)
    """
    with torch.device("meta"):
        model = make()
    return model.to_empty(device="cpu")


# Norms that close a residual branch get small scales, so deep ResNets keep O(1) activations.
_BRANCH_END = ("bn3.weight", "bn2.weight", "downsample.1.weight")


def randomize_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm (trainable or frozen) non-trivial statistics and affine terms, in place.

    Fresh norms have mean 0, var 1, scale 1, shift 0, which would hide a wrong eps or a
    swapped buffer; this makes every term matter.
    """
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()  # tensors share storage with the model
    with torch.no_grad():
        for name, t in state.items():
            if not t.is_floating_point():
                continue
            if name.rsplit(".", 1)[0] + ".running_mean" not in state:
                continue
            if name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(_BRANCH_END):
                t.copy_(0.1 + 0.2 * torch.rand(t.shape, generator=g))
            elif name.endswith(".weight"):
                t.copy_(0.5 + 0.5 * torch.rand(t.shape, generator=g))
    return model


def assert_features_close(ours: dict[str, Tensor], theirs: dict[str, Tensor], atol: float = 1e-4) -> None:
    """Same keys in the same order, same shapes, values within ``atol`` (and not all ~0)."""
    assert list(ours) == list(theirs)
    for k in theirs:
        assert ours[k].shape == theirs[k].shape, k
        assert theirs[k].abs().max() > 1e-3, f"{k}: reference map is ~0, the comparison would be vacuous"
        torch.testing.assert_close(ours[k], theirs[k], atol=atol, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
