"""Pieces shared by the backbones: the norm-layer type, input checks, conv-norm-act, init."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

# A norm layer is built from the channel count alone: nn.BatchNorm2d, FrozenBatchNorm2d,
# functools.partial(nn.BatchNorm2d, eps=1e-3), lambda c: nn.GroupNorm(8, c), ...
NormLayer = Callable[[int], nn.Module]
# Activation modules are built as ``act_layer(inplace=True)``: nn.ReLU, nn.Hardswish.
ActLayer = Callable[..., nn.Module]


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


class ConvNormAct(nn.Sequential):
    """``Conv2d -> norm -> activation`` as children ``0``, ``1``, ``2`` (torchvision's naming).

    The conv has no bias when a norm follows (the norm's shift makes it redundant).
    "Same" padding for odd kernels: ``(k - 1) // 2 * dilation``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2 * dilation,
                dilation=dilation,
                groups=groups,
                bias=norm_layer is None,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


def init_conv_norm(module: nn.Module) -> None:
    """He init (fan-out) for convs, unit scale / zero shift for trainable norms."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
