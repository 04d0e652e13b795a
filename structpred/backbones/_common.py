"""Pieces shared by the backbones: input checks, trainable-layer checks, output stride -> dilation."""

from __future__ import annotations

from torch import Tensor


def check_images(x: Tensor, in_channels: int, where: str) -> None:
    """Raise a ``ValueError`` unless ``x`` is a floating ``[B, in_channels, H, W]`` batch."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{where}: expected a Tensor [B, {in_channels}, H, W], got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{where}: expected a Tensor [B, {in_channels}, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{where}: expected a floating point tensor, got {x.dtype}")


def check_trainable_layers(trainable_layers: int, max_value: int, where: str) -> None:
    """Raise unless ``0 <= trainable_layers <= max_value``."""
    if not 0 <= trainable_layers <= max_value:
        raise ValueError(f"{where}: trainable_layers must be in [0, {max_value}], got {trainable_layers}")


def dilation_for(output_stride: int, where: str) -> tuple[bool, bool, bool]:
    """``replace_stride_with_dilation`` of the last three stages for an output stride of 32, 16 or 8."""
    table = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
    if output_stride not in table:
        raise ValueError(f"{where}: output_stride must be 32, 16 or 8, got {output_stride!r}")
    return table[output_stride]
