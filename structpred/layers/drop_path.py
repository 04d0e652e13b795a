"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"), a.k.a. drop path.

In training, a residual branch's output is zeroed with probability ``p`` and otherwise scaled by
``1 / (1 - p)`` so that its expectation is unchanged; in eval it is the identity. ``mode="row"``
draws one coin per sample (each image of the batch keeps or drops the branch on its own: what
ViT and Swin use, timm's ``DropPath``); ``mode="batch"`` draws one coin for the whole batch.
Same semantics as ``torchvision.ops.stochastic_depth`` (tested against it with the same seed).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["StochasticDepth", "stochastic_depth"]

_MODES = ("row", "batch")


def _check(p: float, mode: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be 'row' or 'batch', got {mode!r}")


def stochastic_depth(x: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """``x`` ``[B, ...]`` with whole rows (``"row"``) or the whole batch (``"batch"``) zeroed with
    probability ``p``, the rest scaled by ``1 / (1 - p)``; ``x`` itself when not training or ``p == 0``."""
    _check(p, mode)
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    shape = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()  # broadcast over the rest
    noise = x.new_empty(shape).bernoulli_(keep)
    if keep > 0.0:
        noise.div_(keep)
    return x * noise


class StochasticDepth(nn.Module):
    """Module form of :func:`stochastic_depth` (no parameters; follows ``self.training``)."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        _check(p, mode)
        self.p, self.mode = float(p), mode

    def forward(self, x: Tensor) -> Tensor:
        return stochastic_depth(x, self.p, self.mode, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"
