"""Batch norm with fixed statistics and affine terms, for detection backbones.

Detection trains with one or two images per GPU, far too few for batch statistics, so the
ImageNet statistics are frozen (see maskrcnn-benchmark #267). ``FrozenBatchNorm2d`` keeps the
four tensors as *buffers* under the names ``torch.nn.BatchNorm2d`` and
``torchvision.ops.FrozenBatchNorm2d`` use, so either's state dict loads into it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, nothing trained.

    Args:
        num_features: channels ``C`` of the ``[B, C, H, W]`` input.
        eps: added to the variance (1e-5, as ``nn.BatchNorm2d`` and torchvision).
    """

    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A trained nn.BatchNorm2d also stores a step counter; it means nothing once frozen.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """The equivalent per-channel affine: ``scale, shift``, each ``[C]``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return scale, shift

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, C, H, W]`` -> same shape."""
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"FrozenBatchNorm2d({self.num_features}) expects [B, {self.num_features}, H, W], "
                f"got {tuple(x.shape)}"
            )
        scale, shift = self.scale_shift()
        # (C,) -> (1, C, 1, 1); one fused multiply-add instead of four broadcast ops.
        return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _frozen_copy(bn: nn.BatchNorm2d | nn.SyncBatchNorm) -> FrozenBatchNorm2d:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot freeze {bn}: it has no running statistics (track_running_stats=False)")
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen.to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` (and ``SyncBatchNorm``) in ``module`` by a ``FrozenBatchNorm2d``.

    Statistics, affine terms and ``eps`` are copied. Children are replaced in place; the return
    value is ``module`` itself, or a new ``FrozenBatchNorm2d`` when ``module`` is a batch norm.
    """
    if isinstance(module, nn.BatchNorm2d | nn.SyncBatchNorm):
        return _frozen_copy(module)
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
